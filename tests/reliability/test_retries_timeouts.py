"""Issue 5 point 1: per-task retries (exponential backoff with jitter) and timeouts.

RELIABILITY §7 #10 (timeout: stopped within timeout + 2 s, or + 5 s when the task ignores
the in-process stop; attempts = retries + 1) and #11 (retry exhaustion: exactly retries + 1
attempts, growing gaps, run failed, parent UpstreamFailed).
"""

from __future__ import annotations

from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h

#: Retry base for the backoff test (s): big enough that growth beats the reaper tick.
BASE = 0.4


def test_retry_exhaustion_makes_exactly_retries_plus_one_attempts_with_growing_gaps(
    fc, redis_url, r
):
    fc.start(env={"PLANKTON_RETRY_BASE": str(BASE), "PLANKTON_RETRY_CAP": "10"})
    c = h.client(redis_url)
    run_id = c.submit(ft.Bag().add_children(ft.AlwaysFails(key="ex")))
    run = c.wait(run_id, timeout=30)
    assert run["status"] == "failed"
    att = h.starts(r, "ex")
    assert [a for _, a, _ in att] == [1, 2, 3, 4]  # retries=3 -> 4 attempts exactly
    assert int(r.get("pk:test:exec:ex")) == 4
    gaps = [(b[0] - a[0]) / 1000 for a, b in zip(att, att[1:])]
    # backoff n = BASE * 2^(n-1) * [0.5, 1.0]; the reaper promotes due retries every 0.3 s
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.5 * BASE * 2 ** (n - 1) - 0.02, gaps
        assert gap <= BASE * 2 ** (n - 1) + 0.3 + 0.5, gaps
    assert gaps[2] > gaps[0], gaps
    leaf = next(t for t in run["tasks"] if t["name"] == "AlwaysFails")
    assert leaf["state"] == "failed" and leaf["attempts"] == 4
    assert "ValueError: attempt 4 fails" in leaf["error"]
    root = next(t for t in run["tasks"] if t["name"] == "Bag")
    assert root["state"] == "failed" and "UpstreamFailed" in root["error"]


def test_transient_failures_are_retried_and_the_run_succeeds(fc, redis_url, r):
    fc.start()
    c = h.client(redis_url)
    run = c.wait(c.submit(ft.Bag().add_children(ft.FailsTwice(key="tw"))), timeout=30)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == [3]  # only the successful attempt's value
    assert [a for _, a, _ in h.starts(r, "tw")] == [1, 2, 3]
    leaf = next(t for t in run["tasks"] if t["name"] == "FailsTwice")
    assert leaf["attempts"] == 3 and leaf["state"] == "succeeded"


def test_timeout_stops_the_attempt_retries_it_then_fails_it(fc, redis_url, r):
    fc.start()
    c = h.client(redis_url)
    run = c.wait(c.submit(ft.Naps(key="nap", seconds=30)), timeout=30)
    assert run["status"] == "failed"
    # the run ends as the attempt is failed; its thread stops right after
    h.until(lambda: len(h.stops(r, "nap")) == 2, 3, "attempt 2 to stop")
    att, stopped = h.starts(r, "nap"), dict((a, ms) for ms, a in h.stops(r, "nap"))
    assert [a for _, a, _ in att] == [1, 2]  # timeout=1, retries=1
    for ms, attempt, _ in att:
        # the worker's clock for the timeout starts just before run() records its start (a
        # Redis write), so a stop on time can read a few ms under 1 s (CI saw 0.999)
        took = (stopped[attempt] - ms) / 1000
        assert 1.0 - 0.05 <= took <= 1.0 + 2.0, f"attempt {attempt} stopped after {took:.3f}s"
    t = run["tasks"][0]
    assert t["state"] == "failed" and t["attempts"] == 2
    assert "TimeoutError" in t["error"] and "timeout of 1.0s" in t["error"]


def test_timeout_of_a_task_that_ignores_the_stop_restarts_the_worker_and_is_retried(
    fc, redis_url, r
):
    """time.sleep(30) in one C call cannot be interrupted in-process: the worker process
    must hand back, exit and be restarted by its supervisor (same worker name), which then
    runs attempt 2."""
    fc.scheduler()
    w = fc.worker("solo")
    first_pid = h.worker_ready(r, "solo")
    c = h.client(redis_url)
    run_id = c.submit(ft.Stubborn(key="stub", seconds=30, long_attempts=1))
    start_ms = h.until(
        lambda: h.starts(r, "stub") and h.starts(r, "stub")[0][0], 15, "attempt 1 to start"
    )
    h.until(lambda: not h.pid_alive(first_pid), 1.0 + 5.0 + 1, "the worker process to stop")
    gone_ms = h.redis_ms(r)
    assert (gone_ms - start_ms) / 1000 <= 1.0 + 5.0
    run = c.wait(run_id, timeout=20)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == "attempt 2"
    assert [a for _, a, _ in h.starts(r, "stub")] == [1, 2]
    assert w.poll() is None  # the supervisor is still there
    assert h.worker_ready(r, "solo") != first_pid  # and runs a fresh worker process
