"""The counter schema: the fields the Lua transitions ``HINCRBY`` in the metrics hash.

Written by the engine (the scripts in ``scripts`` and a few Python-side counts) and read by
the Prometheus collector (``plankton.operations.metrics``, which explains why metrics are
counted in Redis). This module is the contract between the two and imports neither
prometheus-client nor the authoring layer, so the Lua can be built without them.

A field is ``name<US>label<US>label...`` (US = ASCII unit separator, which no DAG or family
name holds). A histogram is one field per bucket (not cumulative: one ``HINCRBY`` per
observation) plus a ``_sum`` field; the collector adds the buckets up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plankton import keys

#: Separator of the parts of a metrics-hash field (also spelled in the Lua helpers).
SEP = "\x1f"

#: Histogram bucket upper bounds (s). The last bucket, +Inf, is implicit.
TASK_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
RUN_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True)
class Family:
    """One metric kept in the metrics hash: its field name there and its exposition."""

    field: str
    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


#: Counters, by field name in the hash. prometheus_client appends ``_total``.
COUNTERS: dict[str, Family] = {
    f.field: f
    for f in (
        Family(
            "runs_started",
            "plankton_runs_started",
            "Runs that started (first task claimed).",
            ("dag",),
        ),
        Family(
            "runs_ended",
            "plankton_runs_ended",
            "Runs that ended, by final status.",
            ("dag", "status"),
        ),
        Family(
            "tasks_ended",
            "plankton_tasks_ended",
            "Tasks that reached a final state (succeeded, failed, cancelled, skipped).",
            ("family", "state"),
        ),
        Family(
            "task_retries",
            "plankton_task_retries",
            "Attempts that will be retried, by reason (error, timeout, lost, handback).",
            ("family", "reason"),
        ),
        Family(
            "lost_leases",
            "plankton_lost_leases",
            "Attempts declared lost because their worker stopped renewing the lease.",
            ("family",),
        ),
        Family(
            "fenced_writes",
            "plankton_fenced_writes",
            "Writes refused because they came from a superseded attempt or an ended run, by "
            "operation (emit, finish, fail, read); lease renewals are not counted.",
            ("op",),
        ),
        Family(
            "webhooks",
            "plankton_webhook_deliveries",
            "Webhook delivery attempts, by outcome (sent, failed, gave_up).",
            ("outcome",),
        ),
    )
}

#: Histograms, by field name in the hash (fields ``<field>_b`` per bucket, ``<field>_sum``).
HISTOGRAMS: dict[str, Family] = {
    f.field: f
    for f in (
        Family(
            "task_seconds",
            "plankton_task_duration_seconds",
            "Duration of task attempts that ended (started to ended), by final state.",
            ("family", "state"),
            TASK_BUCKETS,
        ),
        Family(
            "run_seconds",
            "plankton_run_duration_seconds",
            "Duration of runs (started, or submitted if never started, to ended), by status.",
            ("dag", "status"),
            RUN_BUCKETS,
        ),
    )
}


def lua_buckets(bounds: Sequence[float]) -> str:
    """A Lua table literal of bucket bounds, for the counting helpers in the scripts."""
    return "{" + ", ".join(repr(float(b)) for b in bounds) + "}"


def field(name: str, *labels: Any) -> str:
    """A metrics-hash field, as the Lua helpers build it (used by Python-side counters)."""
    return SEP.join([name, *(str(v) for v in labels)])


def count(conn: Any, name: str, *labels: Any, n: int = 1) -> None:
    """Count an event from Python (``conn`` may be a pipeline): the same hash as the Lua."""
    conn.hincrby(keys.METRICS, field(name, *labels), n)
