"""Issue 5 point 6: ``plankton cancel RUN``.

The run ends ``cancelled`` at once; queued tasks never start; running ones stop within a few
seconds (a cooperative task through the in-process stop, one stuck in a C call through a
worker restart); every task ends in a final state; the workers go on serving.
"""

from __future__ import annotations

import time

from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h


def test_cancel_drops_queued_tasks_and_stops_running_ones(fc, redis_url, r):
    fc.start(["ka", "kb"])
    pids = {n: h.worker_ready(r, n) for n in ("ka", "kb")}
    c = h.client(redis_url)
    root = ft.Bag().add_children(
        ft.LongBeat(key="coop", seconds=60),
        ft.LongSleep(key="stuck", seconds=60),
        *(ft.Warm(key=f"q{i}", seconds=5) for i in range(6)),
    )
    run_id = c.submit(root)
    h.until(lambda: h.starts(r, "coop") and h.starts(r, "stuck"), 15, "both long tasks to run")
    stuck_pid = h.starts(r, "stuck")[0][2]
    t0 = time.monotonic()
    done = fc.cli("cancel", run_id)
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    assert h.run_status(r, run_id) == "cancelled"
    h.until(lambda: h.stops(r, "coop"), 5, "the cooperative task to stop")
    coop_stopped = time.monotonic() - t0
    h.until(lambda: not h.pid_alive(stuck_pid), 6, "the stuck task's worker process to go")
    stuck_stopped = time.monotonic() - t0
    # every task ends in a final state; queued ones never ran
    final = {"succeeded", "failed", "cancelled"}
    n = int(r.hget(f"plankton:{{{run_id}}}:run", "n_tasks"))
    h.until(
        lambda: all(h.task(r, run_id, str(i))["state"] in final for i in range(n)),
        10,
        "every task to be settled",
    )
    assert all(r.get(f"pk:test:exec:q{i}") is None for i in range(6))
    assert coop_stopped < 3 and stuck_stopped < 5, (coop_stopped, stuck_stopped)
    # both workers still serve (the stuck one through a fresh process, same name)
    for name in pids:
        h.worker_ready(r, name)
    h.until(
        lambda: h.worker_ready(r, next(n for n, p in pids.items() if p == stuck_pid)) != stuck_pid,
        10,
        "the restarted worker process to register",
    )
    runs = [
        c.submit(ft.Bag().add_children(*(ft.Drip(tag=f"after{j}-{i}", n=2) for i in range(4))))
        for j in range(4)
    ]
    for rid in runs:
        assert c.wait(rid, timeout=20)["status"] == "succeeded"
