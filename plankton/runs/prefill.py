"""Tasks written already finished when a run is created: they never run in it.

Two makers: resume from failure (``resume``: a task reused from an earlier run, ``succeeded``
with ``reused_from``, its values copied into its parent's channel) and ``complete()``
(``skip``: ``skipped``, or ``failed`` when ``complete()`` raised). ``writing.write_run`` writes
them with the run, in the transaction that makes the run visible, so no worker or reader
ever sees a half-made run:

- the task hash gets its final state and fields, and ``counted`` 1 (its start is counted);
- a parent that runs gets, per finished child, the child's value batches and then its end
  entry in its channel, tagged with the child's attempt 1: READ hands them to each attempt of
  the parent exactly once, in their order, as if the child had just run; the parent's
  ``n_started``, ``n_done`` and ``produced`` count them;
- a parent all of whose children are finished is ready at once (``first_tasks``);
- a finished root ends the run at once (``succeeded`` for a skipped root, ``failed`` when a
  ``complete()`` raised).

Memory: the copied batches are the msgpack bytes the child emitted; they live in the new
run's channel until the parent finishes (or the retention of an unsuccessful run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plankton import keys
from plankton.engine import counters
from plankton.states import RunStatus, TaskState

if TYPE_CHECKING:  # pragma: no cover
    from plankton.authoring.task import Task
    from plankton.runs.planning import Plan


@dataclass
class Finished:
    """One task of a new run that is written finished. ``batches``: (count, msgpack array)
    value batches its parent's channel gets, in order, before the child's end entry."""

    state: str
    fields: dict[str, Any] = field(default_factory=dict)
    batches: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def emitted(self) -> int:
        return sum(n for n, _ in self.batches)


def first_tasks(plan: "Plan", finished: dict[str, Finished]) -> list["Task"]:
    """The tasks to make ready when the run is written: those not finished whose children
    are all finished (every leaf, with nothing finished), higher priority first, then in
    depth-first post-order; none if the root is finished (the run ends at once)."""
    if not finished:
        out = [t for t in plan.tasks if not t.children]
    elif plan.tid(plan.tasks[-1]) in finished:
        return []
    else:
        out = [
            t
            for t in plan.tasks
            if plan.tid(t) not in finished and all(plan.tid(c) in finished for c in t.children)
        ]
    return sorted(out, key=lambda t: -(type(t).priority or 0))


def task_fields(plan: "Plan", task: "Task", finished: dict[str, Finished]) -> dict[str, Any]:
    """What a task's record gets on top of ``planning.task_record`` (nothing if no task is
    finished)."""
    if not finished:
        return {}
    done = finished.get(plan.tid(task))
    if done is not None:
        return {"state": done.state, "counted": "1", "emitted": done.emitted, **done.fields}
    kids = [finished[plan.tid(c)] for c in task.children if plan.tid(c) in finished]
    if not kids:
        return {}
    out: dict[str, Any] = {
        "n_started": len(kids),
        "produced": sum(k.emitted for k in kids),
        "n_done": sum(1 for k in kids if k.state == TaskState.SUCCEEDED),
    }
    if len(kids) == len(task.children):
        out["state"] = TaskState.READY
    return out


def write_extras(
    tx: Any,
    run_id: str,
    plan: "Plan",
    finished: dict[str, Finished],
    dag: str,
    now: int,
    tag: str = "",
) -> dict[str, Any]:
    """Add to ``tx`` the channel entries of finished children of running parents and the
    metric counts of tasks ended at submit; return the run-hash fields to add (the run's end
    if its root is finished). ``tag``: the run's slot tag on a Redis Cluster (``slots``)."""
    if not finished:
        return {}
    ended: Counter[tuple[str, str]] = Counter()
    for task in plan.tasks:
        tid = plan.tid(task)
        done = finished.get(tid)
        if done is None:
            continue
        if done.state != TaskState.SUCCEEDED:  # reused tasks did not end in this run
            ended[(type(task).family(), done.state)] += 1
        parent = task.parent
        if parent is None or plan.tid(parent) in finished:
            continue
        ch = keys.channel(run_id, plan.tid(parent))
        for n, blob in done.batches:
            tx.xadd(ch, {"c": tid, "a": "1", "k": "v", "n": n, "v": blob})
        tx.xadd(ch, {"c": tid, "a": "1", "k": "end", "n": done.emitted})
    for (family, state), n in ended.items():
        tx.hincrby(keys.metrics(tag), counters.field("tasks_ended", family, state), n)
    root = finished.get(plan.tid(plan.tasks[-1]))
    if root is None:
        return {}
    status = RunStatus.SUCCEEDED if root.state == TaskState.SKIPPED else RunStatus.FAILED
    tx.rpush(keys.done(run_id), status.value)
    tx.hincrby(keys.metrics(tag), counters.field("runs_ended", dag, status.value), 1)
    tx.hincrby(keys.metrics(tag), counters.field("run_seconds_b", dag, status.value, 1), 1)
    out: dict[str, Any] = {"status": status.value, "ended_at": now}
    if status == RunStatus.FAILED:
        for task in plan.tasks:
            cause = finished.get(plan.tid(task))
            if (
                cause is not None
                and cause.state == TaskState.FAILED
                and "upstream" not in cause.fields
            ):
                out["error"] = (
                    f"task {task.task_name} ({plan.tid(task)}) failed: "
                    f"{cause.fields.get('error', '')}"
                )
                break
    return out
