"""Resume from failure: which tasks of a past run run again, which are reused, and why.

``plan`` compares the past run (its task states and tree hashes) with the tree re-created
from it with today's code and the overrides (``rerun.recreate``), top-down from the root:

- a task that did not succeed in the run (failed, cancelled, never finished, skipped) runs;
  so does every ancestor of it (they did not succeed either);
- a task that succeeded runs again if its subtree changed (its ``tree_hash`` differs);
- a task that succeeded with an unchanged subtree, under a parent that runs, is *reused*:
  it does not run, and the values it emitted (read from the parent's results channel of the
  past run, its final attempt only, in their order) are written into the new run's channel
  of that parent with the run (``prefill``), so the parent reads each once, as if the child
  had just run. Its subtree is reused with it (nothing there runs).
- exception: a succeeded task whose parent also succeeded but runs again (an override changed
  the parent or a sibling) runs too: its values went to a parent that finished, whose
  channel is dropped at once. Its subtree is decided the same way.

The values live in the past run's channels, which the scheduler keeps
``PLANKTON_RESUME_KEEP_DAYS`` (default 7) after a run that did not succeed ends; a resume
after that raises ResumeError, and ``plankton rerun RUN`` (no ``--from-failure``) runs
everything again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from plankton import codec, keys
from plankton.errors import ResumeError
from plankton.runs.planning import Plan, tree_hashes
from plankton.runs.prefill import Finished
from plankton.runs.rerun import Recreated
from plankton.states import RunStatus, TaskState

_s = codec.text

RUN, REUSE = "run", "reuse"
_OLD_FIELDS = ("state", "attempt", "result", "emitted", "consumed", "started_at", "ended_at")


@dataclass
class Step:
    """What the resume does with one task: ``action`` run | reuse, and ``reason``."""

    id: str
    name: str
    action: str
    reason: str


@dataclass
class ResumePlan:
    """The decision for every task (by the new run's task id) and the tasks written reused."""

    run_id: str
    steps: list[Step]
    finished: dict[str, Finished] = field(default_factory=dict)


def check_resumable(run_id: str, status: str) -> None:
    """ResumeError unless the run ended without succeeding."""
    if status == RunStatus.SUCCEEDED:
        raise ResumeError(
            run_id,
            "it succeeded, there is nothing to resume; "
            f"`plankton rerun {run_id}` (without --from-failure) runs it again",
        )
    if status in (RunStatus.QUEUED, RunStatus.RUNNING):
        raise ResumeError(
            run_id,
            f"it is still {status}; wait for it to end, or cancel it "
            f"(`plankton cancel {run_id}`), then resume it",
        )


def plan(conn: redis.Redis, rec: Recreated) -> ResumePlan:
    """Decide run or reuse for every task of ``rec`` and read the reused values; nothing is
    written. ResumeError if the run cannot be resumed or the values are no longer kept."""
    old_run = rec.run_id
    check_resumable(old_run, rec.run.get("status", ""))
    pipe = conn.pipeline(transaction=False)
    for t in rec.old:
        pipe.hmget(keys.task(old_run, t["id"]), *_OLD_FIELDS)
    old = {t["id"]: {**t, **dict(zip(_OLD_FIELDS, row))} for t, row in zip(rec.old, pipe.execute())}
    new = Plan.of(rec.order)
    trees = tree_hashes(new)
    steps: dict[str, Step] = {}
    finished: dict[str, Finished] = {}
    wanted: dict[str, dict[str, str]] = {}  # old parent id -> old child id -> attempt
    stack: list[tuple[str, str | None]] = [(rec.run["root"], None)]
    while stack:  # top-down from the root
        oid, parent = stack.pop()
        t = old[oid]
        nid = new.tid(rec.tasks_by_id[oid])
        state = _s(t["state"])
        up = steps.get(new.tid(rec.tasks_by_id[parent])) if parent is not None else None
        if up is not None and up.action == REUSE:
            steps[nid] = Step(nid, t["name"], REUSE, f"inside reused {up.name}#{up.id}")
            finished[nid] = _reused(old_run, t)
        elif state == TaskState.SUCCEEDED and trees[nid] == t["tree_hash"]:
            if parent is None:
                raise ResumeError(old_run, "its root task succeeded: nothing to resume")
            if _s(old[parent]["state"]) == TaskState.SUCCEEDED:
                steps[nid] = Step(
                    nid,
                    t["name"],
                    RUN,
                    "succeeded, but its parent succeeded too "
                    "and consumed its values (not kept); the parent runs again",
                )
            else:
                steps[nid] = Step(
                    nid,
                    t["name"],
                    REUSE,
                    f"succeeded in {old_run}, subtree unchanged (same tree_hash)",
                )
                finished[nid] = _reused(old_run, t)
                wanted.setdefault(parent, {})[oid] = _s(t["attempt"])
        elif state == TaskState.SUCCEEDED:
            changed = "params" if rec.tasks_by_id[oid].param_hash != t["param_hash"] else "subtree"
            steps[nid] = Step(nid, t["name"], RUN, f"{changed} changed (tree_hash differs)")
        elif state == TaskState.SKIPPED:
            steps[nid] = Step(
                nid, t["name"], RUN, f"skipped in {old_run}: complete() is asked again"
            )
        elif state in (TaskState.FAILED, TaskState.CANCELLED):
            steps[nid] = Step(nid, t["name"], RUN, f"{state} in {old_run}")
        else:
            steps[nid] = Step(nid, t["name"], RUN, f"never finished in {old_run} ({state})")
        for c in reversed(t["children"]):
            stack.append((str(c), oid))
    _load_values(conn, rec, old, wanted, finished, new)
    ordered = [steps[k] for k in sorted(steps, key=int)]
    return ResumePlan(old_run, ordered, finished)


def _reused(old_run: str, t: dict[str, Any]) -> Finished:
    fields: dict[str, Any] = {"reused_from": old_run, "attempts": 0}
    for name in ("result", "emitted", "consumed", "started_at", "ended_at"):
        if t.get(name) is not None:
            fields[name] = t[name]
    return Finished(TaskState.SUCCEEDED, fields)


def _load_values(
    conn: redis.Redis,
    rec: Recreated,
    old: dict[str, dict[str, Any]],
    wanted: dict[str, dict[str, str]],
    finished: dict[str, Finished],
    new: Plan,
) -> None:
    """Copy each reuse root's value batches (its final attempt's, in order) from the past
    run's channel of its parent into ``finished``; ResumeError if they are gone."""
    for parent, children in wanted.items():
        got: dict[str, list[tuple[int, bytes]]] = {c: [] for c in children}
        ended: set[str] = set()
        key = keys.channel(rec.run_id, parent)
        after = "-"
        while True:
            entries: Any = conn.xrange(key, after, "+", count=10_000)
            for eid, f in entries:
                c = _s(f.get(b"c"))
                if c not in children or _s(f.get(b"a")) != children[c]:
                    continue
                if f.get(b"k") == b"v":
                    got[c].append((int(f[b"n"]), f[b"v"]))
                else:
                    ended.add(c)
            if len(entries) < 10_000:
                break
            after = "(" + _s(entries[-1][0])
        for c in children:
            if c not in ended:
                raise ResumeError(
                    rec.run_id,
                    f"the values of task {old[c]['name']} ({c}) "
                    "are no longer kept (a run that did not succeed keeps them "
                    "PLANKTON_RESUME_KEEP_DAYS after it ends); "
                    f"`plankton rerun {rec.run_id}` (without --from-failure) "
                    "runs everything again",
                )
            emitted = int(_s(old[c].get("emitted")) or 0)
            if sum(n for n, _ in got[c]) != emitted:  # never seen; a damaged stream
                raise ResumeError(
                    rec.run_id,
                    f"the kept values of task {old[c]['name']} "
                    f"({c}) are incomplete ({sum(n for n, _ in got[c])} of "
                    f"{emitted}); `plankton rerun {rec.run_id}` (without "
                    "--from-failure) runs everything again",
                )
            finished[new.tid(rec.tasks_by_id[c])].batches = got[c]


def describe(rec: Recreated, p: ResumePlan, code_version: str = "") -> dict[str, Any]:
    """The ``--dry-run`` document: each task's action and reason, and ``code_changed`` when
    today's code version differs from the run's (reused values were made by the old code:
    hashes cover params, not code)."""
    recorded = rec.run.get("version", "")
    code = (
        {"recorded": recorded, "today": code_version}
        if recorded and code_version and recorded != code_version
        else None
    )
    return {
        "run_id": rec.run_id,
        "from_failure": True,
        "code_changed": code,
        "run": sum(1 for s in p.steps if s.action == RUN),
        "reuse": sum(1 for s in p.steps if s.action == REUSE),
        "tasks": [
            {"id": s.id, "name": s.name, "action": s.action, "reason": s.reason} for s in p.steps
        ],
    }
