"""Entry point of ``plankton scheduler``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from plankton import settings as settings_mod
from plankton.authoring.registry import Registry
from plankton.errors import PlanktonError
from plankton.operations import logsetup
from plankton.operations.alerts import Outbox, Sender
from plankton.operations.stopping import StopDeadline
from scheduler.cron import CronFirer
from scheduler.loop import Scheduler

log = logging.getLogger("plankton.scheduler")


def main(
    url: str | None, imports: tuple[str, ...], name: str | None = None, log_level: str = "INFO"
) -> int:
    try:
        logsetup.configure("scheduler", log_level)
        settings = settings_mod.load(url=url, imports=imports)
        registry = Registry(settings.imports)
    except PlanktonError as exc:
        print(f"plankton scheduler: {exc}", file=sys.stderr)
        return 2
    sched = Scheduler(settings, registry, name or f"{socket.gethostname()}-{os.getpid()}")
    sched.cron = CronFirer(sched)

    sched.outbox = Outbox(sched.conn, settings, registry)
    sender = Sender(sched.outbox, lambda: sched.epoch).start()

    # A stop ends the loop at its next turn (at most one tick); the deadline bounds the
    # rest (a tick stuck on an unreachable Redis, the webhook sender's POST).
    deadline = StopDeadline(settings.stop_grace, f"scheduler {sched.name}")

    def stop(signum: int, frame: object) -> None:
        sched.stop_requested = True
        deadline.arm()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "scheduler %s started (imports: %s)", sched.name, ", ".join(registry.modules) or "none"
    )
    sched.run_forever()
    sender.stop()
    log.info("scheduler %s stopped", sched.name)
    return 0
