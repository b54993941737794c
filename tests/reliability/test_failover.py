"""Issue 18: Redis high availability over many hosts (the bed of ``tests/reliability/hosts.py``).

Four network-namespace hosts on a bridge: the master on host 0, its replica on host 1, three
sentinels on hosts 0-2, a worker on every host and the scheduler on host 2; every process
(and the test's client) is given the same ``redis+sentinel://`` URL.

- ``test_master_sigkill_mid_stream``: streaming runs (leaves emit ``[tag, k]``, relays pass
  them on, the root returns the multiset it read) are in flight when the master is SIGKILLed.
  The sentinels promote the replica; every process finds it through them with no restart.
  Every run succeeds with exactly the expected multiset (0 values lost, 0 duplicated), no
  attempt executed twice at once (journal kept outside Redis, ``tests/dags/rollback_tasks.py``),
  no process died. Reported: failover time, and the time from the kill to the first task
  finishing on the new master. Then the old master is restarted as a replica of the new one
  and must catch up (its copy holds the finished runs).
- ``test_worker_host_cut``: a host whose worker runs leaves is cut off (packets dropped);
  its attempts are re-run on other hosts after the lease and every run still returns exactly
  its multiset; healed, the host's worker serves again.

Run: ``.venv/bin/pytest -q -s tests/reliability/test_failover.py`` (needs root; skipped
otherwise). The longer soak and the scaling figures: ``python -m benchmarks.multihost``.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest
import redis

import plankton as pk
from plankton import keys
from tests.dags import rollback_tasks as rt
from tests.reliability import helpers as h
from tests.reliability.hosts import Bed, RedisHA, now_ms, skip_reason
from tests.servers import wait_for

IMPORTS = [rt.__name__]
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def bed(tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    made = Bed(4, tmp_path).open()
    try:
        yield made
    finally:
        made.close()
    assert not Path(f"/run/netns/{made.hosts[0].name}").exists()


def _stack(bed: Bed, url: str, journal: Path) -> list:
    """A worker on each host, the scheduler on host 2."""
    env = {rt.JOURNAL_ENV: str(journal)}
    procs = [bed.scheduler(bed.hosts[2], url, "sched", IMPORTS, **env)]
    procs += [bed.worker(host, url, f"w{i}", IMPORTS, **env) for i, host in enumerate(bed.hosts)]
    return procs


def _task_field(r: redis.Redis, run_id: str, tid: str, name: str) -> str:
    return h.s(h.safe(lambda: r.hget(keys.task(run_id, tid), name), ""))


def _leaves(r: redis.Redis, run_ids: list[str]) -> list[tuple[str, str]]:
    return [(rid, tid) for rid in run_ids for tid in h.task_ids(r, rid, "RbLeaf")]


def _overlaps(journal: Path) -> list[str]:
    """(run, task, attempt) executed twice at once, from the journal kept outside Redis."""
    spans: dict[tuple[str, str, str], list[list[float]]] = collections.defaultdict(list)
    open_: dict[tuple[str, str, str, str], float] = {}
    for line in journal.read_text().splitlines() if journal.exists() else []:
        at, run_id, tid, attempt, who, event = line.split()
        key = (run_id, tid, attempt)
        if event == "start":
            open_[(*key, who)] = float(at)
        else:
            spans[key].append([open_.pop((*key, who), 0.0), float(at)])
    for (run_id, tid, attempt, _), begun in open_.items():
        spans[(run_id, tid, attempt)].append([begun, float("inf")])
    out = []
    for key, ss in spans.items():
        ss.sort()
        if any(b[0] < a[1] for a, b in zip(ss, ss[1:])):
            out.append("/".join(key))
    return out


def _check_results(c: pk.Client, names: dict[str, str], shape: dict[str, int]) -> dict:
    dup = lost = 0
    attempts = {}
    for name, rid in names.items():
        run = c.status(rid)
        got = collections.Counter(tuple(v) for v in run["result"] or [])
        want = collections.Counter(rt.expected(name, **shape))
        dup += sum((got - want).values())
        lost += sum((want - got).values())
        attempts.update(
            {f"{name}/{t['id']}": t["attempts"] for t in run["tasks"] if t["attempts"] > 1}
        )
    return {"duplicates": dup, "lost": lost, "retried": attempts}


def test_master_sigkill_mid_stream(bed, capsys):
    t_wall = time.monotonic()
    ha = RedisHA(bed).start()
    journal = bed.log_dir / "journal.txt"
    procs = _stack(bed, ha.url, journal)
    old = ha.master()
    r = ha.conn(old)
    for i in range(4):
        h.worker_ready(r, f"w{i}")
    c = pk.Client(ha.url, imports=IMPORTS)
    shape = {"groups": 2, "per": 2, "n": 300}
    names = {f"f{i}": c.submit(rt.tree(f"f{i}", seconds=3.0, **shape)) for i in range(2)}

    def streaming() -> bool:
        emitted = [
            int(_task_field(r, rid, tid, "emitted") or 0)
            for rid, tid in _leaves(r, list(names.values()))
        ]
        return any(shape["n"] // 10 <= e < shape["n"] * 2 // 3 for e in emitted)

    wait_for(streaming, 20, interval=0.05, what="leaves streaming")
    hosts_used = {
        _task_field(r, rid, tid, "worker") for rid, tid in _leaves(r, list(names.values()))
    } - {""}
    r.close()

    kill_ms = now_ms()
    ha.kill(old)  # SIGKILL, by PID
    new = ha.wait_failover(old)
    failover_s = (now_ms() - kill_ms) / 1000
    rn = ha.conn(new)

    def all_ended() -> bool:
        return all(
            h.s(h.safe(lambda rid=rid: rn.hget(keys.run(rid), "status"), "")) in ENDED
            for rid in names.values()
        )

    wait_for(all_ended, 60, interval=0.1, what="every run to end after the failover")
    ended_after = [
        int(e)
        for rid in names.values()
        for tid in map(str, range(int(rn.hget(keys.run(rid), "n_tasks"))))
        if (e := _task_field(rn, rid, tid, "ended_at")) and int(e) > kill_ms
    ]
    first_finish_s = (min(ended_after) - kill_ms) / 1000 if ended_after else None
    statuses = {n: h.run_status(rn, rid) for n, rid in names.items()}
    checked = _check_results(c, names, shape)
    overlapped = _overlaps(journal)
    died = [p.args[-1] for p in procs if p.poll() is not None]

    # the old master comes back as a replica of the new one and catches up
    t_back = time.monotonic()
    ha.start_node(old, replica_of=new)
    wait_for(lambda: ha.link_up(old), 20, what="the old master to sync as a replica")
    ro = ha.conn(old)
    wait_for(
        lambda: all(h.run_status(ro, rid) == "succeeded" for rid in names.values()),
        10,
        what="the old master's copy to hold the finished runs",
    )
    rejoin_s = time.monotonic() - t_back
    # and the stack still runs a new run after all that
    after = c.wait(c.submit(rt.tree("g", groups=1, per=2, n=50, seconds=0.2)), timeout=30)
    c.close()
    logs = h.log_text(bed.log_dir)
    figures = {
        "hosts": len(bed.hosts),
        "workers_streaming_at_kill": sorted(hosts_used),
        "failover_s": round(failover_s, 2),
        "kill_to_first_task_finished_on_new_master_s": first_finish_s,
        "runs": statuses,
        **checked,
        "same_attempt_twice_at_once": overlapped,
        "processes_died": died,
        "worker_restarts": logs.count("restarting (restart"),
        "old_master_resynced_as_replica_s": round(rejoin_s, 2),
        "wall_s": round(time.monotonic() - t_wall, 1),
    }
    with capsys.disabled():
        print(f"\nmaster SIGKILL mid-stream, sentinel failover: {json.dumps(figures)}")
    assert statuses == {n: "succeeded" for n in names}, figures
    assert checked["duplicates"] == 0 and checked["lost"] == 0, figures
    assert not overlapped, figures
    assert not died, figures
    assert first_finish_s is not None, figures
    assert after["status"] == "succeeded", after["error"]
    assert sorted(tuple(v) for v in after["result"]) == rt.expected("g", groups=1, per=2, n=50)
    rn.close()
    ro.close()


def test_worker_host_cut(bed, capsys):
    t_wall = time.monotonic()
    ha = RedisHA(bed).start()
    journal = bed.log_dir / "journal.txt"
    _stack(bed, ha.url, journal)
    r = ha.conn(ha.master())
    for i in range(4):
        h.worker_ready(r, f"w{i}")
    c = pk.Client(ha.url, imports=IMPORTS)
    shape = {"groups": 2, "per": 2, "n": 200}
    names = {f"c{i}": c.submit(rt.tree(f"c{i}", seconds=3.0, **shape)) for i in range(2)}
    cut_host = bed.hosts[3]

    def leaf_on_w3() -> tuple[str, str] | None:
        for rid, tid in _leaves(r, list(names.values())):
            if (
                _task_field(r, rid, tid, "worker") == "w3"
                and _task_field(r, rid, tid, "state") == "running"
                and int(_task_field(r, rid, tid, "emitted") or 0) > 0
            ):
                return rid, tid
        return None

    victim = wait_for(leaf_on_w3, 20, interval=0.02, what="a leaf streaming on host 3")
    cut_host.cut()
    cut_ms = now_ms()

    def rerun() -> bool:
        return _task_field(r, *victim, "attempt") != "1" and _task_field(r, *victim, "state") in (
            "running",
            "succeeded",
        )

    wait_for(rerun, 30, interval=0.02, what="the cut host's leaf to be re-run elsewhere")
    rerun_s = (now_ms() - cut_ms) / 1000
    for rid in names.values():
        h.wait_run(r, rid, 40)
    statuses = {n: h.run_status(r, rid) for n, rid in names.items()}
    checked = _check_results(c, names, shape)
    leaf_worker = _task_field(r, *victim, "worker")
    cut_host.heal()
    heal_ms = now_ms()
    wait_for(
        lambda: (r.zscore(keys.WORKERS, "w3") or 0) > heal_ms,
        20,
        what="the cut host's worker to beat again",
    )
    rejoin_s = (now_ms() - heal_ms) / 1000
    c.close()
    figures = {
        "rerun_after_cut_s": round(rerun_s, 2),
        "rerun_on": leaf_worker,
        "runs": statuses,
        **checked,
        "worker_rejoined_s": round(rejoin_s, 2),
        "wall_s": round(time.monotonic() - t_wall, 1),
    }
    with capsys.disabled():
        print(f"\nworker host cut off: {json.dumps(figures)}")
    assert statuses == {n: "succeeded" for n in names}, figures
    assert leaf_worker != "w3", figures
    assert checked["duplicates"] == 0 and checked["lost"] == 0, figures
    r.close()
