"""The console's pages over HTTP, without a browser: error pages (unknown run, Redis down)
give a message and no traceback, the login cookie, the origin checks, passwords redacted.
In-process (Starlette's TestClient) against the session's real Redis."""

from __future__ import annotations

import html
import re
import warnings

import pytest

from plankton.api import create_app
from tests.servers import free_port, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x asks for httpx2; httpx works (tests/api)
    from fastapi.testclient import TestClient

IMPORTS = ["tests.console.console_tasks"]
TOKEN = "http-test-token-93ab"


@pytest.fixture
def console(redis_url):
    with TestClient(create_app(redis_url, IMPORTS), base_url="http://127.0.0.1:8080") as c:
        yield c


@pytest.fixture
def locked(redis_url):
    with TestClient(
        create_app(redis_url, IMPORTS, token=TOKEN), base_url="http://127.0.0.1:8080"
    ) as c:
        yield c


def test_every_page_renders(console, client):
    run_id = client.submit("console_demo", {"n": 2})
    for path in (
        "/",
        "/?dag=console_demo&status=queued",
        "/ui/dags",
        "/ui/workers",
        f"/ui/runs/{run_id}",
    ):
        reply = console.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["content-type"].startswith("text/html")
        assert "http://" not in reply.text.replace("http://127.0.0.1", "")  # nothing external
    assert f'href="/ui/runs/{run_id}"' in console.get("/").text


def test_an_unknown_run_is_a_404_page_with_a_message(console):
    reply = console.get("/ui/runs/r-nope")
    assert reply.status_code == 404
    assert "unknown run" in reply.text.lower() and "r-nope" in reply.text
    assert "Traceback" not in reply.text


def test_redis_down_is_a_503_page_with_a_message_not_a_traceback():
    dead = f"redis://:secret-pw@127.0.0.1:{free_port()}/0"
    with TestClient(create_app(dead, IMPORTS), raise_server_exceptions=False) as down:
        for path in ("/", "/ui/dags", "/ui/workers", "/ui/runs/r-any"):
            reply = down.get(path)
            assert reply.status_code == 503, path
            assert "Redis is unavailable" in reply.text
            assert "Traceback" not in reply.text and "secret-pw" not in reply.text


def test_a_url_password_in_a_param_is_not_shown(console, client):
    run_id = client.submit("console_demo", {"n": 1, "tag": "postgresql://etl:hunter2@db/x"})
    page = console.get(f"/ui/runs/{run_id}").text
    tree = console.get(f"/runs/{run_id}?since=0").text
    assert "hunter2" not in page + tree
    assert "etl:***@db" in page


def test_a_cross_site_action_is_refused(console, client):
    run_id = client.submit("console_demo", {"n": 1, "delay": 5.0})
    reply = console.post(f"/runs/{run_id}/cancel", headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403
    assert client.run_status(run_id) != "cancelled"
    ok = console.post(f"/runs/{run_id}/cancel", headers={"Origin": "http://127.0.0.1:8080"})
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"


def test_with_a_token_pages_redirect_to_the_login_and_the_api_still_answers_401(locked):
    reply = locked.get("/ui/runs/r1?x=1", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/login?next=%2Fui%2Fruns%2Fr1%3Fx%3D1"
    assert locked.get("/runs").status_code == 401
    assert locked.get("/ui/static/console.css").status_code == 200
    assert locked.get("/healthz").status_code == 200


def test_login_sets_a_strict_httponly_cookie_and_actions_need_the_origin(locked, client):
    refused = locked.post(
        "/ui/login",
        data={"token": "wrong", "next": "/"},
        headers={"Origin": "http://127.0.0.1:8080"},
        follow_redirects=False,
    )
    assert refused.status_code == 401 and "wrong token" in refused.text
    assert "plankton_session" not in refused.headers.get("set-cookie", "")
    reply = locked.post(
        "/ui/login",
        data={"token": TOKEN, "next": "//evil.example/"},
        headers={"Origin": "http://127.0.0.1:8080"},
        follow_redirects=False,
    )
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN not in cookie
    assert locked.get("/").status_code == 200  # the client keeps the cookie
    assert locked.get("/runs").status_code == 200  # the page's reads of the API too
    run_id = client.submit("console_demo", {"n": 1, "delay": 5.0})
    assert locked.post(f"/runs/{run_id}/cancel").status_code == 403  # cookie, no Origin
    ok = locked.post(f"/runs/{run_id}/cancel", headers={"Origin": "http://127.0.0.1:8080"})
    assert ok.status_code == 200
    locked.post("/ui/logout", headers={"Origin": "http://127.0.0.1:8080"})
    locked.cookies.clear()
    assert locked.get("/runs").status_code == 401


def test_logs_tail_from_an_index(console, client, cluster):
    cluster.start(imports=IMPORTS)
    run_id = client.submit("console_demo", {"n": 2})
    client.wait(run_id, timeout=30)
    first = console.get(f"/ui/runs/{run_id}/logs").json()
    assert len(first["lines"]) == 4 and first["ended"] is True and first["more"] is False
    again = console.get(f"/ui/runs/{run_id}/logs?after={first['next']}").json()
    assert again["lines"] == []
    one = console.get(f"/ui/runs/{run_id}/logs?task=0").json()
    assert {line["task"] for line in one["lines"]} == {"0"}


def test_backfill_form_validates_and_starts(console, client):
    bad = console.post("/ui/dags/console_demo/backfill", json={"since": "yesterday", "to": ""})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "since"]
    none = console.post(
        "/ui/dags/console_broken/backfill", json={"since": "2024-01-01", "to": "2024-01-02"}
    )
    assert none.status_code == 422
    ok = console.post(
        "/ui/dags/console_demo/backfill",
        json={"since": "2024-01-01T00:00:00Z", "to": "2024-01-03T00:00:00Z"},
    )
    assert ok.status_code == 202 and ok.json()["intervals"] == 2
    runs = wait_for(
        lambda: len(client.runs(dag="console_demo")) == 2 and client.runs(dag="console_demo"),
        10,
        0.05,
        "the backfill's two runs",
    )
    # 03:00 in Paris is 02:00 UTC in January: the intervals ending in the range
    assert sorted(r["to"] for r in runs) == [
        "2024-01-01T02:00:00+00:00",
        "2024-01-02T02:00:00+00:00",
    ]


def test_runs_are_paged_newest_first_without_repeats(console, client):
    made = [client.submit("console_demo", {"n": 1}) for _ in range(30)]
    first = console.get("/").text
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older, "a link to the older runs"
    second = console.get(html.unescape(older.group(1))).text
    shown = [re.findall(r'data-run="([^"]+)"', page) for page in (first, second)]
    assert len(shown[0]) == 25 and len(shown[1]) == 5
    # newest first; runs submitted in the same millisecond (a submit takes less) by id
    submitted = {rid: client.status(rid)["submitted_at"] for rid in made}
    assert shown[0] + shown[1] == sorted(made, key=lambda rid: (submitted[rid], rid), reverse=True)
    assert 'id="older"' not in second


def test_the_workers_page_names_the_task_a_worker_runs(console, client, cluster):
    cluster.start(["w-busy"], imports=IMPORTS)
    run_id = client.submit("console_demo", {"n": 1, "delay": 20.0})
    wait_for(
        lambda: client.status(run_id)["tasks"][0]["state"] == "running",
        20,
        0.05,
        "the leaf running",
    )
    page = console.get("/ui/workers").text
    assert "w-busy" in page and f'href="/ui/runs/{run_id}#task-0"' in page
    client.cancel(run_id)
