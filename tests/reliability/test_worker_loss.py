"""Issue 5 point 2 (DESIGN guarantee 4): worker loss.

RELIABILITY §7 #1 (SIGKILL of a worker's whole process group mid-task: detected within
lease + 2 x reaper, retried, run completes, parent sees every value once), #1b (SIGKILL of
the supervisor only: the orphan worker process stops itself within 2 x heartbeat and its
attempt is re-run; nothing from the old attempt is accepted), #2 (SIGTERM: warm shutdown
finishes the task, dequeues nothing new, exits 0; a second SIGTERM is a cold shutdown that
hands the task back at once), plus: a live worker never loses the attempts it holds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time

from plankton import keys
from plankton.engine.transport import batch_size
from plankton.settings import Settings
from tests.cluster import FAST
from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h

LEASE = int(FAST["PLANKTON_LEASE_MS"]) / 1000
REAPER = float(FAST["PLANKTON_REAPER_INTERVAL"])


def _held_by(r, worker: str) -> dict[tuple[str, str], str]:
    """(run, task) -> attempt of every attempt ``worker`` holds a lease for right now."""
    held = {}
    for raw in r.smembers(keys.ACTIVE):
        run_id = h.s(raw)
        for t in r.zrange(keys.leases(run_id), 0, -1):
            tid = h.s(t)
            state, attempt, who = r.hmget(keys.task(run_id, tid), "state", "attempt", "worker")
            if h.s(state) == "running" and h.s(who) == worker:
                held[(run_id, tid)] = h.s(attempt)
    return held


def _detect(r, held: dict, timeout: float) -> float:
    """Seconds until every held attempt was declared lost (its attempt number moved on)."""
    t0 = time.monotonic()
    left = dict(held)
    while left:
        for (run_id, tid), attempt in list(left.items()):
            now_attempt = h.s(r.hget(keys.task(run_id, tid), "attempt"))
            if now_attempt != attempt:
                del left[(run_id, tid)]
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"attempts not detected lost after {timeout}s: {left}")
        time.sleep(0.01)
    return time.monotonic() - t0


def test_sigkill_of_worker_process_groups_mid_stream(fc, redis_url, r, capsys):
    """Three 3-level streaming runs on two workers; four times, SIGKILL the process group of a
    worker that holds a running attempt, and restart it under the same name."""
    fc.scheduler()
    names = ["wa", "wb"]
    procs = {n: fc.worker(n) for n in names}
    for n in names:
        h.worker_ready(r, n)
    c = h.client(redis_url)
    leaves, n = 6, 200
    run_ids = [
        c.submit("drip_tree", params={"leaves": leaves, "n": n, "pause": 0.05}) for _ in range(3)
    ]
    rng = random.Random(5)
    latencies = []
    for _ in range(4):
        time.sleep(rng.uniform(0.5, 1.5))
        victim, held = None, {}
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            victim = rng.choice(names)
            held = {k: a for k, a in _held_by(r, victim).items()}
            if not held:
                time.sleep(0.05)
        if not held:
            break  # the runs are done
        h.kill_group(procs[victim])
        latencies.append(_detect(r, held, LEASE + 2 * REAPER + 5))
        procs[victim] = fc.worker(victim)  # same name: must be able to take over
    assert len(latencies) >= 3, "the runs ended before the kills"
    for run_id in run_ids:
        run = c.wait(run_id, timeout=60)
        assert run["status"] == "succeeded", run["error"]
        got = sorted(run["result"])
        assert got == ft.expected_drip(leaves, n)  # none lost, none twice
    figures = {
        "kills": len(latencies),
        "detect_median_s": round(statistics.median(latencies), 3),
        "detect_max_s": round(max(latencies), 3),
        "lease_s": LEASE,
        "reaper_s": REAPER,
    }
    with capsys.disabled():
        print("\nworker SIGKILL detection:", json.dumps(figures))
    assert max(latencies) < LEASE + 2 * REAPER, figures


def test_default_settings_detect_a_killed_worker_within_60_s(fc, redis_url, r, capsys):
    d = Settings()
    fc.env_extra = {
        "PLANKTON_LEASE_MS": str(d.lease_ms),
        "PLANKTON_HEARTBEAT": str(d.heartbeat),
        "PLANKTON_REAPER_INTERVAL": str(d.reaper_interval),
        "PLANKTON_LEADER_LEASE_MS": str(d.leader_lease_ms),
    }
    fc.scheduler()
    a = fc.worker("da")
    h.worker_ready(r, "da")
    c = h.client(redis_url)
    run_id = c.submit(ft.LongSleep(key="dflt", seconds=120))
    h.until(lambda: h.starts(r, "dflt"), 15, "attempt 1 to start")
    held = _held_by(r, "da")
    assert held
    h.kill_group(a)
    fc.worker("db")
    took = _detect(r, held, 60)
    run = c.wait(run_id, timeout=30)
    assert run["status"] == "succeeded" and run["result"] == "attempt 2"
    with capsys.disabled():
        print(
            f"\ndefault settings: killed worker detected after {took:.1f}s "
            f"(lease {d.lease_ms / 1000}s)"
        )
    assert took < 60


def test_sigkill_of_the_supervisor_only_the_orphan_stops_and_is_fenced(fc, redis_url, r):
    fc.scheduler()
    procs = {n: fc.worker(n) for n in ("oa", "ob")}
    pids = {n: h.worker_ready(r, n) for n in procs}
    c = h.client(redis_url)
    run_id = c.submit(ft.Bag().add_children(ft.LongBeat(key="orph", seconds=20)))
    h.until(lambda: r.get("pk:test:pid:orph:1"), 15, "attempt 1 to start")
    time.sleep(0.5)  # it has emitted a few values
    pid = int(r.get("pk:test:pid:orph:1"))
    victim = next(n for n, p in pids.items() if p == pid)
    procs[victim].kill()  # SIGKILL the supervisor's PID alone
    procs[victim].wait(5)
    killed = time.monotonic()
    heartbeat = float(FAST["PLANKTON_HEARTBEAT"])
    h.until(lambda: not h.pid_alive(pid), 2 * heartbeat, "the orphan worker process to exit")
    orphan_gone = time.monotonic() - killed
    run = c.wait(run_id, timeout=30)
    assert run["status"] == "succeeded", run["error"]
    attempts = {v[0] for v in run["result"]}
    assert attempts == {2}, f"values of attempts {attempts} reached the parent"
    assert [a for _, a, _ in h.starts(r, "orph")] == [1, 2]
    assert orphan_gone < 2 * heartbeat


def test_sigterm_is_a_warm_shutdown(fc, redis_url, r):
    """Four workers, one queue each; SIGTERM each at a random moment of a 2 s task: the task
    finishes in attempt 1, nothing new is dequeued, the worker exits 0; the task queued
    behind it is run later by a fresh worker."""
    fc.scheduler()
    queues = range(ft.WARM_QUEUES)
    procs = {i: fc.worker(f"warm{i}", "--queues", f"warm{i}") for i in queues}
    for i in queues:
        h.worker_ready(r, f"warm{i}")
    c = h.client(redis_url)
    cls = {i: getattr(ft, f"Warm{i}") for i in queues}
    first = {i: c.submit(cls[i](key=f"a{i}", seconds=2.0)) for i in queues}
    second = {i: c.submit(cls[i](key=f"b{i}", seconds=0.2)) for i in queues}
    rng = random.Random(7)
    for i in queues:
        h.until(lambda: h.starts(r, f"a{i}"), 15, f"task a{i} to start")
    order = list(queues)
    rng.shuffle(order)
    t0 = time.monotonic()
    for i in order:
        time.sleep(max(0.0, t0 + rng.uniform(0.1, 1.5) - time.monotonic()))
        procs[i].send_signal(signal.SIGTERM)
    for i in queues:
        assert procs[i].wait(15) == 0
        assert r.get(f"pk:test:exec:a{i}") == b"1"
        assert r.get(f"pk:test:finished:a{i}") == b"1"  # finished in attempt 1
        assert r.get(f"pk:test:exec:b{i}") is None  # nothing new dequeued
        assert c.wait(first[i], timeout=5)["status"] == "succeeded"
    for i in queues:
        fc.worker(f"warm{i}", "--queues", f"warm{i}")
    for i in queues:
        run = c.wait(second[i], timeout=30)
        assert run["status"] == "succeeded" and run["tasks"][0]["attempts"] == 1


def test_second_sigterm_is_a_cold_shutdown_that_hands_tasks_back(fc, redis_url, r):
    """A leaf (runs on the dequeue thread) and a parent (runs on a pool thread), both stuck in
    a 30 s C call: two SIGTERMs stop the worker at once, and both are re-run elsewhere."""
    fc.env_extra = {"PLANKTON_KILL_GRACE": "5"}  # the in-process stop is not what acts
    fc.scheduler()
    a = fc.worker("ca")
    h.worker_ready(r, "ca")
    c = h.client(redis_url)
    parent_run = c.submit(
        ft.SleepyParent(key="cold-parent", seconds=30).add_children(ft.Drip(tag="x", n=3))
    )
    h.until(lambda: h.starts(r, "cold-parent"), 15, "the parent to start")
    leaf_run = c.submit(ft.LongSleep(key="cold-leaf", seconds=30))
    h.until(lambda: h.starts(r, "cold-leaf"), 15, "the leaf to start")
    a.send_signal(signal.SIGTERM)
    time.sleep(1.2)
    a.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert a.wait(10) == 0
    stopped_after = time.monotonic() - t0
    fc.worker("cb")
    for run_id in (leaf_run, parent_run):
        run = c.wait(run_id, timeout=20)
        assert run["status"] == "succeeded", run["error"]
    assert [x for _, x, _ in h.starts(r, "cold-leaf")] == [1, 2]
    assert [x for _, x, _ in h.starts(r, "cold-parent")] == [1, 2]
    assert stopped_after < 2, f"cold shutdown took {stopped_after:.1f}s"


def test_a_live_worker_never_loses_the_attempts_it_holds(fc, redis_url, r):
    """One worker gets batches of several leaves per RQ job; one leaf runs 4.5 s (longer than
    the 3 s lease). The leaves claimed with it, finished before it or waiting behind it, must
    keep their leases: no attempt may be declared lost while its worker is alive."""
    leaves = 48
    assert batch_size(leaves, 1) >= 3, "premise: several leaves per RQ job"
    fc.start(["live"])
    h.worker_ready(r, "live")
    c = h.client(redis_url)
    root = ft.Bag().add_children(
        *(ft.Warm(key=f"l{i}", seconds=4.5 if i == 1 else 0.01) for i in range(leaves))
    )
    run = c.wait(c.submit(root), timeout=60)
    assert run["status"] == "succeeded", run["error"]
    lost = {t["name"] + t["id"]: t["attempts"] for t in run["tasks"] if t["attempts"] != 1}
    assert not lost, f"attempts declared lost on a live worker: {lost}"
    for i in range(leaves):
        assert r.get(f"pk:test:exec:l{i}") == b"1"


def test_worker_dying_between_dequeue_and_start_its_job_is_delivered_again(fc, redis_url, r):
    """A worker's BLMOVE moved a job to the intermediate list and the worker died before
    claiming its attempts (simulated: the LMOVE is done here, with no worker running). The
    scheduler must deliver it again; the run must not hang."""
    fc.scheduler()
    c = h.client(redis_url)
    run_id = c.submit(ft.Bag().add_children(ft.Drip(tag="a", n=3), ft.Drip(tag="b", n=3)))
    queued = r.lrange("rq:queue:default", 0, -1)
    assert queued
    moved = r.lmove("rq:queue:default", "rq:queue:default:intermediate", "LEFT", "RIGHT")
    assert moved is not None
    fc.worker("late")
    run = c.wait(run_id, timeout=LEASE + 15)
    assert run["status"] == "succeeded", run["error"]
    assert sorted(run["result"]) == sorted([t, k] for t in "ab" for k in range(3))
    assert r.llen("rq:queue:default:intermediate") == 0
    enq = {h.s(k): int(v) for k, v in r.hgetall(keys.enqueue_log(run_id)).items()}
    assert max(enq.values()) == 1
    assert all(t["attempts"] == 1 for t in run["tasks"])


def test_sigkill_of_the_worker_process_only_supervisor_restarts_it(fc, redis_url, r):
    """SIGKILL of the worker process under a live supervisor: the supervisor starts a fresh
    one under the same name at once, the lost attempt is detected within the lease bound
    and re-run, and the run completes."""
    fc.scheduler()
    sup = fc.worker("inner")
    pid = h.worker_ready(r, "inner")
    c = h.client(redis_url)
    run_id = c.submit(ft.Bag().add_children(ft.LongSleep(key="inner", seconds=30)))
    h.until(lambda: h.starts(r, "inner"), 15, "attempt 1 to start")
    held = _held_by(r, "inner")
    assert held
    os.kill(pid, signal.SIGKILL)
    took = _detect(r, held, LEASE + 2 * REAPER + 5)
    run = c.wait(run_id, timeout=20)
    assert run["status"] == "succeeded", run["error"]
    leaf = next(t for t in run["tasks"] if t["name"] == "LongSleep")
    assert leaf["result"] == "attempt 2"
    assert [a for _, a, _ in h.starts(r, "inner")] == [1, 2]
    assert h.worker_ready(r, "inner") != pid and sup.poll() is None
    assert took < LEASE + 2 * REAPER
