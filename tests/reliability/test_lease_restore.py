"""Issue 18: leases restored from a snapshot do not expire attempts that are still alive.

A Redis restored from a snapshot (or a replica promoted by a failover) holds lease deadlines
as they were when the snapshot was taken. If the snapshot is older than a lease, every lease
in it is already past due when Redis comes back, while the workers holding them are alive and
renew within a heartbeat. A scheduler that did not see the outage (here: one started after the
restore; in production also a failover hidden by its client's retries) must not declare them
lost at its first tick.

Real parts: a private redis-server, a scheduler and a worker as OS processes, SIGKILL of the
scheduler and of Redis, the snapshot's dump.rdb put back, Redis restarted on the same port. The
task only sleeps (it writes nothing but lease renewals), so the restore loses none of its
writes, only its lease's age: any re-run is the reaper's doing. Executions are counted outside
Redis (tests/dags/rollback_tasks.py's journal).
"""

from __future__ import annotations

import shutil
import time

import pytest

import plankton as pk
from plankton import keys
from tests.dags import rollback_tasks as rt
from tests.reliability import helpers as h
from tests.servers import RedisServer, wait_for

pytestmark = pytest.mark.timeout(120)

#: The cluster's lease (tests/cluster.FAST) and how long the runs go on past the snapshot:
#: longer than a lease, so the snapshot's lease deadlines are past due when Redis is back.
LEASE_S = 3.0
MOVE_ON = LEASE_S + 1.5


def test_leases_restored_from_an_old_snapshot_are_renewed_not_reaped(
    tmp_path, private_cluster, rconn
):
    journal = tmp_path / "journal.txt"
    data = tmp_path / "redis"
    server = RedisServer(data).start()
    try:
        fc = private_cluster(server.url, **{rt.JOURNAL_ENV: str(journal)})
        fc.imports = [rt.__name__]
        scheduler = fc.scheduler("s0")
        worker = fc.worker("wa")
        r = rconn(server.url)
        h.worker_ready(r, "wa")
        client = pk.Client(server.url, imports=[rt.__name__])
        run_id = client.submit(rt.RbSleep(seconds=MOVE_ON + 8))
        client.close()
        wait_for(
            lambda: h.task(r, run_id, "0").get("state") == "running", 20, what="the attempt running"
        )

        r.save()
        backup = tmp_path / "snapshot.rdb"
        shutil.copy(data / "dump.rdb", backup)
        deadline_ms = int(r.zscore(keys.leases(run_id), "0"))
        time.sleep(MOVE_ON)  # the worker renews meanwhile; Redis moves on
        h.kill_group(scheduler)  # no scheduler sees the outage
        server.kill()
        shutil.copy(backup, data / "dump.rdb")  # the restore
        server.start()
        assert int(r.zscore(keys.leases(run_id), "0")) == deadline_ms < h.redis_ms(r), (
            "the restored lease is past due"
        )
        fc.scheduler("s1")  # started after the restore

        status = h.wait_run(r, run_id, 40)
        task = h.task(r, run_id, "0")
        starts = [line for line in journal.read_text().splitlines() if line.endswith(" start")]
        assert status == "succeeded", (status, task.get("error"))
        assert task["attempt"] == "1" and task.get("lost", "0") == "0", task
        assert len(starts) == 1, f"the attempt ran again: {starts}"
        assert worker.poll() is None
    finally:
        server.stop()
