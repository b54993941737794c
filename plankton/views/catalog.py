"""What ``plankton dags`` and ``GET /dags`` show: each DAG, its schedule, next fire, last run."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from plankton import keys
from plankton.views import reading


def describe_dags(client: Any, now: _dt.datetime | None = None) -> list[dict[str, Any]]:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    out = []
    for dag in sorted(client.registry.dags.values(), key=lambda d: d.name):
        info = dag.describe()
        info["next_fire"] = dag.schedule.next_fire(now).isoformat() if dag.schedule else None
        last = client.conn.zrevrange(keys.dag_runs(dag.name), 0, 0)
        info["last_run"] = None
        if last:
            run = reading.read_run(client.conn, last[0].decode())
            if run:
                info["last_run"] = {
                    "run_id": run["run_id"],
                    "status": run["status"],
                    "submitted_at": run["submitted_at"],
                }
        out.append(info)
    return out
