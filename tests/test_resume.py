"""Resume from failure (``rerun --from-failure``) against real Redis, scheduler and workers.

Every execution is counted outside the task (``tests.dags.resume_tasks``: a Redis hash bumped by
run()), so "ran exactly the failed leaf and its ancestors" is a count, and "every reused value
reaches its parent once" is a multiset comparison with a clean run.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

import plankton as pk
from plankton import keys
from plankton.errors import ResumeError
from tests.dags.resume_tasks import RAN
from tests.servers import wait_for

IMPORT = ("--import", "tests.dags.resume_tasks")


@pytest.fixture
def rc(cluster, redis_url, monkeypatch):
    """A client, a scheduler and one worker serving tests.dags.resume_tasks (complete() runs in
    this process too: it needs the Redis URL)."""
    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    cluster.start(imports=["tests.dags.resume_tasks"])
    c = pk.Client(redis_url, imports=["tests.dags.resume_tasks"])
    yield c
    c.close()


def _ran(c: pk.Client) -> Counter:
    return Counter(
        {k.decode(): int(v) for k, v in c.conn.hgetall(RAN).items() if b"complete" not in k}
    )


def _failed_run(c: pk.Client) -> dict:
    rid = c.submit("three_level")
    run = c.wait(rid, timeout=30)
    assert run["status"] == "failed" and "flag flag not set" in run["error"]
    return run


def _by_key(run: dict) -> dict:
    return {t["params"]["key"]: t for t in run["tasks"]}


def _in_order(values: list[str]) -> None:
    """Each source's values arrive in the order it emitted them."""
    seen: dict[str, int] = {}
    for v in values:
        src, i = v.rsplit("-", 1)
        assert int(i) == seen.get(src, -1) + 1, values
        seen[src] = int(i)


def test_resume_runs_the_failed_leaf_and_its_ancestors_and_reuses_the_rest(rc, cluster):
    first = _failed_run(rc)
    before = _ran(rc)
    rc.conn.set("flag", 1)
    done = cluster.cli("rerun", first["run_id"], "--from-failure", "--wait", "--json", *IMPORT)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["status"] == "succeeded" and second["rerun_of"] == first["run_id"]
    ran = _ran(rc) - before
    assert ran == Counter({"Src:b2": 1, "Mid:B": 1, "Top:top": 1})
    tasks = _by_key(second)
    assert {k for k, t in tasks.items() if t["reused_from"]} == {"A", "a1", "a2", "b1"}
    assert all(
        t["reused_from"] == first["run_id"] and t["state"] == "succeeded"
        for k, t in tasks.items()
        if k in ("A", "a1", "a2", "b1")
    )
    assert tasks["A"]["processed"]["emitted"] == 5 and tasks["b1"]["result"] == "b1"
    _in_order([v.split("/", 1)[1] for v in second["result"]])
    # the same tree run clean (the flag set) gives the same values, each once
    clean = rc.wait(rc.submit("three_level"), timeout=30)
    assert clean["status"] == "succeeded"
    assert Counter(second["result"]) == Counter(clean["result"])
    assert len(second["result"]) == 12
    shown = cluster.cli("show", second["run_id"])
    assert f"reused from {first['run_id']}" in shown.stdout, shown.stdout + shown.stderr


def test_an_override_of_a_sibling_reruns_it_and_a_resumed_run_resumes(rc):
    first = _failed_run(rc)
    b1 = _by_key(first)["b1"]["id"]
    before = _ran(rc)
    second_id = rc.rerun(first["run_id"], {f"{b1}.n": "5"}, from_failure=True)
    second = rc.wait(second_id, timeout=30)  # the flag is still unset: fails again
    assert second["status"] == "failed"
    ran = _ran(rc) - before  # Mid:B and Top may have started before b2 failed, or not
    assert ran["Src:b1"] == ran["Src:b2"] == 1, ran
    assert ran["Src:a1"] == ran["Src:a2"] == ran["Mid:A"] == 0, ran
    assert _by_key(second)["b1"]["reused_from"] is None
    # resuming the resumed run: b1 (n=5, ran in the second run) is reused from it
    rc.conn.set("flag", 1)
    before = _ran(rc)
    third = rc.wait(rc.rerun(second_id, from_failure=True), timeout=30)
    assert third["status"] == "succeeded" and third["rerun_of"] == second_id
    assert _ran(rc) - before == Counter({"Src:b2": 1, "Mid:B": 1, "Top:top": 1})
    tasks = _by_key(third)
    assert tasks["b1"]["reused_from"] == second_id
    assert tasks["A"]["reused_from"] == second_id  # reused there, reused again
    assert Counter(v.rsplit("-", 1)[0] for v in third["result"]) == Counter(
        {"A/a1": 3, "A/a2": 2, "B/b1": 5, "B/b2": 4}
    )
    # a run that succeeded is refused, clearly
    with pytest.raises(ResumeError, match="it succeeded, there is nothing to resume"):
        rc.rerun(third["run_id"], from_failure=True)


