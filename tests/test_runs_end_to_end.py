"""The engine end to end: real Redis, real scheduler and worker processes."""

from __future__ import annotations

import json

import pytest

import plankton as pk
from tests.dags import tasks


def test_simple_example_result_is_what_producers_and_multipliers_imply(cluster, redis_url):
    cluster.start(workers=2, imports=["examples.simple"])
    client = pk.Client(redis_url, imports=["examples.simple"])
    run_id = client.submit("simple", params={"n": 3, "m": 2})
    run = client.wait(run_id, timeout=60)
    assert run["status"] == "succeeded"
    assert run["result"] == ["hihihi"] * 15 + ["lolo"] * 25
    by_name = {}
    for t in run["tasks"]:
        by_name.setdefault(t["name"], []).append(t)
    assert sorted(t["processed"]["emitted"] for t in by_name["Producer"]) == [15, 25]
    assert by_name["Aggregator"][0]["processed"]["consumed"] == 40


def test_fan_in_of_500_leaves(cluster, client):
    cluster.start(workers=2)
    run = client.wait(client.submit("fanin", params={"n": 500}), timeout=60)
    assert run["status"] == "succeeded"
    assert run["result"] == 500
    assert {t["state"] for t in run["tasks"]} == {"succeeded"}


def test_chain_50_deep_passes_values_up(cluster, client):
    cluster.start(workers=2)
    run = client.wait(client.submit("chain", params={"depth": 50}), timeout=60)
    assert run["status"] == "succeeded"
    assert run["result"] == 50


def test_identical_tasks_under_different_parents_are_distinct_nodes(client, stack):
    root = tasks.Collect().add_children(
        tasks.Relay().add_children(tasks.Leaf(i=7)), tasks.Relay().add_children(tasks.Leaf(i=7))
    )
    run = client.wait(client.submit(root), timeout=60)
    assert run["status"] == "succeeded" and run["result"] == ["7", "7"]
    leaves = [t for t in run["tasks"] if t["name"] == "Leaf"]
    assert len({t["id"] for t in leaves}) == 2
    assert len({t["param_hash"] for t in leaves}) == 1


def test_streaming_is_real_parent_sees_first_value_while_child_runs(cluster, client):
    cluster.start(workers=2)
    root = tasks.Watcher(flag="pk:test:seen").add_children(tasks.Gate(flag="pk:test:seen"))
    run = client.wait(client.submit(root), timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == ["first", "second"]


def test_three_level_streaming_dag_finishes_on_a_single_worker(cluster, redis_url):
    cluster.start(env={"PLANKTON_CHANNEL_CAP": "200"})
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    run = client.wait(client.submit("stream3", params={"n": 3000, "leaves": 3}), timeout=90)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == 9000


def test_failing_leaf_fails_the_run_and_cli_exits_non_zero(redis_url, stack):
    done = stack.cli("run", "failing", "--wait", "--import", "tests.dags.tasks")
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = done.stderr.strip().splitlines()[0]
    shown = stack.cli("show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] == "failed"
    boom = next(t for t in run["tasks"] if t["name"] == "Boom")
    assert boom["state"] == "failed"
    assert "ValueError: boom" in boom["error"]
    root = next(t for t in run["tasks"] if t["id"] == run["root"])
    assert root["state"] == "failed" and "UpstreamFailed" in root["error"]
    assert {"run_id", "dag", "status", "since", "to", "result", "tasks"} <= set(run)
    for field in (
        "id",
        "name",
        "parent",
        "params",
        "param_hash",
        "state",
        "attempts",
        "started_at",
        "ended_at",
        "processed",
        "result",
        "error",
    ):
        assert field in boom


def test_unserializable_emit_and_result_fail_the_task_with_serialization_error(client, stack):
    for task in (tasks.EmitSet(), tasks.ReturnObject()):
        run = client.wait(client.submit(tasks.Collect().add_children(task)), timeout=60)
        assert run["status"] == "failed"
        bad = next(t for t in run["tasks"] if t["name"] == task.task_name)
        assert "SerializationError" in bad["error"]
        assert task.task_name in bad["error"]


def test_emitted_values_of_every_kind_arrive_in_order_as_they_were_at_emit(client, stack):
    run = client.wait(client.submit(tasks.InOrder().add_children(tasks.EmitMixed())), timeout=60)
    assert run["status"] == "succeeded", run
    assert run["result"] == [repr(v) for v in tasks.MIXED + tasks.MIXED + [[1, 2]]]


@pytest.mark.parametrize("kind", ["surrogate", "huge_int"])
def test_a_scalar_msgpack_cannot_encode_fails_the_emit_that_gave_it(client, kind, stack):
    run = client.wait(
        client.submit(tasks.Collect().add_children(tasks.EmitBadScalar(kind=kind))), timeout=60
    )
    assert run["status"] == "failed"
    bad = next(t for t in run["tasks"] if t["name"] == "EmitBadScalar")
    assert bad["error"].startswith("SerializationError"), bad["error"][:300]
    assert "EmitBadScalar" in bad["error"]


def test_task_logs_are_kept_per_task(client, stack):
    run_id = client.submit(tasks.Logger())
    assert client.wait(run_id, timeout=60)["status"] == "succeeded"
    lines = client.logs(run_id)
    assert [line["line"] for line in lines] == ["hello from a task", "second line"]
    out = stack.cli("logs", run_id)
    assert "hello from a task" in out.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "nope", "--import", "tests.dags.tasks"], "nope"),
        (["run", "fanin", "--param", "n=abc", "--import", "tests.dags.tasks"], "'n'"),
        (["run", "fanin", "--param", "x=1", "--import", "tests.dags.tasks"], "'x'"),
        (["run", "fanin", "--param", "n", "--import", "tests.dags.tasks"], "--param"),
    ],
)
def test_bad_run_input_exits_non_zero_naming_it_and_writes_nothing(cluster, r, argv, needle):
    before = r.dbsize()
    done = cluster.cli(*argv)
    assert done.returncode != 0
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert r.dbsize() == before


def test_fatal_errors_fail_at_once_without_retries(client, r, stack):
    run = client.wait(client.submit(tasks.Collect().add_children(tasks.FatalBoom())), timeout=60)
    assert run["status"] == "failed"
    bad = next(t for t in run["tasks"] if t["name"] == "FatalBoom")
    assert bad["attempts"] == 1 and "KeyError" in bad["error"]
    assert int(r.get("pk:test:fatal-attempts")) == 1
