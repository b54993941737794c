"""Issue 5 point 3 (DESIGN guarantee 3): effectively-once channels.

RELIABILITY §7 #12: a child fails after emitting part of its output and is retried: the
parent ends up with exactly the successful attempt's values, once, and its own attempt is
restarted when it had consumed values of the failed one. Same when the parent's worker is
SIGKILLed mid-read: the new parent attempt re-reads, and a grandparent that consumed the
lost attempt's output restarts too.
"""

from __future__ import annotations

import random
from collections import Counter

from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h


def test_child_failing_after_partial_output_parent_sees_only_the_retry(fc, redis_url, r):
    fc.scheduler()
    fc.worker("ca")
    fc.worker("cb")
    fc.worker("cq", "--queues", "pq")  # the parents: free to read at once
    rng = random.Random(12)
    ks = [rng.randint(1, 999) for _ in range(10)] + [0, 0]
    n = 1000
    trials = {f"p{j}": k for j, k in enumerate(ks)}
    root = ft.Bag().add_children(
        *(
            ft.TallyQ(tag=tag).add_children(ft.PartialThenFail(tag=tag, k=k, n=n))
            for tag, k in trials.items()
        )
    )
    c = h.client(redis_url)
    run_id = c.submit(root)
    run = c.wait(run_id, timeout=90)
    assert run["status"] == "succeeded", run["error"]
    by_id = {t["id"]: t for t in run["tasks"]}
    ok = 0
    for t in run["tasks"]:
        if t["name"] != "TallyQ":
            continue
        tag = t["params"]["tag"]
        child = next(x for x in run["tasks"] if x["parent"] == t["id"])
        got = Counter(tuple(v) for v in t["result"])
        want = Counter((tag, "a2", i) for i in range(n))
        assert got == want, (
            tag,
            trials[tag],
            len(t["result"]),
            sum(1 for v in t["result"] if v[1] == "a1"),
        )
        assert child["attempts"] == 2
        # it consumed >= 1 value of the failed attempt exactly when k >= 1: then restarted
        assert t["attempts"] == (2 if trials[tag] else 1), (tag, trials[tag], t["attempts"])
        ok += 1
    assert ok == len(trials)
    assert by_id[run["root"]]["attempts"] == 1


def test_parent_worker_killed_mid_read_new_attempt_rereads_and_grandparent_restarts(
    fc, redis_url, r
):
    fc.scheduler()
    fc.worker("dflt")
    fc.worker("pq1", "--queues", "pq")
    h.worker_ready(r, "dflt")
    h.worker_ready(r, "pq1")
    n = 400
    root = ft.Bag().add_children(
        ft.SlowPass(key="mid", delay=0.005).add_children(ft.Drip(tag="d", n=n, pause=0))
    )
    c = h.client(redis_url)
    run_id = c.submit(root)
    h.until(lambda: r.get("pk:test:midread:mid:1"), 20, "the parent to be mid-read")
    pq = next(p for p in fc.procs if "pq1" in p.args)
    h.kill_group(pq)
    fc.worker("pq1", "--queues", "pq")
    run = c.wait(run_id, timeout=40)
    assert run["status"] == "succeeded", run["error"]
    assert sorted(run["result"]) == sorted(["d", k] for k in range(n))  # once each
    slow = next(t for t in run["tasks"] if t["name"] == "SlowPass")
    top = next(t for t in run["tasks"] if t["id"] == run["root"])
    assert slow["attempts"] == 2
    assert top["attempts"] == 2  # it had consumed values of the lost attempt
    assert next(t for t in run["tasks"] if t["name"] == "Drip")["attempts"] == 1
