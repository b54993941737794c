"""Entry point of one worker process (started and watched by ``workers.supervisor``)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

import redis

from plankton import keys
from plankton import settings as settings_mod
from plankton.authoring.registry import Registry
from plankton.engine import liveness
from plankton.engine.connection import client_name, connect, redact
from plankton.engine.transport import rq_queue
from plankton.errors import PlanktonError
from plankton.operations import logsetup
from plankton.operations.stopping import StopDeadline
from workers.executor import EXIT_RESTART, Executor
from workers.worker import PlanktonWorker

log = logging.getLogger("plankton.worker")


def wait_for_redis(conn: redis.Redis, url: str, stop_after: float | None = None) -> None:
    """Block until Redis answers, with backoff; workers outlive Redis restarts."""
    delay, started = 0.1, time.monotonic()
    while True:
        try:
            conn.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if stop_after is not None and time.monotonic() - started > stop_after:
                raise
            log.warning("waiting for Redis at %s: %s", redact(url), exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plankton-worker-process")
    parser.add_argument("--url")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("--queues", default="default")
    parser.add_argument("--name")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        logsetup.configure("worker", args.log_level)
        logging.getLogger("rq.worker").setLevel(logging.WARNING)
        settings = settings_mod.load(
            url=args.url, imports=tuple(args.imports), concurrency=args.concurrency
        )
        registry = Registry(settings.imports)
    except PlanktonError as exc:
        print(f"plankton worker: {exc}", file=sys.stderr)
        return 2
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    conn = connect(settings.url, blocking=True, client_name=client_name(name))
    wait_for_redis(conn, settings.url)
    queues = [rq_queue(q.strip(), conn) for q in args.queues.split(",") if q.strip()]
    previous_beat = conn.zscore(keys.WORKERS, name)  # before our own monitor beats
    executor = Executor(settings, registry, name)
    executor.queues = [q.name for q in queues]
    worker = PlanktonWorker(queues, connection=conn, name=name, serializer=queues[0].serializer)
    worker.previous_beat_ms = previous_beat
    worker.stale_after_ms = max(liveness.stale_after_ms(settings.heartbeat), settings.lease_ms)
    worker.executor = executor
    worker.log_result_lifespan = False
    log.info(
        "worker %s serving %s from %s (imports: %s)",
        name,
        args.queues,
        redact(settings.url),
        ", ".join(registry.modules) or "none",
    )
    # The bound on a stop: running tasks get stop_grace to finish (Executor.shutdown), and
    # two seconds later the deadline ends the process whatever still blocks it.
    deadline = StopDeadline(
        settings.stop_grace + 2.0,
        f"worker {name}",
        lambda: executor.hand_back_all("worker stop deadline"),
    )
    worker.stop_deadline = deadline
    stopped = False
    try:
        worker.work(burst=args.burst, logging_level="WARNING")
        stopped = worker._stop_requested or args.burst
    finally:
        if not (stopped or worker._stop_requested):
            deadline.code = EXIT_RESTART
        deadline.arm()
        left = deadline.remaining()
        executor.shutdown(wait=max(0.0, (left or 0.0) - 2.0))
    log.info("worker %s stopped", name)
    return 0 if stopped or args.burst else EXIT_RESTART


if __name__ == "__main__":
    sys.exit(main())
