"""The HTTP API against a real Redis and real scheduler/worker processes (no mocks).

In-process tests drive the ASGI app with Starlette's TestClient (httpx underneath); the last
ones start ``python -m plankton.api`` as a real process and talk to it with curl.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import httpx
import pytest
import redis

import plankton as pk
from plankton import keys
from plankton.api import create_app
from plankton.api.serve import is_loopback
from plankton.states import RUN_ENDED as ENDED
from tests.dags.tasks import Collect, Slow
from tests.servers import RedisServer, free_port, wait_for

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 package; httpx still works (see the report in docs).
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The API serves the test DAGs and the few below (the workers only need tests.dags.tasks).
IMPORTS = ["tests.dags.tasks", __name__]
TOKEN = "s3cret-token-for-tests"


@pk.dag
def slow(seconds: float = 30.0):
    """One Slow task under a Collect: long enough to cancel."""
    return Collect().add_children(Slow(seconds=seconds))


@pk.dag
def needs(n: int, label: str = "x"):
    """A DAG with a required param."""
    return Collect().add_children(Slow(seconds=0.0, tag=f"{label}{n}"))


@pk.dag
def broken(n: int = 1):
    """Valid params, invalid tree: the DAG function returns no task."""
    return f"not a task ({n})"


@pk.dag(name="odd name")
def odd(k: int = 1):
    """A DAG whose name is no path segment: served by the generic route only."""
    return Collect().add_children(Slow(seconds=0.0, tag=str(k)))


# -- helpers --------------------------------------------------------------------------------
@pytest.fixture
def api(redis_url):
    with TestClient(create_app(redis_url, IMPORTS)) as c:
        yield c


@pytest.fixture
def authed(redis_url):
    with TestClient(create_app(redis_url, IMPORTS, token=TOKEN)) as c:
        yield c


@contextlib.contextmanager
def nothing_written(r: redis.Redis):
    """Assert the block leaves Redis exactly as it found it (same keys, same DBSIZE)."""
    size, names = r.dbsize(), sorted(r.keys("*"))
    yield
    assert r.dbsize() == size
    assert sorted(r.keys("*")) == names


def follow(api, run_id: str, timeout: float = 60.0) -> dict:
    def ended():
        run = api.get(f"/runs/{run_id}").json()
        return run if run["status"] in ENDED else None

    return wait_for(ended, timeout, interval=0.1, what=f"run {run_id} to end")


def create(api, dag: str, **body) -> str:
    got = api.post(f"/dags/{dag}/runs", json=body)
    assert got.status_code == 201, got.text
    assert got.headers["location"] == f"/runs/{got.json()['run_id']}"
    return got.json()["run_id"]


def loc(response) -> list:
    return response.json()["detail"][0]["loc"]


# -- health and DAGs ------------------------------------------------------------------------
def test_healthz_says_ok_when_redis_answers(api):
    got = api.get("/healthz")
    assert got.status_code == 200
    assert got.json() == {"status": "ok", "redis": "ok"}


def test_dags_lists_every_imported_dag_with_its_param_types_and_schemas(api):
    got = api.get("/dags")
    assert got.status_code == 200
    dags = {d["name"]: d for d in got.json()}
    assert {"fanin", "chain", "failing", "stream3", "slow", "needs", "odd name"} <= set(dags)
    n = dags["needs"]["params"]["n"]
    assert (n["type"], n["required"]) == ("int", True)
    assert n["json_schema"]["type"] == "integer"
    assert dags["fanin"]["params"]["n"]["default"] == 10
    assert dags["fanin"]["last_run"] is None and dags["fanin"]["next_fire"] is None


def test_openapi_gives_each_dag_a_route_typed_by_its_signature(api):
    doc = api.get("/openapi.json").json()
    assert {
        "/healthz",
        "/dags",
        "/dags/{dag}/runs",
        "/dags/fanin/runs",
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/rerun",
        "/runs/{run_id}/cancel",
    } <= set(doc["paths"])
    params = doc["components"]["schemas"]["needs_params"]
    assert params["required"] == ["n"]
    assert params["additionalProperties"] is False
    assert params["properties"]["n"]["maximum"] == 2**64 - 1
    assert params["properties"]["label"]["default"] == "x"
    assert "security" not in doc  # no token, no auth


# -- create, follow, show -------------------------------------------------------------------
def test_a_run_created_over_http_is_followed_to_succeeded(api, stack):
    run_id = create(
        api, "fanin", params={"n": 5}, since="2024-01-01T00:00:00Z", to="2024-01-02T00:00:00+00:00"
    )
    run = follow(api, run_id)
    assert run["status"] == "succeeded", run
    assert run["result"] == 5
    assert run["params"] == {"n": 5}
    assert run["since"].startswith("2024-01-01T00:00:00")
    assert {t["state"] for t in run["tasks"]} == {"succeeded"}
    shown = stack.cli("show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == run  # the same JSON as `plankton show --json`
    listed = api.get("/runs", params={"dag": "fanin", "status": "succeeded"}).json()
    assert [r["run_id"] for r in listed["runs"]] == [run_id]
    last = {d["name"]: d for d in api.get("/dags").json()}["fanin"]["last_run"]
    assert (last["run_id"], last["status"]) == (run_id, "succeeded")


def test_a_dag_whose_name_is_no_path_segment_runs_through_the_generic_route(api, r):
    got = api.post("/dags/odd%20name/runs", json={"params": {"k": 4}})
    assert got.status_code == 201, got.text
    assert api.get(f"/runs/{got.json()['run_id']}").json()["dag"] == "odd name"


def test_a_body_is_optional_when_every_param_has_a_default(api):
    got = api.post("/dags/fanin/runs")
    assert got.status_code == 201, got.text
    assert api.get(f"/runs/{got.json()['run_id']}").json()["params"] == {"n": 10}


# -- listing --------------------------------------------------------------------------------
def test_runs_are_listed_newest_first_in_pages_without_gaps_or_repeats(api, client, r):
    ids = [client.submit("fanin", {"n": 1}) for _ in range(7)]
    ids += [client.submit("chain", {"depth": 1}) for _ in range(3)]
    # Four runs submitted "in the same millisecond": a page boundary falls among them.
    tied = r.zscore(keys.RUNS, ids[2])
    r.zadd(keys.RUNS, {rid: tied for rid in ids[2:6]})
    expected = [m.decode() for m in r.zrevrange(keys.RUNS, 0, -1)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("/runs", params=params).json()
        seen += [run["run_id"] for run in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 4
    chain = api.get("/runs", params={"dag": "chain"}).json()
    by_time = [m.decode() for m in r.zrevrange(keys.dag_runs("chain"), 0, -1)]
    assert [run["run_id"] for run in chain["runs"]] == by_time
    assert set(by_time) == set(ids[7:])
    assert chain["next_cursor"] is None
    assert api.get("/runs", params={"status": "succeeded"}).json() == {
        "runs": [],
        "next_cursor": None,
    }
    assert len(api.get("/runs", params={"status": "queued"}).json()["runs"]) == 10


# -- rerun and cancel -----------------------------------------------------------------------
def test_rerun_with_an_override_makes_a_new_run_that_succeeds(api, stack):
    first = create(api, "fanin", params={"n": 3})
    assert follow(api, first)["status"] == "succeeded"
    plan = api.post(
        f"/runs/{first}/rerun", params={"dry_run": "true"}, json={"params": {"Leaf.i": 7}}
    )
    assert plan.status_code == 200, plan.text
    assert {c["name"] for c in plan.json()["changed"]} == {"Leaf", "Count"}
    got = api.post(f"/runs/{first}/rerun", json={"params": {"Leaf.i": 7}})
    assert got.status_code == 201, got.text
    second = got.json()["run_id"]
    assert second != first
    run = follow(api, second)
    assert run["status"] == "succeeded" and run["result"] == 3
    assert run["rerun_of"] == first
    assert {t["params"]["i"] for t in run["tasks"] if t["name"] == "Leaf"} == {7}
    again = api.post(f"/runs/{first}/rerun")  # no overrides: the same tree again
    assert again.status_code == 201
    assert follow(api, again.json()["run_id"])["status"] == "succeeded"


def test_a_rerun_of_a_rerun_is_made(api, client):
    first = client.submit("fanin", {"n": 2})
    second = api.post(f"/runs/{first}/rerun", json={"params": {"Leaf.i": 1}}).json()["run_id"]
    third = api.post(f"/runs/{second}/rerun")
    assert third.status_code == 201


def test_cancel_stops_a_slow_run(api, stack):
    run_id = create(api, "slow", params={"seconds": 60})

    def slow_running():
        run = api.get(f"/runs/{run_id}").json()
        return any(t["name"] == "Slow" and t["state"] == "running" for t in run["tasks"])

    wait_for(slow_running, 30, interval=0.1, what="the Slow task to start")
    started = time.monotonic()
    got = api.post(f"/runs/{run_id}/cancel")
    assert got.status_code == 200
    assert got.json() == {"run_id": run_id, "status": "cancelled"}

    def all_stopped():
        run = api.get(f"/runs/{run_id}").json()
        return run if all(t["state"] == "cancelled" for t in run["tasks"]) else None

    run = wait_for(all_stopped, 30, interval=0.1, what="the tasks to be cancelled")
    assert run["status"] == "cancelled"
    assert time.monotonic() - started < 30  # long before the 60 s sleep would end
    again = api.post(f"/runs/{run_id}/cancel")  # cancelling an ended run changes nothing
    assert again.json() == {"run_id": run_id, "status": "cancelled"}


# -- every 4xx path: the status, the field named, and nothing written -------------------------
BAD_CREATES = [
    ("nope", {"params": {}}, 404, None),
    ("fanin", {"params": {"n": "x"}}, 422, ["body", "params", "n"]),
    ("fanin", {"params": {"n": 2**64}}, 422, ["body", "params", "n"]),
    ("fanin", {"params": {"n": True}}, 422, ["body", "params", "n"]),
    ("fanin", {"params": {"zz": 1}}, 422, ["body", "params", "zz"]),
    ("fanin", {"parms": {"n": 1}}, 422, ["body", "parms"]),
    ("fanin", {"params": [1]}, 422, ["body", "params"]),
    ("fanin", [1, 2], 422, ["body"]),
    ("needs", {}, 422, ["body", "params"]),
    ("needs", {"params": {}}, 422, ["body", "params", "n"]),
    ("needs", {"params": {"n": 1, "label": 5}}, 422, ["body", "params", "label"]),
    ("odd%20name", {"params": {"k": "x"}}, 422, ["body", "params", "k"]),
    ("odd%20name", {"params": {"j": 1}}, 422, ["body", "params", "j"]),
    ("fanin", {"since": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, 422, ["body", "to"]),
    ("fanin", {"since": "2024-01-01T00:00:00"}, 422, ["body", "since"]),
    ("fanin", {"since": 1704067200}, 422, ["body", "since"]),
    ("fanin", {"since": "1704067200"}, 422, ["body", "since"]),
    ("fanin", {"to": "next tuesday"}, 422, ["body", "to"]),
]


@pytest.mark.parametrize("dag,body,status,where", BAD_CREATES)
def test_a_bad_create_is_refused_naming_the_field_and_writes_nothing(
    api, r, dag, body, status, where
):
    with nothing_written(r):
        got = api.post(f"/dags/{dag}/runs", json=body)
    assert got.status_code == status, got.text
    if where is not None:
        assert loc(got) == where
    else:
        assert "unknown DAG: 'nope'" in got.json()["detail"]


BAD_REQUESTS = [
    ("GET", "/runs?limit=0", 422, ["query", "limit"]),
    ("GET", "/runs?limit=201", 422, ["query", "limit"]),
    ("GET", "/runs?status=done", 422, ["query", "status"]),
    ("GET", "/runs?cursor=abc", 422, ["query", "cursor"]),
    ("GET", "/runs/nope", 404, None),
    ("POST", "/runs/nope/cancel", 404, None),
    ("POST", "/runs/nope/rerun", 404, None),
    ("GET", "/nowhere", 404, None),
    ("GET", "/runs/", 404, None),
    ("DELETE", "/runs", 405, None),
    ("GET", "/dags/fanin/runs", 405, None),
]


@pytest.mark.parametrize("method,url,status,where", BAD_REQUESTS)
def test_a_bad_request_is_refused_and_writes_nothing(api, r, method, url, status, where):
    with nothing_written(r):
        got = api.request(method, url)
    assert got.status_code == status, got.text
    assert got.headers["content-type"] == "application/json"
    if where is not None:
        assert loc(got) == where


def test_malformed_json_is_422_naming_the_body(api, r):
    with nothing_written(r):
        got = api.post(
            "/dags/fanin/runs",
            content=b'{"params": {',
            headers={"Content-Type": "application/json"},
        )
    assert got.status_code == 422
    assert got.json()["detail"][0]["type"] == "json_invalid"
    assert loc(got)[0] == "body"


def test_a_body_over_1_mib_is_413_by_content_length_or_as_it_streams(api, r):
    big = b'{"params": {"n": 1}, "pad": "' + b"x" * (1024 * 1024) + b'"}'

    def chunks():  # no Content-Length: chunked transfer encoding
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    with nothing_written(r):
        declared = api.post(
            "/dags/fanin/runs", content=big, headers={"Content-Type": "application/json"}
        )
        streamed = api.post(
            "/dags/fanin/runs", content=chunks(), headers={"Content-Type": "application/json"}
        )
    for got in (declared, streamed):
        assert got.status_code == 413, got.text
        assert "1 MiB" in got.json()["detail"]
    exactly = b'{"params": {"n": 1}, "since": null, "to": null}'
    exactly += b" " * (1024 * 1024 - len(exactly))
    assert (
        api.post(
            "/dags/fanin/runs", content=exactly, headers={"Content-Type": "application/json"}
        ).status_code
        == 201
    )


def test_bad_rerun_overrides_are_422_naming_the_override_and_write_nothing(api, client, r):
    run_id = client.submit("fanin", {"n": 2})
    cases = [
        ({"Leaf.i": "x"}, ["body", "params", "Leaf.i"]),
        ({"Leaf.zz": 1}, ["body", "params", "Leaf.zz"]),
        ({"Nope.i": 1}, ["body", "params"]),
        ({"noDot": 1}, ["body", "params", "noDot"]),
        ([1], ["body", "params"]),
    ]
    for overrides, where in cases:
        with nothing_written(r):
            got = api.post(f"/runs/{run_id}/rerun", json={"params": overrides})
            dry = api.post(f"/runs/{run_id}/rerun?dry_run=true", json={"params": overrides})
        for response in (got, dry):
            assert response.status_code == 422, (overrides, response.text)
            assert loc(response) == where, overrides


# -- auth -----------------------------------------------------------------------------------
ROUTES = [
    ("GET", "/dags"),
    ("POST", "/dags/fanin/runs"),
    ("POST", "/dags/nope/runs"),
    ("GET", "/runs"),
    ("GET", "/runs/nope"),
    ("POST", "/runs/nope/rerun"),
    ("POST", "/runs/nope/cancel"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/nowhere"),
]


def test_with_a_token_every_route_but_healthz_needs_the_bearer_token(authed, r):
    wrong = [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ]
    with nothing_written(r):
        for method, url in ROUTES:
            for headers in wrong:
                got = authed.request(method, url, headers=headers, json={})
                assert got.status_code == 401, (method, url, headers)
                assert got.headers["www-authenticate"] == "Bearer"
                assert "bearer token" in got.json()["detail"]
        # Refused before the body is read or parsed: no 413, no 422 leaks out.
        assert authed.post("/dags/fanin/runs", content=b"x" * (2 << 20)).status_code == 401
        assert authed.post("/dags/fanin/runs", content=b"{").status_code == 401
    assert authed.get("/healthz").status_code == 200
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert authed.get("/dags", headers=good).status_code == 200
    assert authed.get("/runs/nope", headers=good).status_code == 404
    assert (
        authed.post(
            "/dags/fanin/runs",
            headers={"Authorization": f"bearer {TOKEN}"},
            json={"params": {"n": 1}},
        ).status_code
        == 201
    )
    doc = authed.get("/openapi.json", headers=good).json()
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in doc["paths"]["/runs"]["get"]["responses"]


def test_without_a_token_no_route_asks_for_one(api):
    for method, url in ROUTES:
        got = api.request(method, url, json={})
        assert got.status_code != 401, (method, url)


# -- Redis unreachable ----------------------------------------------------------------------
def test_every_route_answers_503_with_a_clear_message_when_redis_is_unreachable():
    url = f"redis://:hunter2pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    with TestClient(create_app(url, IMPORTS), raise_server_exceptions=False) as down:
        for method, path in [("GET", "/healthz"), *ROUTES[:7]]:
            if path == "/dags/nope/runs":  # known to be unknown without asking Redis
                continue
            started = time.monotonic()
            got = down.request(method, path, json={})
            assert time.monotonic() - started < 5, (method, path)
            assert got.status_code == 503, (method, path, got.text)
            detail = got.json()["detail"]
            assert "Redis at redis://***@127.0.0.1:" in detail and "unavailable" in detail
            assert "hunter2pw" not in got.text and "Traceback" not in got.text
            assert got.headers["retry-after"] == "5"
        assert down.get("/openapi.json").status_code == 200  # needs no Redis


def test_the_api_recovers_when_redis_comes_back(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        with TestClient(create_app(server.url, IMPORTS), raise_server_exceptions=False) as c:
            assert c.get("/healthz").status_code == 200
            server.stop()
            assert c.get("/healthz").status_code == 503
            assert c.get("/runs").status_code == 503
            server.start()
            assert c.get("/healthz").status_code == 200
            assert c.post("/dags/fanin/runs").status_code == 201
    finally:
        server.stop()


# -- idempotency ----------------------------------------------------------------------------
def test_the_same_idempotency_key_gives_the_same_run_and_starts_no_second(api, r):
    headers = {"Idempotency-Key": "3f2c-a-retried-post"}
    first = api.post("/dags/fanin/runs", json={"params": {"n": 2}}, headers=headers)
    again = api.post("/dags/fanin/runs", json={"params": {"n": 2}}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert r.zcard(keys.RUNS) == 1
    assert 86_000 < r.ttl(keys.idempotency("3f2c-a-retried-post")) <= 86_400
    other = api.post(
        "/dags/fanin/runs", json={"params": {"n": 2}}, headers={"Idempotency-Key": "another"}
    )
    assert other.json()["run_id"] != first.json()["run_id"]
    assert r.zcard(keys.RUNS) == 2


def test_an_idempotency_key_reused_for_another_request_is_422_and_writes_nothing(api, r):
    headers = {"Idempotency-Key": "k-1"}
    assert (
        api.post("/dags/fanin/runs", json={"params": {"n": 2}}, headers=headers).status_code == 201
    )
    with nothing_written(r):
        for dag, body in [
            ("fanin", {"params": {"n": 3}}),
            ("chain", {"params": {}}),
            ("fanin", {"params": {"n": 2}, "since": "2024-01-01T00:00:00Z"}),
        ]:
            got = api.post(f"/dags/{dag}/runs", json=body, headers=headers)
            assert got.status_code == 422, got.text
            assert loc(got) == ["header", "Idempotency-Key"]
        for bad in ["x" * 256, "has space", "é".encode("latin-1"), "tab\there"]:
            got = api.post("/dags/fanin/runs", json={}, headers={"Idempotency-Key": bad})
            assert got.status_code == 422
            assert loc(got) == ["header", "Idempotency-Key"]


def test_a_refused_request_does_not_use_up_its_idempotency_key(api, r):
    headers = {"Idempotency-Key": "k-2"}
    with nothing_written(r):
        bad = api.post("/dags/fanin/runs", json={"params": {"n": "x"}}, headers=headers)
        assert bad.status_code == 422
        tree = api.post("/dags/broken/runs", json={"params": {"n": 2}}, headers=headers)
        assert tree.status_code == 422, tree.text
        assert loc(tree) == ["body", "params"]
        assert "returned str, not a pk.Task" in tree.json()["detail"][0]["msg"]
    assert (
        api.post("/dags/fanin/runs", json={"params": {"n": 1}}, headers=headers).status_code == 201
    )


def test_a_rerun_with_an_idempotency_key_is_made_once(api, client, r):
    run_id = client.submit("fanin", {"n": 2})
    headers = {"Idempotency-Key": "rerun-1"}
    first = api.post(f"/runs/{run_id}/rerun", json={"params": {"Leaf.i": 1}}, headers=headers)
    again = api.post(f"/runs/{run_id}/rerun", json={"params": {"Leaf.i": 1}}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert r.zcard(keys.RUNS) == 2


# -- the real process -----------------------------------------------------------------------
@contextlib.contextmanager
def api_process(*args: str, env: dict[str, str]):
    proc = subprocess.Popen(
        [sys.executable, "-m", "plankton.api", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.output = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()


def curl(*args: str) -> tuple[int, dict]:
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else {}


def up(base: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the API exited with {proc.returncode}: {proc.stdout.read()}")
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_real_server_creates_and_follows_a_run_over_curl(stack):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with api_process("--import", "tests.dags.tasks", "--port", str(port), env=stack.env()) as proc:
        wait_for(lambda: up(base, proc), 20, interval=0.1, what="the API to answer")
        code, created = curl(
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Idempotency-Key: curl-1",
            "-d",
            '{"params": {"n": 4}}',
            f"{base}/dags/fanin/runs",
        )
        assert code == 201, created
        run_id = created["run_id"]

        def ended():
            status, run = curl(f"{base}/runs/{run_id}")
            assert status == 200
            return run if run["status"] in ENDED else None

        run = wait_for(ended, 60, interval=0.2, what="the run to end")
        assert (run["status"], run["result"]) == ("succeeded", 4)
        # Retries racing each other with one key: one run, one id.
        body = {"params": {"n": 1}}
        with (
            httpx.Client(base_url=base, timeout=30) as http,
            concurrent.futures.ThreadPoolExecutor(8) as pool,
        ):
            replies = list(
                pool.map(
                    lambda _: http.post(
                        "/dags/fanin/runs", json=body, headers={"Idempotency-Key": "race-1"}
                    ),
                    range(16),
                )
            )
        made = {g.json()["run_id"] for g in replies if g.status_code == 201}
        assert len(made) == 1
        assert {g.status_code for g in replies} <= {201, 409}
        code, listed = curl(f"{base}/runs?limit=200")
        assert len(listed["runs"]) == 2
    # SIGTERM: uvicorn lets requests finish, then exits by the same signal (Unix convention).
    assert proc.returncode in (0, -signal.SIGTERM), proc.output
    assert "Finished server process" in proc.output and "Traceback" not in proc.output


def test_a_public_bind_without_a_token_is_refused_at_start(cluster):
    env = cluster.env()
    for cmd in (
        [sys.executable, "-m", "plankton.api", "--host", "0.0.0.0", "--port", "0"],
        [sys.executable, "-m", "plankton.cli", "api", "--host", "0.0.0.0", "--port", "0"],
    ):
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert "PLANKTON_API_TOKEN" in done.stderr and "0.0.0.0" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_public_bind_with_a_token_serves_and_checks_it(cluster):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cluster.env(PLANKTON_API_TOKEN=TOKEN)
    with api_process(
        "--import", "tests.dags.tasks", "--host", "0.0.0.0", "--port", str(port), env=env
    ) as proc:
        wait_for(lambda: up(base, proc), 20, interval=0.1, what="the API to answer")
        assert curl(f"{base}/dags")[0] == 401
        code, dags = curl("-H", f"Authorization: Bearer {TOKEN}", f"{base}/dags")
        assert code == 200 and "fanin" in {d["name"] for d in dags}


def test_a_bad_import_is_refused_at_start_with_a_clear_message(cluster):
    done = subprocess.run(
        [sys.executable, "-m", "plankton.api", "--import", "no.such.module"],
        env=cluster.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "no.such.module" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "host,expected",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.1", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host, expected):
    assert is_loopback(host) is expected
