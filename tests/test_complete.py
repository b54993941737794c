"""``Task.complete()``: evaluated top-down when a run is written; a complete task and its
subtree end ``skipped``; an exception fails the task. Real Redis, scheduler and worker;
executions counted in Redis outside the tasks (``tests.dags.resume_tasks``)."""

from __future__ import annotations

import datetime as _dt
from collections import Counter

import pytest

import plankton as pk
from plankton import keys
from plankton.engine import counters
from tests.dags.resume_tasks import RAN, tree


@pk.dag(schedule="0 * * * *")
def hourly():
    """A scheduled DAG for the cron path (only this module knows it: no scheduler fires it)."""
    return tree(fail_flag="")


@pytest.fixture
def cc(cluster, redis_url, monkeypatch):
    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    cluster.start(imports=["tests.dags.resume_tasks"])
    c = pk.Client(redis_url, imports=["tests.dags.resume_tasks"])
    c.conn.set("flag", 1)
    yield c
    c.close()


def _ran(c: pk.Client) -> Counter:
    return Counter({k.decode(): int(v) for k, v in c.conn.hgetall(RAN).items()})


def _states(run: dict) -> dict:
    return {t["params"]["key"]: t["state"] for t in run["tasks"]}


def test_complete_at_the_root_skips_the_whole_tree(cc, cluster):
    cc.conn.set("done:top", 1)
    run = cc.wait(cc.submit("three_level"), timeout=30)
    assert run["status"] == "succeeded" and run["result"] is None
    assert set(_states(run).values()) == {"skipped"}
    assert _ran(cc) == Counter({"Top.complete": 1})  # nothing below a complete task is asked
    shown = cluster.cli("show", run["run_id"])
    assert shown.stdout.count("skipped") == 7, shown.stdout


def test_complete_at_a_mid_task_skips_just_its_subtree(cc, cluster):
    cc.conn.set("done:A", 1)
    done = cluster.cli(
        "run", "three_level", "--wait", "--json", "--import", "tests.dags.resume_tasks"
    )
    assert done.returncode == 0, done.stderr
    import json

    run = json.loads(done.stdout)
    assert _states(run) == {
        "a1": "skipped",
        "a2": "skipped",
        "A": "skipped",
        "b1": "succeeded",
        "b2": "succeeded",
        "B": "succeeded",
        "top": "succeeded",
    }
    skipped = [t for t in run["tasks"] if t["state"] == "skipped"]
    assert all(
        t["processed"]["emitted"] == 0 and t["result"] is None and t["ended_at"] for t in skipped
    )
    assert sorted(run["result"]) == sorted(
        f"B/b{i}" for i in ["1-0", "1-1", "1-2", "2-0", "2-1", "2-2", "2-3"]
    )
    ran = _ran(cc)
    assert ran["Src:a1"] == ran["Src:a2"] == ran["Mid:A"] == 0
    assert ran["Mid:B"] == ran["Top:top"] == ran["Src:b2"] == 1
    assert ran["Mid.complete:A"] == ran["Mid.complete:B"] == ran["Top.complete"] == 1
    counted = cc.conn.hget(
        keys.METRICS, counters.field("tasks_ended", "tests.dags.resume_tasks:Src", "skipped")
    )
    assert int(counted) == 2


def test_an_exception_in_complete_fails_the_task_and_a_resume_goes_on(cc):
    cc.conn.set("raise:B", 1)
    rid = cc.submit("three_level")
    run = cc.wait(rid, timeout=30)
    assert run["status"] == "failed"
    tasks = {t["params"]["key"]: t for t in run["tasks"]}
    assert tasks["B"]["state"] == "failed"
    assert "ValueError: cannot tell whether B is done (raised by complete())" in tasks["B"]["error"]
    assert tasks["top"]["state"] == "failed" and "UpstreamFailed" in tasks["top"]["error"]
    assert "raised by complete()" in run["error"]
    assert {k: t["state"] for k, t in tasks.items() if k not in ("B", "top")} == dict.fromkeys(
        ["a1", "a2", "A", "b1", "b2"], "cancelled"
    )
    assert not [k for k in _ran(cc) if "." not in k.split(":")[0]]  # no run() executed
    cc.conn.delete("raise:B")
    resumed = cc.wait(cc.rerun(rid, from_failure=True), timeout=30)
    assert resumed["status"] == "succeeded" and len(resumed["result"]) == 12


def test_a_cron_run_asks_complete_when_the_scheduler_writes_it(redis_url, monkeypatch, r):
    from scheduler.cron import create_run

    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    r.set("done:B", 1)
    fire = _dt.datetime(2026, 12, 5, 9, tzinfo=_dt.timezone.utc)
    assert create_run(r, hourly, fire, run_id="cron-hourly-test", fence=None)
    with pk.Client(redis_url, imports=["tests.dags.resume_tasks"]) as c:
        run = c.status("cron-hourly-test")
    assert _states(run) == {
        "a1": "ready",
        "a2": "ready",
        "A": "pending",
        "b1": "skipped",
        "b2": "skipped",
        "B": "skipped",
        "top": "pending",
    }
    top = next(t["id"] for t in run["tasks"] if t["params"]["key"] == "top")
    assert int(r.hget(keys.task("cron-hourly-test", top), "n_started")) == 1
    ends = r.xrange(keys.channel("cron-hourly-test", top))
    assert [(e[1][b"k"], e[1][b"n"]) for e in ends] == [(b"end", b"0")]


def test_a_big_tree_written_in_chunks_skips_the_same_way(redis_url, monkeypatch, r):
    """Over 2,000 tasks, write_run writes task hashes in chunks before the run's transaction:
    the skipped subtree, the parents' counters and the ready set are the same."""
    from tests.dags.resume_tasks import Mid, Src, Top

    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    r.set("done:A", 1)
    root = Top().add_children(
        Mid(key="A").add_children(*(Src(key=f"a{i}") for i in range(1500))),
        Mid(key="B").add_children(*(Src(key=f"b{i}") for i in range(1500))),
    )
    with pk.Client(redis_url, imports=["tests.dags.resume_tasks"]) as c:
        rid = c.submit(root)
        run = c.status(rid)
    states = Counter((t["name"], t["state"]) for t in run["tasks"])
    assert states == Counter(
        {
            ("Src", "skipped"): 1500,
            ("Mid", "skipped"): 1,
            ("Src", "queued"): 1500,
            ("Mid", "pending"): 1,
            ("Top", "pending"): 1,
        }
    )
    top = run["root"]
    assert int(r.hget(keys.task(rid, top), "n_started")) == 1
    assert [e[1][b"k"] for e in r.xrange(keys.channel(rid, top))] == [b"end"]
    skipped = {t["id"] for t in run["tasks"] if t["state"] == "skipped"}
    assert not skipped & {m.decode() for m in r.zrange(keys.ready(rid), 0, -1)}


def test_a_run_started_through_the_api_asks_complete(redis_url, monkeypatch, r):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from plankton.api import create_app

    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    r.set("done:A", 1)
    with TestClient(create_app(redis_url, ["tests.dags.resume_tasks"])) as api:
        made = api.post("/dags/three_level/runs", json={"params": {}})
        assert made.status_code == 201, made.text
        run = api.get(f"/runs/{made.json()['run_id']}").json()
    assert {k: v for k, v in _states(run).items() if v == "skipped"} == dict.fromkeys(
        ["a1", "a2", "A"], "skipped"
    )
