"""Issue 5 point 4 (DESIGN guarantee 5): scheduler loss.

RELIABILITY §7 #3: SIGKILL the scheduler mid-run at several points and start a new one: the
run completes, no (task, attempt) is enqueued twice (the ``plankton:{R}:enq`` audit hash
counts every enqueue), no task is restarted because of the kills, and the new scheduler
resumes (leads) within 5 s. The DAG has tasks that fail twice, so the scheduler has retries
to promote while it is being killed.
"""

from __future__ import annotations

import random
import time

from plankton import keys
from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h


def test_scheduler_sigkill_and_restart_mid_run(fc, redis_url, r):
    sched = fc.scheduler("s0")
    fc.worker("wa")
    fc.worker("wb")
    h.worker_ready(r, "wa")
    h.worker_ready(r, "wb")
    h.until(lambda: h.s(r.get(keys.LEADER)).startswith("s0-"), 10, "s0 to lead")
    groups, per = 20, 9
    root = ft.Bag().add_children(
        *(
            ft.Pass().add_children(
                *(ft.Drip(tag=f"g{g}l{i}", n=5, pause=0.01, every=1) for i in range(per))
            )
            for g in range(groups)
        ),
        *(ft.FailsTwice(key=f"ft{i}") for i in range(3)),
    )
    c = h.client(redis_url)
    run_id = c.submit(root)
    n_tasks = int(r.hget(keys.run(run_id), "n_tasks"))
    assert n_tasks == 1 + groups * (per + 1) + 3
    rng = random.Random(3)
    resume = []
    for k in range(1, 4):
        time.sleep(rng.uniform(0.3, 1.2))
        h.kill_group(sched)
        time.sleep(rng.uniform(0.0, 1.0))  # down for a moment
        t0 = time.monotonic()
        sched = fc.scheduler(f"s{k}")
        h.until(lambda: h.s(r.get(keys.LEADER)).startswith(f"s{k}-"), 10, f"s{k} to lead")
        resume.append(time.monotonic() - t0)
    run = c.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    want = sorted(
        [[f"g{g}l{i}", k] for g in range(groups) for i in range(per) for k in range(5)] + [3, 3, 3],
        key=repr,
    )
    assert sorted(run["result"], key=repr) == want
    enq = {h.s(k): int(v) for k, v in r.hgetall(keys.enqueue_log(run_id)).items()}
    assert max(enq.values()) == 1, {k: v for k, v in enq.items() if v > 1}
    attempts = {t["id"]: t["attempts"] for t in run["tasks"]}
    fails_twice = {t["id"] for t in run["tasks"] if t["name"] == "FailsTwice"}
    assert all(attempts[t] == 3 for t in fails_twice)
    restarted = {t: a for t, a in attempts.items() if t not in fails_twice and a != 1}
    assert not restarted, f"tasks restarted because of the scheduler kills: {restarted}"
    # every attempt that ran was enqueued exactly once (the root and relays may have been
    # claimed by the worker that started their last child, without an RQ trip)
    for t in fails_twice:
        assert [enq.get(f"{t}:{a}") for a in (1, 2, 3)] == [1, 1, 1]
    assert max(resume) < 5, resume
