"""``pk.Client``: submit runs, follow them, read their records, cancel and re-run them.

A client validates everything before it writes: an unknown DAG, a bad param or an invalid
tree raises before a single key is written (nothing half-written).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import sys
import time
from typing import Any, Callable, Mapping

import redis

from plankton import codec, keys, states
from plankton.authoring.dag import Dag
from plankton.authoring.registry import Registry
from plankton.authoring.task import Task, place
from plankton.engine import durable, liveness
from plankton.engine.connection import check, connect
from plankton.engine.transitions import Transitions
from plankton.engine.transport import Enqueuer, batch_size
from plankton.errors import DagError, NotFoundError, RunTimeout
from plankton.runs import planning, prefill, resume, skip, writing
from plankton.runs.rerun import diff, recreate
from plankton.settings import Settings, load
from plankton.states import RunStatus
from plankton.views import reading


def code_version(module: str) -> str:
    """PLANKTON_VERSION, else the installed version of the DAG module's package, else ''."""
    env = os.environ.get("PLANKTON_VERSION")
    if env:
        return env
    top = module.split(".")[0]
    try:
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        mod = sys.modules.get(top)
        return str(getattr(mod, "__version__", "")) if mod else ""


class Client:
    """Talks to Plankton through Redis. ``url`` defaults to PLANKTON_REDIS_URL."""

    def __init__(
        self,
        url: str | None = None,
        imports: tuple[str, ...] | list[str] = (),
        settings: Settings | None = None,
        check_connection: bool = True,
        conn: redis.Redis | None = None,
    ) -> None:
        """``conn`` lets a server pass a client with its own timeouts and retry budget."""
        self.settings = settings or load(url=url, imports=tuple(imports))
        self.conn = conn if conn is not None else connect(self.settings.url)
        if check_connection:
            check(self.conn, self.settings.url, self.settings.connect_attempts)
        self.registry = Registry(self.settings.imports)
        self.transitions = Transitions(
            self.conn, self.settings.wait_replicas, self.settings.wait_ms
        )
        self._workers, self._workers_at = 0, -10.0
        self._enqueuer: Enqueuer | None = None
        #: DAGs found by name outside the registry (find_dag), so a script submitting in a
        #: loop scans the imported modules once.
        self._found: dict[str, Dag] = {}
        self._blocking: redis.Redis | None = None

    @property
    def enqueuer(self) -> Enqueuer:
        if self._enqueuer is None:
            self._enqueuer = Enqueuer(self.conn)
        return self._enqueuer

    # -- DAGs ----------------------------------------------------------------------------
    def find_dag(self, name: str) -> Dag:
        """A DAG by name from the imports, or from any module already imported."""
        if name in self.registry.dags:
            return self.registry.dags[name]
        found = self._found.get(name)
        if found is not None:
            return found
        for module in list(sys.modules.values()):
            for value in list(getattr(module, "__dict__", {}).values()):
                if isinstance(value, Dag) and value.name == name:
                    self._found[name] = value  # the scan of every module costs ~1 ms
                    return value
        raise NotFoundError("DAG", name, list(self.registry.dags))

    def dags(self) -> list[dict[str, Any]]:
        return [d.describe() for d in self.registry.dags.values()]

    # -- submit --------------------------------------------------------------------------
    def submit(
        self,
        dag: str | Dag | Task,
        params: Mapping[str, Any] | None = None,
        since: _dt.datetime | None = None,
        to: _dt.datetime | None = None,
        *,
        rerun_of: str = "",
        extra: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Start a run of a DAG (by name or object) or of a task tree; returns its run id."""
        with planning.gc_paused():  # building 100,000 tasks: see planning.gc_paused
            return self._submit(dag, params, since, to, rerun_of, extra, run_id)

    def _submit(
        self,
        dag: str | Dag | Task,
        params: Mapping[str, Any] | None,
        since: _dt.datetime | None,
        to: _dt.datetime | None,
        rerun_of: str,
        extra: dict[str, Any] | None,
        run_id: str | None,
    ) -> str:
        if isinstance(dag, Task):
            order = place(dag, since, to)
            if len(order) > self.settings.max_tasks:
                raise DagError(
                    f"the tree has {len(order):,} tasks, more than "
                    f"PLANKTON_MAX_TASKS={self.settings.max_tasks:,}",
                    [dag.task_name],
                )
            typed: dict[str, Any] = {}
            root, name, module = dag, dag.task_name, type(dag).__module__
        else:
            d = self.find_dag(dag) if isinstance(dag, str) else dag
            typed, root, order = d.plan(params or {}, since, to, self.settings.max_tasks)
            name, module = d.name, d.module
        wire = self._wire_params(dag, typed)
        rid = run_id or planning.new_run_id()
        plan = planning.Plan.of(order)
        finished = skip.check(plan)  # complete(), top-down (skip.py)
        items = [(plan.tid(t), 1, type(t).queue) for t in prefill.first_tasks(plan, finished)]
        size = batch_size(len(items), self._workers_alive())
        enqueuer = self.enqueuer
        # The first enqueue rides in the transaction that creates the run (one round trip
        # for the lot, whatever the size: its tasks were written before, or in it).
        try:
            replies = writing.write_run(
                self.conn,
                rid,
                root,
                order,
                dag=name,
                params=wire,
                since=since,
                to=to,
                version=code_version(module),
                rerun_of=rerun_of,
                extra=extra,
                notify=False,
                then=lambda tx: enqueuer.enqueue_many_in(tx, rid, items, size),
                finished=finished,
            )
        except redis.exceptions.NoScriptError:
            # Redis lost its scripts (a restart, or a failover to a replica: SCRIPT LOAD is
            # not replicated). EXEC ran every other command, so the run is written; only
            # its first enqueue is missing, which the fallback below does.
            enqueuer.reload()
            replies = [redis.exceptions.NoScriptError()]
        if any(
            isinstance(r, Exception) or (isinstance(r, list) and r and r[0] != b"OK")
            for r in replies or []
        ):
            # Put the first ready tasks on their queues now, saving a hop through the
            # scheduler (which would enqueue them after READY_GRACE_MS if we died here).
            # Racing it is safe: every enqueue is a compare-and-set on state and attempt.
            enqueuer.enqueue_many(rid, items, size)
        self._durable("a new run")
        return rid

    def _durable(self, what: str) -> None:
        """PLANKTON_WAIT_REPLICAS: the run just written is on that many replicas (or the
        WAIT timed out, logged) before submit returns its id (plankton/engine/durable.py)."""
        durable.settle(self.conn, self.settings.wait_replicas, self.settings.wait_ms, what)

    def _workers_alive(self) -> int:
        """Live workers (cached for a second): sizes the first batches."""
        now = time.monotonic()
        if now - self._workers_at > 1.0:
            self._workers = liveness.live_workers(self.conn, self.settings.heartbeat)
            self._workers_at = now
        return self._workers

    @staticmethod
    def _wire_params(dag: Any, typed: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(dag, Dag):
            return {k: dag.params[k].to_wire(v) for k, v in typed.items()}
        return dict(typed)

    def submit_parsed(
        self,
        dag: str,
        texts: Mapping[str, str],
        since: _dt.datetime | None = None,
        to: _dt.datetime | None = None,
    ) -> str:
        """Submit with params given as CLI strings (``--param n=3``)."""
        d = self.find_dag(dag)
        return self.submit(d, d.parse_params(texts), since, to)

    def rerun(
        self,
        run_id: str,
        overrides: Mapping[str, str] | None = None,
        *,
        dry_run: bool = False,
        from_failure: bool = False,
    ) -> str | dict[str, Any]:
        """Re-create ``run_id`` from its metadata with today's code and submit it.

        ``overrides`` maps ``"TASK.PARAM"`` (TASK: a task name or id) to a value as text.
        With ``dry_run`` nothing is submitted; returns what would change instead.
        With ``from_failure`` (resume, docs/resume.md): only the tasks that failed, were
        cancelled or never finished, their ancestors and tasks whose subtree changed run;
        every other task is reused (``reused_from``), its values handed to its parent as if
        it had just run. ResumeError if the run succeeded, is still live, or the values to
        reuse are no longer kept; ``dry_run`` then returns the plan (``resume.describe``).
        """
        rec = recreate(self.conn, self.registry, run_id, overrides)
        module = type(rec.root).__module__
        plan = resume.plan(self.conn, rec) if from_failure else None
        if dry_run:
            return (
                resume.describe(rec, plan, code_version(module))
                if plan is not None
                else diff(rec, code_version(module))
            )
        run = rec.run
        since = _dt.datetime.fromisoformat(run["since"]) if run.get("since") else None
        to = _dt.datetime.fromisoformat(run["to"]) if run.get("to") else None
        params = codec.loads(run["params"]) if run.get("params") else {}
        order = planning.Plan.of(rec.order)
        finished = skip.check(order, plan.finished if plan is not None else None)
        rid = planning.new_run_id()
        writing.write_run(
            self.conn,
            rid,
            rec.root,
            rec.order,
            dag=run.get("dag", ""),
            params=params,
            since=since,
            to=to,
            version=code_version(module),
            rerun_of=run_id,
            extra={"overrides": codec.dumps(dict(overrides or {}))},
            finished=finished,
        )
        self._durable("a rerun")
        return rid

    def backfill(
        self,
        dag: str,
        since: _dt.datetime,
        to: _dt.datetime,
        *,
        force: bool = False,
        params: Mapping[str, Any] | None = None,
        poll: float = 0.2,
        on_submit: Callable[[str, _dt.datetime, _dt.datetime], None] | None = None,
    ) -> list[str]:
        """One run per schedule interval in [since, to], oldest first, never more than the
        DAG's ``max_active_runs`` at once; intervals with a succeeded run are skipped unless
        ``force``. Returns the run ids submitted."""
        d = self.find_dag(dag)
        if d.schedule is None:
            raise DagError(f"DAG {dag} has no schedule to backfill", [dag])
        if since > to:
            raise DagError(
                f"backfill of {dag}: --since {since.isoformat()} is after --to {to.isoformat()}",
                [dag],
            )
        typed = d.validate_params(params or {})
        submitted = []
        for w_since, w_to in d.schedule.backfill_windows(since, to):
            fire_key = keys.cron_fire(d.name, int(w_to.timestamp()))
            previous = self.conn.get(fire_key)
            if previous and not force:
                status = self.conn.hget(keys.run(codec.text(previous)), "status")
                if codec.text(status) in (RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.RUNNING):
                    continue
            self._wait_for_slot(d, poll)
            rid = self.submit(
                d,
                typed,
                w_since,
                w_to,
                extra={"trigger": "backfill", "fire_time": w_to.isoformat()},
            )
            self.conn.set(fire_key, rid, ex=400 * 86400)
            submitted.append(rid)
            if on_submit:
                on_submit(rid, w_since, w_to)
        return submitted

    def _wait_for_slot(self, d: Dag, poll: float) -> None:
        while reading.active_runs(self.conn, d.name) >= d.max_active_runs:
            time.sleep(poll)

    # -- follow --------------------------------------------------------------------------
    def status(self, run_id: str) -> dict[str, Any]:
        """The run as ``plankton show --json`` prints it."""
        found = reading.show(self.conn, run_id)
        if found is None:
            raise NotFoundError("run", run_id)
        return found

    def changes(self, run_id: str, since: int | None = None) -> dict[str, Any]:
        """What changed in the run since the ``cursor`` of the previous call:
        ``{"cursor", "full", "run", "tasks": [changed tasks only]}`` (see reading.changes;
        without ``since``, every task). NotFoundError for an unknown run."""
        found = reading.changes(self.conn, run_id, since)
        if found is None:
            raise NotFoundError("run", run_id)
        return found

    def _blocking_conn(self) -> redis.Redis:
        """A client whose socket timeout outlasts blocking waits (kept for reuse)."""
        if self._blocking is None:
            self._blocking = connect(self.settings.url, blocking=True)
        return self._blocking

    def _run_only(self, run_id: str) -> dict[str, Any]:
        found = reading.read_run(self.conn, run_id)
        if found is None:
            raise NotFoundError("run", run_id)
        return found

    def run_status(self, run_id: str) -> str:
        status = self.conn.hget(keys.run(run_id), "status")
        if status is None:
            raise NotFoundError("run", run_id)
        return codec.text(status)

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        interval: float = 0.25,
        tasks: bool = True,
    ) -> dict[str, Any]:
        """Block until the run ends; returns the run (with its tasks unless ``tasks`` is
        False, which saves reading every task of a big run). RunTimeout after ``timeout`` s."""
        result: Callable[[], dict[str, Any]] = (
            (lambda: self.status(run_id)) if tasks else (lambda: self._run_only(run_id))
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: dict[str, Any] = {}
        cursor: int | None = None
        while True:
            if on_progress is not None:  # a delta read per refresh: its cost is what changed
                delta = self.changes(run_id, cursor)
                if delta["full"]:
                    seen = {}
                seen.update((t["id"], t) for t in delta["tasks"])
                cursor = delta["cursor"]
                on_progress({**delta["run"], "tasks": list(seen.values())})
            step = interval if on_progress else 1.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RunTimeout(run_id, timeout or 0.0)
                step = min(step, left)
            if self.await_end(run_id, step):
                return result()

    def await_end(self, run_id: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for the run to end; True once it has.

        The run's done list gets one element when it ends; rotating it (BLMOVE onto itself)
        wakes this waiter in one round trip and leaves it for every other one."""
        done = keys.done(run_id)
        if (
            self._blocking_conn().blmove(
                done,
                done,
                max(seconds, 0.01),  # type: ignore[arg-type]
                "RIGHT",
                "LEFT",
            )
            is not None
        ):
            return True
        return self.run_status(run_id) in states.RUN_ENDED

    def runs(
        self,
        dag: str | None = None,
        limit: int = 20,
        status: str | None = None,
        before: float | None = None,
    ) -> list[dict[str, Any]]:
        return reading.list_runs(self.conn, dag=dag, limit=limit, status=status, before=before)

    def logs(self, run_id: str, task: str | None = None) -> list[dict[str, Any]]:
        if not self.conn.exists(keys.run(run_id)):
            raise NotFoundError("run", run_id)
        return reading.read_logs(self.conn, run_id, task)

    def cancel(self, run_id: str) -> str:
        """Cancel a live run; returns its status afterwards."""
        if not self.conn.exists(keys.run(run_id)):
            raise NotFoundError("run", run_id)
        return self.transitions.cancel(run_id)

    def close(self) -> None:
        self.conn.close()
        if self._blocking is not None:
            self._blocking.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Client", "code_version", "redis"]
