"""Issue 5 point 5 (DESIGN guarantee 7): Redis restarts and Redis unreachable.

RELIABILITY §7 #5: with ``appendonly yes`` / ``appendfsync everysec``, SIGKILL redis-server
mid-run and restart it on the same directory and port, twice (down 1.5 s, then 8 s, longer
than the client's own retries): every run ends, and succeeds, with every value once and no
task re-run (tasks ride the outage through; the scheduler waits a lease before reaping); the
scheduler and worker supervisors ride through. #6: Redis unreachable at start: the CLI
exits non-zero within 10 s with a clear message, no traceback, the password redacted; a
worker and scheduler started before Redis begin work within 5 s of it appearing.
"""

from __future__ import annotations

import time

from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h
from tests.servers import RedisServer, free_port, wait_for


def test_redis_sigkill_and_restart_with_aof_mid_run(tmp_path, private_cluster, rconn, capsys):
    server = RedisServer(
        tmp_path / "aof", extra=["--appendonly", "yes", "--appendfsync", "everysec"]
    ).start()
    try:
        fc = private_cluster(server.url)
        sched = fc.scheduler("s0")
        workers = [fc.worker("wa"), fc.worker("wb")]
        r = rconn(server.url)
        h.worker_ready(r, "wa")
        h.worker_ready(r, "wb")
        c = h.client(server.url)
        leaves, n = 4, 200
        run_ids = [
            c.submit("drip_tree", params={"leaves": leaves, "n": n, "pause": 0.05})
            for _ in range(5)
        ]
        c.close()
        # a short outage, then one longer than redis-py's own retries (~5 s)
        for down in (1.5, 8.0):
            time.sleep(1.0)
            server.kill()  # SIGKILL, by PID
            time.sleep(down)
            server.start()  # same dir, same port
        back = time.monotonic()

        def ended():
            st = [
                h.s(h.safe(lambda rid=rid: r.hget(f"plankton:{{{rid}}}:run", "status"), ""))
                for rid in run_ids
            ]
            return all(s in ("succeeded", "failed", "cancelled") for s in st) and st

        statuses = wait_for(ended, 60, interval=0.1, what="every run to end")
        ended_after = time.monotonic() - back
        c = h.client(server.url)
        rerun = {}
        for rid, status in zip(run_ids, statuses):
            run = c.status(rid)
            rerun.update(
                {f"{rid}:{t['id']}": t["attempts"] for t in run["tasks"] if t["attempts"] != 1}
            )
            if status == "succeeded":
                assert sorted(run["result"]) == ft.expected_drip(leaves, n), rid
            else:
                assert run["error"], f"run {rid} {status} without a reason"
        c.close()
        assert all(p.poll() is None for p in [sched, *workers]), "a supervisor died"
        restarts = h.log_text(tmp_path).count("restarting (restart")
        with capsys.disabled():
            print(
                f"\nredis restart x2 (1.5 s, 8 s down): runs "
                f"{statuses.count('succeeded')}/{len(run_ids)} "
                f"succeeded, all ended {ended_after:.1f}s after Redis was back; "
                f"worker process restarts: {restarts}"
            )
        assert statuses.count("succeeded") == len(run_ids), statuses
        assert not rerun, f"tasks re-run because of the outages: {rerun}"
        assert ended_after < 30
    finally:
        server.stop()


def test_cli_against_unreachable_redis_fails_fast_and_clearly(tmp_path, private_cluster):
    port = free_port()
    url = f"redis://:s3cretpw@127.0.0.1:{port}/0"
    fc = private_cluster(url)
    for argv in (["run", "simple", "--import", "examples.simple"], ["show", "r1"], ["runs"]):
        t0 = time.monotonic()
        done = fc.cli(*argv, "--url", url, timeout=30)
        took = time.monotonic() - t0
        out = done.stdout + done.stderr
        assert done.returncode != 0, (argv, out)
        assert took < 10, (argv, took)
        assert "Traceback" not in out, out
        assert "s3cretpw" not in out, out
        assert f"127.0.0.1:{port}" in out, out


def test_worker_and_scheduler_started_before_redis_begin_within_5_s(
    tmp_path, private_cluster, rconn
):
    server = RedisServer(tmp_path / "late")
    server.port = free_port()
    fc = private_cluster(server.url)
    sched = fc.scheduler("s0")
    worker = fc.worker("wl")
    time.sleep(3)  # both are up and waiting for Redis
    assert sched.poll() is None and worker.poll() is None
    server.start()
    try:
        up = time.monotonic()
        c = h.client(server.url)
        run = c.wait(c.submit(ft.Bag().add_children(ft.Drip(tag="late", n=3))), timeout=20)
        took = time.monotonic() - up
        assert run["status"] == "succeeded"
        assert took < 5, f"first run took {took:.1f}s after Redis came up"
        c.close()
    finally:
        server.stop()
