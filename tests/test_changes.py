"""Delta reads (issue 13): ``Client.changes`` / ``GET /runs/{id}?since=`` return only the
tasks changed since a cursor, and patching them onto a first full read gives ``status()``."""

from __future__ import annotations

import warnings

import plankton as pk
from plankton import keys
from plankton.views import reading
from tests.dags import tasks
from tests.servers import wait_for


def _merge(base: dict, delta: dict) -> dict:
    got = {t["id"]: t for t in ([] if delta["full"] else base["tasks"])}
    got.update({t["id"]: t for t in delta["tasks"]})
    return {**delta["run"], "tasks": sorted(got.values(), key=lambda t: int(t["id"]))}


def test_delta_reads_follow_a_run_to_its_end(cluster, redis_url, r):
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    run_id = client.submit("fanin", params={"n": 5})
    first = client.changes(run_id)
    assert first["full"] and len(first["tasks"]) == 6
    assert first["run"]["status"] == "queued"
    # Nothing ran yet (no worker): the delta is empty and the cursor stays.
    again = client.changes(run_id, since=first["cursor"])
    assert not again["full"] and again["tasks"] == [] and again["cursor"] == first["cursor"]
    # A cursor the run never had (Redis restored an older snapshot): start over, in full.
    ahead = client.changes(run_id, since=first["cursor"] + 1000)
    assert ahead["full"] and len(ahead["tasks"]) == 6
    cluster.start()
    assert client.wait(run_id, timeout=60, tasks=False)["status"] == "succeeded"
    delta = client.changes(run_id, since=first["cursor"])
    assert not delta["full"] and delta["cursor"] > first["cursor"]
    assert sorted(int(t["id"]) for t in delta["tasks"]) == list(range(6))  # each once
    wait_for(lambda: not r.sismember(keys.ACTIVE, run_id), 10, what="run settled")
    merged = _merge({"tasks": first["tasks"]}, client.changes(run_id, since=first["cursor"]))
    assert merged == {**client.status(run_id)}
    last = client.changes(run_id, since=client.changes(run_id)["cursor"])
    assert last["tasks"] == [] and last["run"]["status"] == "succeeded"


def test_a_delta_holds_only_what_changed(redis_url, stack):
    """Once the quick leaf has succeeded, later deltas never carry it again."""
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    run_id = client.submit(tasks.Collect().add_children(tasks.Leaf(i=1), tasks.Slow(seconds=1.0)))
    view = client.changes(run_id)
    leaf = next(t["id"] for t in view["tasks"] if t["name"] == "Leaf")

    def leaf_done() -> bool:
        nonlocal view
        view = _merge(view, delta := client.changes(run_id, since=view.get("cursor")))
        view["cursor"] = delta["cursor"]
        return any(t["id"] == leaf and t["state"] == "succeeded" for t in view["tasks"])

    wait_for(leaf_done, 30, what="leaf succeeded")
    seen_ids: set[str] = set()
    while view["status"] not in ("succeeded", "failed"):
        client.await_end(run_id, 0.2)
        delta = client.changes(run_id, since=view["cursor"])
        seen_ids |= {t["id"] for t in delta["tasks"]}
        view = {**_merge(view, delta), "cursor": delta["cursor"]}
    assert view["status"] == "succeeded" and leaf not in seen_ids
    assert {t["name"] for t in view["tasks"] if t["state"] == "succeeded"} == {
        "Leaf",
        "Slow",
        "Collect",
    }


def test_api_since_returns_the_delta_and_refuses_a_bad_cursor(redis_url):
    from plankton.api import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(create_app(redis_url, ["tests.dags.tasks"])) as api:
        run_id = api.post("/dags/fanin/runs", json={"params": {"n": 3}}).json()["run_id"]
        assert "cursor" not in api.get(f"/runs/{run_id}").json()  # as `show --json`
        full = api.get(f"/runs/{run_id}", params={"since": 0}).json()
        assert full["full"] is True and len(full["tasks"]) == 4 and full["cursor"] >= 0
        delta = api.get(f"/runs/{run_id}", params={"since": full["cursor"]}).json()
        assert delta["full"] is False and delta["tasks"] == []
        assert delta["run_id"] == run_id and delta["cursor"] == full["cursor"]
        bad = api.get(f"/runs/{run_id}", params={"since": "-1"})
        assert bad.status_code == 422 and "since" in bad.text
        assert api.get("/runs/nope", params={"since": 3}).status_code == 404


def test_wait_on_progress_gets_whole_runs_from_deltas(cluster, redis_url):
    client = pk.Client(redis_url, imports=["tests.dags.tasks"])
    run_id = client.submit("fanin", params={"n": 3})
    seen: list[dict] = []
    cluster.start()
    final = client.wait(run_id, timeout=60, on_progress=seen.append, interval=0.05)
    assert final["status"] == "succeeded" and seen
    assert all(len(p["tasks"]) == 4 and p["run_id"] == run_id for p in seen)
    assert [t["id"] for t in seen[-1]["tasks"]] == ["0", "1", "2", "3"]


def test_task_view_reads_only_the_fields_reads_fetch():
    """Reads HMGET ``reading.VIEW_FIELDS``: a field task_view uses must be among them."""

    class Recorder(dict):
        used: set[str] = set()

        def get(self, key, default=None):
            self.used.add(key)
            return super().get(key, default)

    for state in ("pending", "running", "succeeded", "failed"):
        reading.task_view("0", Recorder(state=state.encode()))
    assert Recorder.used <= set(reading.VIEW_FIELDS), Recorder.used - set(reading.VIEW_FIELDS)
