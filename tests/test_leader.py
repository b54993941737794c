"""Leader lease and fencing epoch, against a real redis-server."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
import redis

from plankton.engine.scripts import FENCE_CHECK
from plankton.errors import Fenced
from plankton.keys import LEADER, LEADER_EPOCH
from plankton.operations.leader import Leadership, fenced_call
from tests.servers import wait_for

LEASE_MS = 300


def holds(leader: Leadership, epoch: int) -> bool:
    """What a fenced write checks: ``leader``'s token holds the lease and ``epoch`` is current."""
    conn = leader.conn
    return (
        conn.get(LEADER) == leader.token.encode() and conn.get(LEADER_EPOCH) == str(epoch).encode()
    )


@pytest.fixture
def pair(r):
    return Leadership(r, "scheduler-a", LEASE_MS), Leadership(r, "scheduler-b", LEASE_MS)


def test_only_one_of_two_schedulers_leads(pair):
    a, b = pair
    assert a.acquire_or_renew() == 1
    assert b.acquire_or_renew() is None
    assert (a.epoch, b.epoch) == (1, None)
    assert holds(a, 1) and not holds(b, 1)


def test_renewing_keeps_the_lease_and_the_epoch_past_the_lease_time(pair, r):
    a, b = pair
    epoch = a.acquire_or_renew()
    deadline = time.monotonic() + 3 * LEASE_MS / 1000
    while time.monotonic() < deadline:
        assert a.acquire_or_renew() == epoch
        assert b.acquire_or_renew() is None
        time.sleep(LEASE_MS / 1000 / 4)
    assert holds(a, epoch)
    assert 0 < r.pttl(LEADER) <= LEASE_MS


def test_the_other_takes_over_when_the_leader_stops_renewing(pair):
    a, b = pair
    first = a.acquire_or_renew()
    started = time.monotonic()
    second = wait_for(b.acquire_or_renew, timeout=5, what="standby takes over")
    assert time.monotonic() - started >= LEASE_MS / 1000 * 0.9  # not before the lease ends
    assert second > first
    assert not holds(a, first)
    assert holds(b, second)


def test_epoch_strictly_increases_on_every_takeover(r):
    leaders = [Leadership(r, f"scheduler-{i}", LEASE_MS) for i in range(3)]
    epochs = []
    for turn in range(6):
        current = leaders[turn % 3]
        epochs.append(wait_for(current.acquire_or_renew, timeout=5, what="takeover"))
    assert epochs == sorted(set(epochs))
    assert epochs == list(range(1, 7))


def test_release_lets_the_other_acquire_at_once(pair):
    a, b = pair
    first = a.acquire_or_renew()
    a.release()
    assert a.epoch is None
    second = b.acquire_or_renew()
    assert second == first + 1
    assert not holds(a, first)


def test_release_by_a_non_holder_changes_nothing(pair):
    a, b = pair
    epoch = a.acquire_or_renew()
    b.release()
    assert holds(a, epoch)
    assert b.acquire_or_renew() is None


def test_a_paused_old_leader_gets_none_after_a_takeover(pair):
    a, b = pair
    old = a.acquire_or_renew()
    new = wait_for(b.acquire_or_renew, timeout=5, what="takeover")  # a is "paused"
    assert a.acquire_or_renew() is None  # a wakes up and tries to renew
    assert a.epoch is None
    assert not holds(a, old)
    assert b.acquire_or_renew() == new and holds(b, new)


def test_a_leader_whose_lease_lapsed_unopposed_starts_a_new_term(pair, r):
    a, _ = pair
    old = a.acquire_or_renew()
    wait_for(lambda: not r.exists(LEADER), timeout=5, what="lease expiry")
    assert a.acquire_or_renew() == old + 1
    assert not holds(a, old)


def test_holds_is_false_for_a_stale_epoch_even_for_the_holder(pair):
    a, _ = pair
    epoch = a.acquire_or_renew()
    assert holds(a, epoch) and not holds(a, epoch - 1) and not holds(a, epoch + 1)


def test_the_lease_is_set_with_server_time_px(pair, r):
    a, _ = pair
    a.acquire_or_renew()
    assert r.get(LEADER) == b"scheduler-a"
    assert 0 < r.pttl(LEADER) <= LEASE_MS
    assert r.get(LEADER_EPOCH) == b"1"


def test_racing_threads_produce_exactly_one_leader_per_epoch(redis_url):
    n_threads, duration = 8, 2.0
    claims: dict[int, set[str]] = defaultdict(set)
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def contend(index: int) -> None:
        conn = redis.Redis.from_url(redis_url)
        me = Leadership(conn, f"thread-{index}", lease_ms=200)
        barrier.wait()
        stop, held = time.monotonic() + duration, 0
        try:
            while time.monotonic() < stop:
                epoch = me.acquire_or_renew()
                if epoch is not None:
                    with lock:
                        claims[epoch].add(me.token)
                held = held + 1 if epoch else 0
                if held >= 3:  # step down now and then so leadership keeps changing hands
                    me.release()
                    held = 0
        finally:
            conn.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    assert len(claims) > 10, "leadership should have changed hands many times"
    assert all(len(tokens) == 1 for tokens in claims.values()), claims
    assert sorted(claims) == list(range(1, max(claims) + 1))  # every INCR was a real term


# -- fencing in other scripts -----------------------------------------------------------------

WRITE_BODY = """
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


def test_fenced_call_runs_the_body_with_the_current_epoch(pair, r):
    a, _ = pair
    epoch = a.acquire_or_renew()
    assert fenced_call(r, epoch, WRITE_BODY, ["plankton:test:out"], ["hello"]) == b"hello"
    assert r.get("plankton:test:out") == b"hello"


def test_fenced_call_refuses_a_superseded_epoch_and_writes_nothing(pair, r):
    a, b = pair
    old = a.acquire_or_renew()
    a.release()
    b.acquire_or_renew()
    with pytest.raises(Fenced, match="FENCED"):
        fenced_call(r, old, WRITE_BODY, ["plankton:test:out"], ["late"])
    assert r.get("plankton:test:out") is None


def test_fence_check_snippet_can_be_embedded_in_any_script(pair, r):
    a, b = pair
    script = r.register_script(
        FENCE_CHECK
        + """
local fenced = plankton_fence(KEYS[1], ARGV[1]); if fenced then return fenced end
return redis.call('INCR', KEYS[2])
"""
    )
    old = a.acquire_or_renew()
    assert script(keys=[LEADER_EPOCH, "plankton:test:n"], args=[old]) == 1
    a.release()
    b.acquire_or_renew()
    with pytest.raises(redis.ResponseError, match="^FENCED"):
        script(keys=[LEADER_EPOCH, "plankton:test:n"], args=[old])
    assert r.get("plankton:test:n") == b"1"


def test_fenced_call_passes_other_script_errors_through(pair, r):
    a, _ = pair
    epoch = a.acquire_or_renew()
    with pytest.raises(redis.ResponseError) as info:
        fenced_call(r, epoch, "return redis.error_reply('BOOM')", [], [])
    assert not isinstance(info.value, Fenced) and "BOOM" in str(info.value)
