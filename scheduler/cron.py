"""Cron firing: each (DAG, fire time) creates exactly one run, whatever the schedulers do.

Only the leader fires. A fire time's run has a deterministic id (``cron-DAG-TIMESTAMP``) and
is written with a fenced script (``scripts.CREATE_RUN_FENCED``): every write checks that the
writer's leader epoch is still current and that the run does not exist yet. A second scheduler, a
restarted one, or an old leader waking from a pause therefore cannot create a fire time twice
or overwrite a run; the per-DAG ``last_fire`` only moves forward, under the same fence. The
run fired at ``t`` covers the window (previous fire time, t] (``Schedule.window``).
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import TYPE_CHECKING, Any

from plankton import keys
from plankton.authoring.dag import Dag
from plankton.client import code_version
from plankton.engine import scripts
from plankton.errors import Fenced
from plankton.runs import writing
from plankton.views import reading

if TYPE_CHECKING:  # pragma: no cover
    from scheduler.loop import Scheduler

log = logging.getLogger("plankton.cron")


#: How long a fire time's claim key lives (s): far longer than any catch-up window.
FIRE_KEY_TTL = 400 * 86400


def cron_run_id(dag: str, fire: _dt.datetime) -> str:
    return f"cron-{dag}-{fire.astimezone(_dt.timezone.utc):%Y%m%dT%H%M%SZ}"


def create_run(
    conn: Any,
    dag: Dag,
    fire: _dt.datetime,
    *,
    run_id: str,
    fence: tuple[str, int] | None,
    params: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Create the run of ``dag`` for the window ending at ``fire``; False if refused."""
    assert dag.schedule is not None
    since, to = dag.schedule.window(fire)
    typed, root, order = dag.plan(params or {}, since, to)
    wire = {k: dag.params[k].to_wire(v) for k, v in typed.items()}
    info = {"fire_time": fire.isoformat(), "trigger": "cron"}
    info.update(extra or {})
    try:
        writing.write_run(
            conn,
            run_id,
            root,
            order,
            dag=dag.name,
            params=wire,
            since=since,
            to=to,
            version=code_version(dag.module),
            extra=info,
            fence=fence,
        )
    except Fenced:
        return False
    conn.set(keys.cron_fire(dag.name, int(fire.timestamp())), run_id, ex=FIRE_KEY_TTL)
    return True


class CronFirer:
    """Fires the scheduled DAGs of the scheduler's registry, leader only."""

    def __init__(self, sched: "Scheduler") -> None:
        self.sched = sched
        self.conn = sched.conn
        self.dags = [d for d in sched.registry.dags.values() if d.schedule is not None]
        self._advance = self.conn.register_script(scripts.CRON_ADVANCE)

    def now(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.sched.clock(), _dt.timezone.utc)

    def tick(self) -> None:
        epoch = self.sched.epoch
        if epoch is None or not self.dags:
            return
        now = self.now()
        for dag in self.dags:
            self._fire_due(dag, now, epoch)

    def _fire_due(self, dag: Dag, now: _dt.datetime, epoch: int) -> None:
        assert dag.schedule is not None
        raw = self.conn.hget(keys.cron(dag.name), "last_fire")
        if not raw:
            # A schedule seen for the first time starts from now: its first run is the next
            # fire time (use backfill for the past), not a surprise run of an old interval.
            self._advance(
                keys=[keys.LEADER_EPOCH, keys.cron(dag.name)],
                args=[epoch, int(dag.schedule.prev_fire(now).timestamp())],
            )
            return
        last = _dt.datetime.fromtimestamp(int(raw), _dt.timezone.utc)
        due = dag.schedule.due(last, now, dag.catchup)
        if not due:
            return
        active = reading.active_runs(self.conn, dag.name)
        for fire in due:
            if active >= dag.max_active_runs:
                return
            run_id = cron_run_id(dag.name, fire)
            created = create_run(
                self.conn, dag, fire, run_id=run_id, fence=(keys.LEADER_EPOCH, epoch)
            )
            if not created and not self.conn.exists(keys.run(run_id)):
                return  # fenced: a newer leader acts now
            if created:
                active += 1
                log.info("fired %s for %s (run %s)", dag.name, fire.isoformat(), run_id)
            self._advance(
                keys=[keys.LEADER_EPOCH, keys.cron(dag.name)], args=[epoch, int(fire.timestamp())]
            )
        if not dag.catchup and due:
            self._advance(
                keys=[keys.LEADER_EPOCH, keys.cron(dag.name)],
                args=[epoch, int(due[-1].timestamp())],
            )
