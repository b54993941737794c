"""Issue 5 point 7 (DESIGN guarantee 2): bounded channels.

RELIABILITY §7 #21: channel cap 1,000, a child emits 50,000 values as fast as it can, the
parent is slow: while the parent runs (the contract), the unread count (produced - read,
sampled from Redis all along) never goes over cap + one emit batch; the parent gets all
50,000 values (0 dropped, none twice); Redis memory stays bounded. The child starts
emitting once its parent runs: before that, a channel is not bounded (DESIGN guarantee 2).
"""

from __future__ import annotations

import threading

from plankton import keys
from plankton.engine.channel import batch_values
from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h

CAP = 1000
N = 50_000


def _wait_sampling(c, sampler, run_id, parent, only_running=True):
    """Wait for the run while sampling the parent's unread count (and Redis memory).

    Returns (run, {"unread": max unread, "samples": n, "mem": max used_memory})."""
    peak = {"unread": 0, "samples": 0, "mem": 0}
    stop = threading.Event()

    def sample():
        key = keys.task(run_id, parent)
        while not stop.is_set():
            state, produced, read = sampler.hmget(key, "state", "produced", "ch_read")
            if not only_running or h.s(state) == "running":
                unread = int(produced or 0) - int(read or 0)
                peak["unread"] = max(peak["unread"], unread)
                peak["samples"] += 1
            if peak["samples"] % 200 == 0:
                peak["mem"] = max(peak["mem"], int(sampler.info("memory")["used_memory"]))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        run = c.wait(run_id, timeout=60)
    finally:
        stop.set()
        t.join(5)
    return run, peak


def test_slow_parent_bounds_a_fast_child_and_nothing_is_dropped(fc, redis_url, r, rconn, capsys):
    fc.start(["ba", "bb"], env={"PLANKTON_CHANNEL_CAP": str(CAP)})
    h.worker_ready(r, "ba")
    h.worker_ready(r, "bb")
    used_before = int(r.info("memory")["used_memory"])
    r.config_resetstat()
    c = h.client(redis_url)
    run_id = c.submit(ft.Sip(nap=0.001, every=25).add_children(ft.Burst(n=N)))
    parent = h.task_ids(r, run_id, "Sip")[0]
    run, peak = _wait_sampling(c, rconn(redis_url), run_id, parent)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [N, N * (N - 1) // 2]  # all delivered, none twice
    peak_mem = int(r.info("memory")["used_memory_peak"])
    with capsys.disabled():
        print(
            f"\nchannel cap {CAP}: max unread {peak['unread']} over {peak['samples']} "
            f"samples; used_memory {used_before} -> peak {peak_mem} bytes"
        )
    assert peak["samples"] > 100
    assert peak["unread"] <= CAP + batch_values(CAP), peak
    # the whole 50,000-value stream held at once would be ~0.5 MB of channel entries more
    # than the bounded one; the bound keeps the sampled peak well below that
    assert peak["mem"] - used_before < 8 * 1024 * 1024


def test_single_worker_still_bounds_the_channel(fc, redis_url, r, rconn):
    fc.start(["solo"], env={"PLANKTON_CHANNEL_CAP": str(CAP)})
    h.worker_ready(r, "solo")
    c = h.client(redis_url)
    run_id = c.submit(ft.Sip(nap=0.001, every=25).add_children(ft.Burst(n=N, wait=False)))
    parent = h.task_ids(r, run_id, "Sip")[0]
    run, peak = _wait_sampling(c, rconn(redis_url), run_id, parent, only_running=False)
    assert run["result"] == [N, N * (N - 1) // 2]
    assert peak["unread"] <= CAP + batch_values(CAP), f"{peak['unread']} values unread at once"