def test_dry_run_lists_run_and_reuse_with_reasons_and_writes_nothing(rc, cluster, r, monkeypatch):
    monkeypatch.setenv("PLANKTON_VERSION", "1.0")  # the code version the run records
    first = _failed_run(rc)
    a1 = _by_key(first)["a1"]["id"]
    wait_for(lambda: not r.sismember(keys.ACTIVE, first["run_id"]), what="run settled")
    cluster.kill_all()  # nothing else writes meanwhile
    # the killed scheduler's leader lease (PX) would expire on its own between the two
    # snapshots: gone first, so what is compared is only what the dry run could write
    r.delete(keys.LEADER)

    def snapshot() -> dict:
        return {k: r.dump(k) for k in sorted(r.keys("*"))}

    before = snapshot()
    text = cluster.cli(
        "rerun", first["run_id"], "--from-failure", "--dry-run", *IMPORT, PLANKTON_VERSION="1.1"
    )
    plan = json.loads(
        cluster.cli(
            "rerun",
            first["run_id"],
            "--from-failure",
            "--dry-run",
            "--json",
            "--param",
            f"{a1}.n=4",
            *IMPORT,
            PLANKTON_VERSION="1.0",
        ).stdout
    )
    assert plan["code_changed"] is None
    assert snapshot() == before
    assert text.returncode == 0, text.stderr
    assert "resume of " + first["run_id"] + ": 3 task(s) run, 4 reused" in text.stdout
    assert "nothing submitted (--dry-run)" in text.stdout
    assert (
        "code version changed: 1.0 -> 1.1 (reused values were made by the recorded "
        "version)" in text.stdout
    )
    actions = {t["id"]: (t["action"], t["reason"]) for t in plan["tasks"]}
    keyed = {t["params"]["key"]: actions[t["id"]] for t in first["tasks"]}
    assert keyed["a1"] == ("run", "params changed (tree_hash differs)")
    assert keyed["A"] == ("run", "subtree changed (tree_hash differs)")
    # a2 is unchanged, but its values went to A, which succeeded and dropped them
    assert keyed["a2"][0] == "run" and "parent succeeded too" in keyed["a2"][1]
    assert keyed["b1"][0] == "reuse" and keyed["b2"] == ("run", f"failed in {first['run_id']}")


def test_a_worker_sigkilled_during_a_resumed_run(cluster, redis_url, monkeypatch):
    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    cluster.imports = ["tests.dags.resume_tasks"]
    cluster.scheduler()
    victim = cluster.worker()
    c = pk.Client(redis_url, imports=["tests.dags.resume_tasks"])
    from tests.dags.resume_tasks import tree

    first = c.wait(c.submit(tree(gate="go")), timeout=30)
    assert first["status"] == "failed"
    c.conn.set("flag", 1)
    before = _ran(c)
    rid = c.rerun(first["run_id"], from_failure=True)
    wait_for(lambda: _ran(c)["Src:b2"] > before["Src:b2"], timeout=20, what="b2 started")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    c.conn.set("go", 1)
    cluster.worker()
    run = c.wait(rid, timeout=40)
    assert run["status"] == "succeeded", run["error"]
    ran = _ran(c) - before
    assert ran["Src:b2"] == 2  # the attempt lost with its worker, then the retry
    assert ran["Src:a1"] == ran["Src:a2"] == ran["Src:b1"] == ran["Mid:A"] == 0
    assert Counter(v.rsplit("-", 1)[0] for v in run["result"]) == Counter(
        {"A/a1": 3, "A/a2": 2, "B/b1": 3, "B/b2": 4}
    )
    _in_order([v.split("/", 1)[1] for v in run["result"]])
    c.close()


def test_expired_values_give_a_clear_error_and_a_full_rerun_works(
    cluster, redis_url, monkeypatch, r
):
    monkeypatch.setenv("PLANKTON_REDIS_URL", redis_url)
    cluster.imports = ["tests.dags.resume_tasks"]
    cluster.scheduler(PLANKTON_RESUME_KEEP_DAYS="0.00004")  # ~3 s
    cluster.worker()
    c = pk.Client(redis_url, imports=["tests.dags.resume_tasks"])
    first = _failed_run(c)
    top = _by_key(first)["top"]["id"]
    wait_for(lambda: r.ttl(keys.channel(first["run_id"], top)) > 0, what="channel kept")
    wait_for(
        lambda: not r.exists(keys.channel(first["run_id"], top)), timeout=20, what="channel expired"
    )
    failed = cluster.cli("rerun", first["run_id"], "--from-failure", *IMPORT)
    assert failed.returncode != 0
    assert "are no longer kept" in failed.stderr and "PLANKTON_RESUME_KEEP_DAYS" in failed.stderr
    assert f"plankton rerun {first['run_id']}` (without --from-failure)" in failed.stderr
    assert r.zcard(keys.RUNS) == 1  # nothing submitted
    c.conn.set("flag", 1)
    full = c.wait(c.rerun(first["run_id"]), timeout=30)
    assert full["status"] == "succeeded" and len(full["result"]) == 12
    c.close()


def test_the_api_resumes_and_refuses(rc, redis_url):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from plankton.api import create_app

    first = _failed_run(rc)
    rc.conn.set("flag", 1)
    with TestClient(create_app(redis_url, ["tests.dags.resume_tasks"])) as api:
        plan = api.post(
            f"/runs/{first['run_id']}/rerun",
            params={"dry_run": "true"},
            json={"from_failure": True},
        )
        assert plan.status_code == 200 and plan.json()["reuse"] == 4
        made = api.post(f"/runs/{first['run_id']}/rerun", json={"from_failure": True})
        assert made.status_code == 201, made.text
        new_id = made.json()["run_id"]
        run = rc.wait(new_id, timeout=30)
        assert run["status"] == "succeeded"
        shown = api.get(f"/runs/{new_id}").json()
        assert sorted(t["params"]["key"] for t in shown["tasks"] if t["reused_from"]) == [
            "A",
            "a1",
            "a2",
            "b1",
        ]
        refused = api.post(f"/runs/{new_id}/rerun", json={"from_failure": True})
        assert refused.status_code == 409 and "nothing to resume" in refused.json()["detail"]
