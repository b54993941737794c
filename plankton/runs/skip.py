"""Skip finished work: ``Task.complete()`` evaluated top-down when a run is written.

Where it runs: in the process that writes the run, just before it writes it
(``writing.write_run``, the one place every run is created): the client of a script, the CLI or
the API for runs started by hand, the leading scheduler for cron runs, the client for
backfills and reruns. That process imports the DAG's modules anyway (it builds the tree), it
happens once per run whatever the number of workers, and the decision is in the run's
record before any worker sees a task of it. Workers need nothing new.

Order: top-down (a parent before its children, ``reversed`` post-order); ``complete()`` is
never called on a task below a complete one, nor for tasks whose class keeps the default.
A complete task and its whole subtree are written ``skipped`` (no result, nothing emitted;
their parent's channel gets their end entries, so the parent runs on). An exception in
``complete()`` fails that task (``error`` says it came from ``complete()``), its ancestors
fail as upstream casualties, every other task is written ``cancelled``, and the run is
written ``failed``; nothing runs, and ``rerun --from-failure`` resumes it.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING

from plankton.authoring.task import Task
from plankton.runs.prefill import Finished
from plankton.states import TaskState

if TYPE_CHECKING:  # pragma: no cover
    from plankton.runs.planning import Plan


def has_complete(task: Task) -> bool:
    """True if the task's class overrides ``Task.complete``."""
    return type(task).complete is not Task.complete


def check(
    plan: "Plan", finished: dict[str, Finished] | None = None, run_complete: bool = True
) -> dict[str, Finished]:
    """``finished`` plus the tasks ``complete()`` skips or fails (a new dict; with
    ``run_complete`` False, ``finished`` as it is: complete() was asked already)."""
    out = dict(finished or {})
    if not run_complete or not any(has_complete(t) for t in plan.tasks):
        return out
    now = int(time.time() * 1000)
    for task in reversed(plan.tasks):  # every parent before its children
        tid = plan.tid(task)
        parent = task.parent
        above = out.get(plan.tid(parent)) if parent is not None else None
        if above is not None and above.state == TaskState.SKIPPED:
            out[tid] = Finished(TaskState.SKIPPED, {"ended_at": now})
            continue
        if tid in out or not has_complete(task):
            continue
        try:
            done = bool(task.complete())
        except Exception as exc:
            _fail(plan, task, out, exc, now)
            return out  # the run fails: no more user code to call
        if done:
            out[tid] = Finished(TaskState.SKIPPED, {"ended_at": now})
    return out


def _fail(plan: "Plan", task: Task, out: dict[str, Finished], exc: Exception, now: int) -> None:
    err = f"{type(exc).__name__}: {exc} (raised by complete())\n" + "".join(
        traceback.format_exception(exc)
    )
    out[plan.tid(task)] = Finished(TaskState.FAILED, {"error": err, "ended_at": now, "fails": 1})
    child, parent = task, task.parent
    while parent is not None:
        out[plan.tid(parent)] = Finished(
            TaskState.FAILED,
            {
                "error": f"UpstreamFailed: child task {child.task_name} failed: {err}",
                "upstream": child.task_name,
                "ended_at": now,
            },
        )
        child, parent = parent, parent.parent
    for other in plan.tasks:  # nothing else will run: as the scheduler would settle them
        out.setdefault(plan.tid(other), Finished(TaskState.CANCELLED, {"ended_at": now}))
