"""Re-create a past run from its metadata alone, with today's code, and optional overrides.

The run's task hashes hold each task's family, parameters (wire form), parent and children;
task classes are looked up by family in today's registry and rebuilt with the recorded
params. Overrides ``TASK.PARAM=VALUE`` (TASK a task name — every task of that name — or a task
id) are parsed with the param's own type. A family or param today's code no longer has is an
error naming it, raised before anything is submitted. ``diff`` says which tasks' hashes a
re-run would change, and whether the code version differs from the one the run recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import redis

from plankton import codec, keys
from plankton.authoring.params import check_known
from plankton.authoring.registry import Registry
from plankton.authoring.task import Task, validate_tree
from plankton.errors import NotFoundError, ParamError
from plankton.runs.planning import Plan, tree_hashes

_s = codec.text


@dataclass
class Recreated:
    """A run rebuilt from metadata: the new tree plus what it was built from."""

    run_id: str
    run: dict[str, Any]
    root: Task
    order: list[Task]
    old: list[dict[str, Any]]
    tasks_by_id: dict[str, Task] = field(default_factory=dict)


def parse_overrides(items: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """{"Multiplier.n": "3"} -> [("Multiplier", "n", "3")]; ParamError if not TASK.PARAM."""
    out = []
    for key, value in items.items():
        task, dot, param = key.rpartition(".")
        if not dot or not task or not param:
            raise ParamError(
                "rerun", key, value, "expected TASK.PARAM=VALUE (TASK is a task name or id)"
            )
        out.append((task, param, value))
    return out


def recreate(
    conn: redis.Redis, registry: Registry, run_id: str, overrides: Mapping[str, str] | None = None
) -> Recreated:
    """Rebuild the tree of ``run_id`` with today's code, applying ``overrides``."""
    raw_run = conn.hgetall(keys.run(run_id))
    if not raw_run:
        raise NotFoundError("run", run_id)
    blobs = (b"params", b"result", b"overrides")  # msgpack, not text
    run = {_s(k): _s(v) if k not in blobs else v for k, v in raw_run.items()}
    n = int(run.get("n_tasks") or 0)
    pipe = conn.pipeline(transaction=False)
    for i in range(n):
        pipe.hmget(
            keys.task(run_id, str(i)),
            "family",
            "name",
            "params",
            "children",
            "param_hash",
            "tree_hash",
        )
    old = []
    for i, row in enumerate(pipe.execute()):
        family, name, params, children, ph, th = row
        old.append(
            {
                "id": str(i),
                "family": _s(family),
                "name": _s(name),
                "params": codec.loads(params) if params else {},
                "children": codec.loads(children) if children else [],
                "param_hash": _s(ph),
                "tree_hash": _s(th),
            }
        )
    wanted = parse_overrides(overrides or {})
    _check_override_targets(old, wanted)
    tasks = {t["id"]: _build(registry, t, wanted) for t in old}
    for t in old:
        tasks[t["id"]].add_children(*(tasks[str(c)] for c in t["children"]))
    root = tasks[run["root"]]
    return Recreated(run_id, run, root, validate_tree(root), old, tasks)


def _check_override_targets(old: list[dict[str, Any]], wanted: list[tuple[str, str, str]]) -> None:
    names = {t["name"] for t in old} | {t["id"] for t in old}
    for task, _, _ in wanted:
        if task not in names:
            raise NotFoundError("task", task, sorted({t["name"] for t in old}))


def _build(registry: Registry, old: dict[str, Any], wanted: list[tuple[str, str, str]]) -> Task:
    try:
        cls = registry.task_class(old["family"])
    except NotFoundError:
        raise NotFoundError(
            "task family",
            old["family"],
            [
                f"today's code (imports: {', '.join(registry.modules) or 'none'}) "
                "no longer defines it"
            ],
        ) from None
    params: dict[str, Any] = {}
    for key, wire in old["params"].items():
        if key not in cls._params:
            raise ParamError(old["family"], key, wire, "today's code no longer has this parameter")
        params[key] = cls._params[key].from_wire(wire, old["name"])
    for task, param, text in wanted:
        if task in (old["name"], old["id"]):
            check_known(old["name"], cls._params, {param: text})
            params[param] = cls._params[param].parse(text, old["name"])
    return cls(**params)


def diff(rec: Recreated, code_version: str) -> dict[str, Any]:
    """Which tasks' hashes change in the re-run, and whether the code version changed."""
    plan = Plan.of(rec.order)
    new_trees = tree_hashes(plan)
    changes = []
    for old in rec.old:
        task = rec.tasks_by_id[old["id"]]
        new_ph = task.param_hash
        new_th = new_trees[plan.tid(task)]
        if new_ph != old["param_hash"] or new_th != old["tree_hash"]:
            changes.append(
                {
                    "id": old["id"],
                    "name": old["name"],
                    "param_hash": {"old": old["param_hash"], "new": new_ph},
                    "tree_hash": {"old": old["tree_hash"], "new": new_th},
                    "params_changed": new_ph != old["param_hash"],
                }
            )
    recorded = rec.run.get("version", "")
    code = None
    if recorded and code_version and recorded != code_version:
        code = {
            "recorded": recorded,
            "today": code_version,
            "families": sorted({t["family"] for t in rec.old}),
        }
    return {
        "run_id": rec.run_id,
        "changed": changes,
        "unchanged": len(rec.old) - len(changes),
        "code_changed": code,
        "tree_hash": {"old": rec.run.get("tree_hash", ""), "new": new_trees[plan.tid(rec.root)]},
    }
