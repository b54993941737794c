"""Runs are re-created from metadata alone, with today's code and optional overrides."""

from __future__ import annotations

import json

import pytest

import plankton as pk
from plankton import codec, keys


@pytest.fixture
def simple_cluster(cluster):
    return cluster.start(workers=2, imports=["examples.simple"])


def _run(client, dag="simple", params=None):
    run_id = client.submit(dag, params=params or {"n": 2, "m": 3})
    run = client.wait(run_id, timeout=60)
    assert run["status"] == "succeeded"
    return run


def test_rerun_in_a_new_process_has_same_tree_hash_and_result(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    done = simple_cluster.cli("rerun", first["run_id"], "--wait", "--import", "examples.simple")
    assert done.returncode == 0, done.stderr
    second_id = done.stderr.strip().splitlines()[0]
    second = client.status(second_id)
    assert second["rerun_of"] == first["run_id"]
    assert second["tree_hash"] == first["tree_hash"]
    assert second["result"] == first["result"]
    assert [t["param_hash"] for t in second["tasks"]] == [t["param_hash"] for t in first["tasks"]]


def test_override_changes_only_the_overridden_tasks_hashes(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    dry = simple_cluster.cli(
        "rerun",
        first["run_id"],
        "--param",
        "Multiplier.n=5",
        "--dry-run",
        "--json",
        "--import",
        "examples.simple",
    )
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    changed = {c["name"] for c in plan["changed"] if c["params_changed"]}
    assert changed == {"Multiplier"}
    assert {c["name"] for c in plan["changed"]} == {"Multiplier", "Aggregator"}
    assert plan["unchanged"] == 2
    runs_before = client.conn.zcard(keys.RUNS)
    assert runs_before == 1  # dry run submitted nothing
    new_id = client.rerun(first["run_id"], {"Multiplier.n": "5"})
    second = client.wait(new_id, timeout=60)
    assert second["status"] == "succeeded"
    assert second["result"] == ["hihihihihi"] * 15 + ["lololololo"] * 25
    for old, new in zip(first["tasks"], second["tasks"]):
        same = old["name"] == "Producer"
        assert (old["param_hash"] == new["param_hash"]) == (old["name"] != "Multiplier")
        assert (old["tree_hash"] == new["tree_hash"]) == same


def test_override_by_task_id_changes_that_task_only(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    mult = [t for t in first["tasks"] if t["name"] == "Multiplier"]
    plan = client.rerun(first["run_id"], {f"{mult[0]['id']}.n": "7"}, dry_run=True)
    assert [c["id"] for c in plan["changed"] if c["params_changed"]] == [mult[0]["id"]]


def test_dags_equal_compares_tree_hashes():
    from examples.simple import simple

    assert pk.dags_equal(simple.build({}), simple.build({}))
    assert not pk.dags_equal(simple.build({}), simple.build({"n": 11}))


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"Nope.n": "1"}, pk.PlanktonError, ["Nope"]),
        ({"Multiplier.zzz": "1"}, pk.ParamError, ["zzz", "Multiplier"]),
        ({"Multiplier.n": "abc"}, pk.ParamError, ["'n'", "abc"]),
        ({"Multiplier": "1"}, pk.ParamError, ["TASK.PARAM"]),
    ],
)
def test_bad_overrides_are_errors_and_submit_nothing(
    simple_cluster, redis_url, overrides, error, words
):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    with pytest.raises(error) as err:
        client.rerun(first["run_id"], overrides)
    for word in words:
        assert word in str(err.value)
    assert client.conn.zcard(keys.RUNS) == 1


def test_family_gone_from_todays_code_is_named_and_nothing_submitted(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    client.conn.hset(keys.task(first["run_id"], "0"), "family", "examples.simple:Gone")
    done = simple_cluster.cli("rerun", first["run_id"], "--import", "examples.simple")
    assert done.returncode == 2
    assert "examples.simple:Gone" in done.stderr and "Traceback" not in done.stderr
    assert client.conn.zcard(keys.RUNS) == 1


def test_param_gone_from_todays_code_is_named(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    key = keys.task(first["run_id"], "0")
    params = codec.loads(client.conn.hget(key, "params"))
    params["retired"] = 1
    client.conn.hset(key, "params", codec.dumps(params))
    with pytest.raises(pk.ParamError) as err:
        client.rerun(first["run_id"])
    assert "retired" in str(err.value)
    assert client.conn.zcard(keys.RUNS) == 1


def test_rerun_of_unknown_run_is_an_error(simple_cluster):
    done = simple_cluster.cli("rerun", "r-nope", "--import", "examples.simple")
    assert done.returncode == 2 and "r-nope" in done.stderr


def test_code_version_change_is_reported_by_dry_run(simple_cluster, redis_url, monkeypatch):
    monkeypatch.setenv("PLANKTON_VERSION", "1.0")
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    assert client.status(first["run_id"])["version"] == "1.0"
    monkeypatch.setenv("PLANKTON_VERSION", "1.1")
    plan = client.rerun(first["run_id"], dry_run=True)
    assert plan["changed"] == []
    assert plan["code_changed"]["recorded"] == "1.0"
    assert plan["code_changed"]["today"] == "1.1"


def test_rerun_of_a_rerun_with_overrides_works(simple_cluster, redis_url):
    client = pk.Client(redis_url, imports=["examples.simple"])
    first = _run(client)
    second = client.rerun(first["run_id"], {"Multiplier.n": "2"})
    assert client.wait(second, timeout=60)["status"] == "succeeded"
    third = client.rerun(second)
    run = client.wait(third, timeout=60)
    assert run["status"] == "succeeded" and run["rerun_of"] == second
    assert run["tree_hash"] == client.status(second)["tree_hash"]
