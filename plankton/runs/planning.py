"""A task tree flattened for Redis: task ids, the record each task hash gets, tree hashes.

Shared by writing a run (``writing``), re-creating one (``rerun``, ``resume``) and the
``complete()`` and prefill steps that run before a write; it imports none of them, so the
run modules form no import cycle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plankton import codec
from plankton.authoring.hashing import tree_digest
from plankton.authoring.task import Task
from plankton.states import TaskState


def new_run_id() -> str:
    """Time-sortable, URL- and RQ-safe run id, e.g. ``r20261125T120102-9f3a1c``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"r{stamp}-{secrets.token_hex(3)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(value: _dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big tree is built, written or read.

    Those steps create a few objects per task that all stay alive; each allocation burst
    makes the collector walk every live object again, which cost ~10 % of a 100,000-task
    submit and grows with the heap (per-task cost no longer flat). Nothing here makes
    reference cycles that need collecting while paused."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class Plan:
    """A validated tree flattened for Redis: tasks in post-order, ids are their indexes."""

    tasks: list[Task]
    ids: dict[int, str]

    @classmethod
    def of(cls, order: list[Task]) -> "Plan":
        return cls(order, {id(t): str(i) for i, t in enumerate(order)})

    def tid(self, task: Task) -> str:
        return self.ids[id(task)]


def task_record(
    plan: Plan, task: Task, order: int, consts: dict[type, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The task hash written for ``task``. ``consts``: a cache, for one write, of the fields
    that depend only on the task's class (most of them: a wide tree has few classes)."""
    cls = type(task)
    base = consts.get(cls) if consts is not None else None
    if base is None:
        base = {
            "family": cls.family(),
            "n_started": 0,
            "n_done": 0,
            "priority": cls.priority if cls.priority is not None else "",
            "queue": cls.queue,
            "timeout": cls.timeout if cls.timeout is not None else "",
            "retries": cls.retries,
            "attempt": 1,
            "attempts": 0,
            "fails": 0,
            "lost": 0,
        }
        if consts is not None:
            consts[cls] = base
    specs = cls._params
    ids = plan.ids
    children = task.children
    return {
        **base,
        "name": task.task_name,
        "params": codec.dumps({k: specs[k].to_wire(v) for k, v in task._values.items()}),
        "param_hash": task.param_hash,
        "parent": ids[id(task.parent)] if task.parent is not None else "",
        "children": codec.dumps([ids[id(c)] for c in children]),
        "n_children": len(children),
        "state": TaskState.PENDING if children else TaskState.READY,
        "order": order,
    }


def tree_hashes(plan: Plan) -> dict[str, str]:
    """Tree hash of every task, computed bottom-up once (post-order) instead of recursively."""
    raw: dict[int, bytes] = {}
    out: dict[str, str] = {}
    for task in plan.tasks:
        digest = raw[id(task)] = tree_digest(
            bytes.fromhex(task.param_hash), [raw[id(c)] for c in task.children]
        )
        out[plan.tid(task)] = digest.hex()
    return out
