"""Invalid trees and params are refused before anything is written."""

from __future__ import annotations

import pytest

import plankton as pk
from tests import tasks


def test_cycle_is_a_dag_error_naming_the_tasks(client, r):
    a, b = tasks.Relay(), tasks.Count()
    a.add_children(b)
    b.add_children(a)
    with pytest.raises(pk.DagError) as err:
        client.submit(a)
    assert "Relay" in str(err.value) and "Count" in str(err.value)
    assert r.dbsize() == 0


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


@pytest.mark.parametrize("kwargs, words", [
    ({}, ["Leaf", "'i'", "missing"]),
    ({"i": "3"}, ["Leaf", "'i'", "'3'"]),
    ({"i": True}, ["Leaf", "'i'", "True"]),
    ({"i": 1, "j": 2}, ["Leaf", "'j'", "unknown"]),
])
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
    client = pk.Client(redis_url, imports=["tests.tasks"])
    with pytest.raises(pk.DagError) as err:
        client.submit("fanin", params={"n": 10**12})
    assert "100" in str(err.value)
    assert r.dbsize() == 0
