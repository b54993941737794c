"""The states of runs and tasks: ``str`` Enums whose values are the contract's strings.

A member compares equal to its string (``RunStatus.FAILED == "failed"``) and formats as it
(``f"{TaskState.RUNNING}"`` is ``running``), so values read from Redis or JSON need no
conversion to be compared. The Lua scripts (``scripts``) write the same strings; renaming a
value here is a contract change (``plankton show --json``, the API, stored runs).

Task states: pending (waits for its children to start) -> ready -> queued -> running ->
succeeded | failed | retrying (-> ready) | cancelled. A task whose ``complete()`` said True
when its run was written, and every task below it, is written ``skipped`` and never runs
(``plankton.runs.skip``).
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """The status of a run (``status`` of ``plankton show --json`` and the API)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(enum.StrEnum):
    """The state of one task of a run (``tasks[].state``)."""

    PENDING = "pending"
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: ``complete()`` of the task or of an ancestor was True when the run was written.
    SKIPPED = "skipped"


#: Contract status strings of a run, in the contract's order.
RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunStatus)
#: Statuses of a run that has ended (nothing will change it any more).
RUN_ENDED: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}
)
#: States a task does not leave.
TASK_FINAL: frozenset[TaskState] = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}
)
