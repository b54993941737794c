"""Alerts on run end: webhooks (and callables) told once per run end, from a durable outbox.

Why an outbox in Redis: a run ends inside a worker's Lua transition, but the worker must not
make HTTP calls (it would slow the task path and any worker could be the one), and a
scheduler that sends straight away loses the alert if it dies before the receiver answers.
So the leading scheduler, when it settles an ended run, records the deliveries to make in
one fenced script: a per-run ``alerted`` marker set with ``HSETNX`` (a second settle, or a
second scheduler, adds nothing) and one entry per destination in ``keys.OUTBOX``, a zset
scored by the time of the next try. A sender thread of the leader then claims due entries
(fenced by its epoch, so a deposed leader claims nothing), POSTs them, and records the
outcome; a receiver that fails gets the entry back with exponential backoff. Everything
lives in Redis, so a standby or restarted scheduler carries on where the last one stopped.

Exactly once, and the one window left: a leader that dies after the receiver accepted a POST
but before it recorded "sent" (a few ms) leaves the claim to expire, and the next leader
sends again. Each POST therefore carries ``X-Plankton-Delivery`` (the same for every try of
one run end and destination), which a receiver can use to drop that rare repeat.

Destinations: the DAG's ``on_failure`` / ``on_success`` (URLs or callables; callables run in
the scheduler, with the payload dict) and ``PLANKTON_WEBHOOK_URL`` for every failed run.
With ``PLANKTON_WEBHOOK_SECRET`` each POST is signed: ``X-Plankton-Signature:
sha256=<hex HMAC-SHA256(secret, body)>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import redis

from plankton import codec, keys, states
from plankton.authoring.dag import Dag
from plankton.authoring.registry import Registry
from plankton.engine import counters, scripts
from plankton.engine.connection import redact
from plankton.errors import Fenced
from plankton.operations import logsetup
from plankton.operations.leader import fenced_call
from plankton.settings import Settings
from plankton.views import reading
from plankton.views import redact as redaction

log = logging.getLogger("plankton.alerts")

#: Deliveries claimed per pass of the sender.
CLAIM_BATCH = 20
#: Failed tasks listed in one payload (the count says how many there were in all).
MAX_FAILED_TASKS = 20
#: Longest error text per failed task in a payload (characters).
MAX_ERROR_CHARS = 2000
#: Longest wait between two tries of one delivery (s).
BACKOFF_CAP = 300.0


class DeliveryFailed(Exception):
    """A receiver refused or could not be reached; the message says how."""


def identity(dest: str | Callable[..., Any]) -> str:
    """How a destination is named in Redis: its URL, or ``call:module.qualname``."""
    if isinstance(dest, str):
        return dest
    return f"call:{getattr(dest, '__module__', '?')}.{getattr(dest, '__qualname__', repr(dest))}"


def destinations(dag: Dag | None, status: str, settings: Settings) -> list[str]:
    """Destination identities told about a run of ``dag`` that ended ``status``."""
    out: list[str] = []
    if dag is not None:
        hooks = (
            dag.on_failure
            if status == "failed"
            else dag.on_success
            if status == "succeeded"
            else ()
        )
        out += [identity(h) for h in hooks]
    if status == "failed" and settings.webhook_url:
        out.append(settings.webhook_url)
    return list(dict.fromkeys(out))


def sign(secret: str, body: bytes) -> str:
    """The ``X-Plankton-Signature`` value of ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: True iff ``header`` is the signature of ``body``."""
    return hmac.compare_digest(sign(secret, body), header or "")


def delivery_id(run_id: str, dest: str) -> str:
    """Stable id of one run end's delivery to one destination (same on every try)."""
    return hashlib.sha256(f"{run_id}\n{dest}".encode()).hexdigest()[:32]


def payload(conn: redis.Redis, run_id: str, console_url: str = "") -> dict[str, Any] | None:
    """The JSON body told about a run's end; None if the run's records are gone."""
    run = reading.read_run(conn, run_id)
    if run is None:
        return None
    failed: list[dict[str, Any]] = []
    total = 0
    if run["status"] == "failed":
        pipe = conn.pipeline(transaction=False)
        for tid in reading.iter_task_ids(run["n_tasks"]):
            pipe.hmget(
                keys.task(run_id, tid), "state", "name", "family", "error", "attempts", "upstream"
            )
        for tid, (state, name, family, error, attempts, upstream) in zip(
            reading.iter_task_ids(run["n_tasks"]), pipe.execute()
        ):
            if state != b"failed" or upstream:
                continue  # (upstream: an ancestor of the task that failed; the cause is listed)
            text = codec.text(error)
            total += 1
            if len(failed) < MAX_FAILED_TASKS:
                failed.append(
                    {
                        "id": tid,
                        "name": codec.text(name),
                        "family": codec.text(family),
                        "attempts": int(codec.text(attempts) or 0),
                        "error": redaction.value(text[:MAX_ERROR_CHARS]),
                    }
                )
    base = console_url.rstrip("/")
    return {
        "event": f"run.{run['status']}",
        "run_id": run_id,
        "dag": run["dag"],
        "status": run["status"],
        "since": run["since"],
        "to": run["to"],
        "params": redaction.value(run["params"]),
        "submitted_at": run["submitted_at"],
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "error": redaction.value(run["error"]) if run["error"] else None,
        "failed_tasks": failed,
        "failed_tasks_total": total,
        "url": f"{base}/runs/{run_id}" if base else f"/runs/{run_id}",
    }


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body``; the status code if 2xx, else DeliveryFailed naming what happened."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{redact(url)} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryFailed(f"{redact(url)}: {exc}") from None


