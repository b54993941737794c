"""Invalid trees and params are refused before anything is written."""

from __future__ import annotations

import pytest

import plankton as pk
from tests.dags import tasks


def test_cycle_is_a_dag_error_naming_the_tasks():
    a, b = tasks.Relay(), tasks.Count()
    a.add_children(b)
    with pytest.raises(pk.DagError) as err:
        b.add_children(a)
    assert "Relay" in str(err.value) and "Count" in str(err.value)
    assert b.children == [] and a.parent is None  # the bad edge was not added


def test_long_cycle_found_where_the_tree_is_built_with_redis_down():
    """The ancestors of the new parent are walked in add_children: a cycle is a DagError
    naming every task on it, before any client exists (here Redis is not even running)."""
    from tests.servers import free_port

    top, mid, low = tasks.Collect(), tasks.Relay(), tasks.Count()
    top.add_children(mid.add_children(low))
    with pytest.raises(pk.DagError) as err:
        low.add_children(top)
    assert [n for n in err.value.tasks] == ["Collect", "Relay", "Count", "Collect"]
    # A loop made by editing ``children`` by hand is still refused at submit, as a DagError
    # and not as the ConnectionFailed of the Redis that is down.
    low.children.append(top)
    client = pk.Client(f"redis://127.0.0.1:{free_port()}/0", check_connection=False)
    with pytest.raises(pk.DagError):
        client.submit(top)


def test_a_parent_of_100000_children_builds_and_validates():
    """Duplicate, two-parent and cycle checks are O(1) per child (the speed is measured in
    benchmarks/control_plane.py, not asserted here)."""
    from plankton.authoring.task import validate_tree

    leaves = [tasks.Leaf(i=i) for i in range(100_000)]
    root = tasks.Count().add_children(*leaves)
    order = validate_tree(root)
    assert len(order) == 100_001 and order[-1] is root and order[0] is leaves[0]
    with pytest.raises(pk.DagError) as err:
        root.add_children(leaves[-1])
    assert "twice" in str(err.value)
    with pytest.raises(pk.DagError) as err:
        tasks.Collect().add_children(leaves[50_000])
    assert "two parents" in str(err.value)
    # A deep chain is walked without recursion.
    chain = tasks.Relay()
    for _ in range(30_000):
        chain = tasks.Relay().add_children(chain)
    assert len(validate_tree(chain)) == 30_001


def test_task_added_twice_is_a_dag_error():
    leaf = tasks.Leaf(i=1)
    with pytest.raises(pk.DagError) as err:
        tasks.Count().add_children(leaf, leaf)
    assert "Leaf" in str(err.value) and err.value.tasks


def test_task_with_two_parents_is_a_dag_error_naming_both():
    leaf = tasks.Leaf(i=1)
    tasks.Count().add_children(leaf)
    with pytest.raises(pk.DagError) as err:
        tasks.Collect().add_children(leaf)
    assert "Count" in str(err.value) and "Collect" in str(err.value)


def test_task_as_its_own_child_is_a_cycle():
    t = tasks.Relay()
    with pytest.raises(pk.DagError):
        t.add_children(t)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({}, ["Leaf", "'i'", "missing"]),
        ({"i": "3"}, ["Leaf", "'i'", "'3'"]),
        ({"i": True}, ["Leaf", "'i'", "True"]),
        ({"i": 1, "j": 2}, ["Leaf", "'j'", "unknown"]),
    ],
)
def test_param_errors_name_task_param_and_value(kwargs, words):
    with pytest.raises(pk.ParamError) as err:
        tasks.Leaf(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_unknown_dag_is_an_error_naming_it(client, r):
    with pytest.raises(pk.PlanktonError) as err:
        client.submit("no_such_dag")
    assert "no_such_dag" in str(err.value)
    assert r.dbsize() == 0


def test_dag_param_errors_write_nothing(client, r):
    with pytest.raises(pk.ParamError) as err:
        client.submit("fanin", params={"n": "ten"})
    assert "fanin" in str(err.value) and "'n'" in str(err.value)
    assert r.dbsize() == 0


def test_serialization_error_names_task_and_type():
    from plankton import codec

    with pytest.raises(pk.SerializationError) as err:
        codec.check_value({1}, "Leaf (task 3)")
    assert "Leaf" in str(err.value) and "set" in str(err.value)
    with pytest.raises(pk.SerializationError):
        import datetime

        codec.check_value(datetime.datetime(2024, 1, 1), "T")
    with pytest.raises(pk.SerializationError) as err:
        codec.check_value("x" * 100, "T", max_bytes=10)
    assert "limit" in str(err.value)


def test_all_errors_derive_from_plankton_error():
    for exc in (pk.ParamError, pk.DagError, pk.SerializationError, pk.UpstreamFailed):
        assert issubclass(exc, pk.PlanktonError)


def test_a_dag_building_too_many_tasks_is_stopped_with_dag_error(redis_url, r, monkeypatch):
    monkeypatch.setenv("PLANKTON_MAX_TASKS", "100")
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    with pytest.raises(pk.DagError) as err:
        client.submit("fanin", params={"n": 10**12})
    assert "100" in str(err.value)
    assert r.dbsize() == 0
    # A tree built in the script is counted too, before anything is written.
    with pytest.raises(pk.DagError) as err:
        client.submit(tasks.Count().add_children(*(tasks.Leaf(i=i) for i in range(150))))
    assert "151" in str(err.value) and "PLANKTON_MAX_TASKS=100" in str(err.value)
    assert r.dbsize() == 0
