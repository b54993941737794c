"""Where a leaf's consumer runs (PLANKTON_CLAIM_PARENTS=1, the default).

A leaf's parent goes through RQ, so a free worker runs it beside its producer, in another
process (not under the producer's GIL). If no worker takes it within ``ADOPT_AFTER_MS`` (its
producers held to the cap meanwhile), the producer's worker starts it itself ("adopts" it):
the channel stays bounded and nobody waits for a consumer that no worker is free to run. A
consumer that no worker here may run (its queue is served elsewhere) leaves its producer
unbounded until it starts, as DESIGN guarantee 2 allows: the producer never waits on it.
"""

from __future__ import annotations

from plankton.engine.channel import batch_values
from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h
from tests.reliability.test_channel_bounds import _wait_sampling

CAP = 1000
N = 20_000


def _workers(r, run_id):
    return {
        h.s(r.hget(f"plankton:{{{run_id}}}:t:{t}", "name")): h.s(
            r.hget(f"plankton:{{{run_id}}}:t:{t}", "worker")
        )
        for t in range(int(r.hget(f"plankton:{{{run_id}}}:run", "n_tasks")))
    }


def _busy_elsewhere(fc, r, here: str, **env: str) -> None:
    """A scheduler, worker ``here`` on the default queue and a worker on queue "other": live
    (so no worker is alone), never free for the default queue's jobs."""
    fc.env_extra = dict(env)
    fc.scheduler()
    fc.worker(here, "--queues", "default")
    fc.worker(f"{here}-other", "--queues", "other")
    h.worker_ready(r, here)
    h.worker_ready(r, f"{here}-other")


def test_a_free_worker_runs_the_consumer_beside_its_producer(fc, redis_url, r):
    fc.start(["pa", "pb"])
    h.worker_ready(r, "pa")
    h.worker_ready(r, "pb")
    c = h.client(redis_url)
    # the producer waits for its parent to run before emitting: only the other worker (the
    # producer's is busy running it) can start the parent
    run_id = c.submit(ft.Sip(nap=0, every=1000).add_children(ft.Burst(n=5000)))
    run = c.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [5000, 5000 * 4999 // 2]
    where = _workers(r, run_id)
    assert where["Sip"] != where["Burst"], where


def test_a_producer_with_no_free_worker_starts_its_consumer_and_stays_bounded(
    fc, redis_url, r, rconn
):
    _busy_elsewhere(fc, r, "only", PLANKTON_CHANNEL_CAP=str(CAP))
    c = h.client(redis_url)
    run_id = c.submit(ft.Sip(nap=0.001, every=50).add_children(ft.Burst(n=N, wait=False)))
    parent = h.task_ids(r, run_id, "Sip")[0]
    run, peak = _wait_sampling(c, rconn(redis_url), run_id, parent, only_running=False)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [N, N * (N - 1) // 2]  # all delivered, none twice
    assert _workers(r, run_id) == {"Sip": "only", "Burst": "only"}
    # while the parent waited in RQ and after it started, the channel held at most the cap
    # and one batch (with no bound before it starts: all 20,000 values)
    assert peak["samples"] > 50
    assert peak["unread"] <= CAP + batch_values(CAP), peak


def test_a_consumer_no_worker_here_may_run_never_blocks_its_producer(fc, redis_url, r):
    _busy_elsewhere(fc, r, "near", PLANKTON_CHANNEL_CAP=str(CAP))
    c = h.client(redis_url)
    n = 5 * CAP
    run_id = c.submit(ft.SipElsewhere(nap=0, every=1000).add_children(ft.Burst(n=n, wait=False)))
    burst, sip = h.task_ids(r, run_id, "Burst")[0], h.task_ids(r, run_id, "SipElsewhere")[0]
    key = f"plankton:{{{run_id}}}:t:"
    # the producer finishes although its channel is over the cap: its consumer's queue has no
    # worker, and it is not this worker's to start
    h.until(lambda: h.s(r.hget(key + burst, "state")) == "succeeded", 30, "the producer's end")
    assert h.s(r.hget(key + sip, "state")) == "queued"
    assert int(r.hget(key + sip, "produced")) == n
    fc.worker("far", "--queues", "elsewhere")
    run = c.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [n, n * (n - 1) // 2]
    assert _workers(r, run_id) == {"SipElsewhere": "far", "Burst": "near"}


def test_a_consumer_left_waiting_by_busy_workers_starts_beside_a_slow_producer(fc, redis_url, r):
    _busy_elsewhere(fc, r, "only")
    c = h.client(redis_url)
    # 200 values over ~0.4 s, far under the cap: the consumer is started by the producer's
    # worker once it has waited ADOPT_AFTER_MS in RQ, and reads while the producer emits
    run_id = c.submit(ft.Bag().add_children(ft.Drip(tag="d", n=200, pause=0.02, every=10)))
    run = c.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert sorted(v[1] for v in run["result"]) == list(range(200))
    key = f"plankton:{{{run_id}}}:t:"
    bag, drip = h.task_ids(r, run_id, "Bag")[0], h.task_ids(r, run_id, "Drip")[0]
    started = int(r.hget(key + bag, "started_at"))
    producer_ended = int(r.hget(key + drip, "ended_at"))
    assert started < producer_ended - 200, (started, producer_ended)
    assert _workers(r, run_id) == {"Bag": "only", "Drip": "only"}