class Outbox:
    """The scheduler's side: record deliveries when a run is settled, and send them."""

    def __init__(self, conn: redis.Redis, settings: Settings, registry: Registry) -> None:
        self.conn, self.settings, self.registry = conn, settings, registry
        self._record = conn.register_script(scripts.OUTBOX_RECORD)

    # -- record ---------------------------------------------------------------------------
    def enqueue(self, run_id: str, epoch: int) -> int:
        """Record the deliveries of an ended run (once; fenced by ``epoch``); how many."""
        dag_name, status, marked = (
            codec.text(v) if v is not None else ""
            for v in self.conn.hmget(keys.run(run_id), "dag", "status", "alerted")
        )
        if marked or status not in states.RUN_ENDED:
            return 0
        dests = destinations(self.registry.dags.get(dag_name), status, self.settings)
        members = [json.dumps([run_id, d]) for d in dests]
        if not members:
            return 0
        done = fenced_call(
            self.conn,
            epoch,
            scripts.OUTBOX_ENQUEUE,
            [keys.run(run_id), keys.alerts(run_id), keys.OUTBOX],
            [int(time.time() * 1000), *members],
        )
        return len(members) if done else 0

    # -- send -----------------------------------------------------------------------------
    def drain(self, epoch: int) -> int:
        """Claim due deliveries (fenced) and make them; returns how many were tried."""
        claim_ms = int((self.settings.webhook_timeout + 2) * 1000)
        try:
            due = fenced_call(
                self.conn, epoch, scripts.OUTBOX_CLAIM, [keys.OUTBOX], [claim_ms, CLAIM_BATCH]
            )
        except Fenced:
            return 0
        for member in due:
            self._deliver(codec.text(member))
        return len(due)

    def _deliver(self, member: str) -> None:
        run_id, dest = json.loads(member)
        with logsetup.task_context(run_id=run_id):
            self._deliver_run(member, run_id, dest)

    def _deliver_run(self, member: str, run_id: str, dest: str) -> None:
        tries = self.conn.hincrby(keys.alerts(run_id), f"tries:{dest}", 1)
        body = payload(self.conn, run_id, self.settings.console_url)
        if body is None:  # records expired: nothing left to tell
            self._record(keys=[keys.OUTBOX, keys.alerts(run_id)], args=[member, "gone", ""])
            return
        try:
            self._send(dest, body, run_id)
        except Exception as exc:
            if tries >= self.settings.webhook_attempts:
                log.error(
                    "webhook for run %s to %s given up after %d tries: %s",
                    run_id,
                    redact(dest),
                    tries,
                    exc,
                )
                self._record(
                    keys=[keys.OUTBOX, keys.alerts(run_id)],
                    args=[member, f"gave up: {exc}"[:500], ""],
                )
                counters.count(self.conn, "webhooks", "gave_up")
                return
            delay = min(BACKOFF_CAP, self.settings.webhook_backoff * 2 ** (tries - 1))
            log.warning(
                "webhook for run %s to %s failed (try %d, next in %.1fs): %s",
                run_id,
                redact(dest),
                tries,
                delay,
                exc,
            )
            self._record(
                keys=[keys.OUTBOX, keys.alerts(run_id)],
                args=[member, f"retrying: {exc}"[:500], int(delay * 1000)],
            )
            counters.count(self.conn, "webhooks", "failed")
            return
        self._record(keys=[keys.OUTBOX, keys.alerts(run_id)], args=[member, "sent", ""])
        counters.count(self.conn, "webhooks", "sent")
        log.info("webhook for run %s sent to %s", run_id, redact(dest))

    def _send(self, dest: str, body: dict[str, Any], run_id: str) -> None:
        if dest.startswith("call:"):
            self._callable(dest, body["dag"])(body)
            return
        data = json.dumps(body, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "plankton-webhook",
            "X-Plankton-Event": body["event"],
            "X-Plankton-Delivery": delivery_id(run_id, dest),
        }
        if self.settings.webhook_secret:
            headers["X-Plankton-Signature"] = sign(self.settings.webhook_secret, data)
        post(dest, data, headers, self.settings.webhook_timeout)

    def _callable(self, dest: str, dag_name: str) -> Callable[..., Any]:
        dag = self.registry.dags.get(dag_name)
        for hook in (dag.on_failure + dag.on_success) if dag else ():
            if callable(hook) and identity(hook) == dest:
                return hook
        raise DeliveryFailed(
            f"{dest} is not an on_failure/on_success callable of DAG "
            f"{dag_name} in this scheduler's imports"
        )


class Sender:
    """A thread of the scheduler that drains the outbox while the scheduler leads (a slow
    receiver never delays the scheduler's ticks)."""

    def __init__(
        self, outbox: Outbox, epoch: Callable[[], int | None], interval: float = 0.2
    ) -> None:
        self.outbox, self.epoch, self.interval = outbox, epoch, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> "Sender":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            epoch = self.epoch()
            busy = 0
            if epoch is not None:
                try:
                    busy = self.outbox.drain(epoch)
                except redis.RedisError as exc:
                    log.warning("webhook sender: Redis unavailable (%s); retrying", exc)
                except Exception:
                    log.exception("webhook sender: unexpected error; carrying on")
            if not busy:
                self.stopped.wait(self.interval)
