"""Webhooks on run end: a real HTTP receiver, real schedulers (one SIGKILLed), a real worker."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plankton import keys
from plankton.authoring.dag import Dag
from plankton.errors import DagError
from plankton.operations import alerts
from plankton.settings import Settings
from tests.dags.obs_tasks import on_ok
from tests.servers import wait_for

SECRET = "s3cret-for-tests"


class Receiver:
    """A local HTTP server that answers 500 to the first ``fail`` POSTs, then 200."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.got: list[tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    code = 500 if len(outer.got) < outer.fail else 200
                    outer.got.append((code, dict(self.headers), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self.lock:
            return len(self.got)


def _leader_process(cluster, r, names: dict[str, object]):
    token = r.get(keys.LEADER)
    assert token is not None
    name = token.decode().rsplit("-", 1)[0]
    return name, names[name]


def test_webhook_reaches_the_receiver_once_through_two_failures_and_a_leader_sigkill(
    cluster, r, client
):
    with Receiver(fail=2) as receiver:
        env = {
            "PLANKTON_WEBHOOK_URL": receiver.url,
            "PLANKTON_WEBHOOK_SECRET": SECRET,
            "PLANKTON_WEBHOOK_BACKOFF": "0.3",
            "PLANKTON_WEBHOOK_TIMEOUT": "1",
            "PLANKTON_CONSOLE_URL": "http://console.test/",
        }
        cluster.imports = ["tests.dags.tasks", "tests.dags.obs_tasks"]
        procs = {"sa": cluster.scheduler("sa", **env), "sb": cluster.scheduler("sb", **env)}
        cluster.worker("w1")
        client.registry.add_module("tests.dags.obs_tasks")
        run_id = client.submit("obs_fail")
        ok_id = client.submit("obs_ok")
        assert client.wait(run_id, timeout=60)["status"] == "failed"
        assert client.wait(ok_id, timeout=60)["status"] == "succeeded"

        wait_for(lambda: receiver.count() >= 1, timeout=30, what="first webhook POST")
        name, leader = _leader_process(cluster, r, procs)
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)

        wait_for(lambda: receiver.count() >= 3, timeout=60, what="third webhook POST")
        member = json.dumps([run_id, receiver.url])
        wait_for(
            lambda: r.hget(keys.alerts(run_id), member) == b"sent",
            timeout=30,
            what="delivery recorded as sent",
        )
        assert r.hget(keys.alerts(run_id), f"tries:{receiver.url}") == b"3"
        assert _leader_process(cluster, r, procs)[0] != name  # the standby sent the rest
        # the success callable ran once, in a scheduler (perhaps after the claim of the
        # killed leader expired)
        hook = json.dumps([ok_id, alerts.identity(on_ok)])
        wait_for(
            lambda: r.hget(keys.alerts(ok_id), hook) == b"sent",
            timeout=30,
            what="on_success callable",
        )
        assert r.zcard(keys.OUTBOX) == 0  # nothing left that anyone could send again

    codes = [code for code, _, _ in receiver.got]
    assert codes == [500, 500, 200], codes  # exactly one accepted delivery
    deliveries = {h["X-Plankton-Delivery"] for _, h, _ in receiver.got}
    assert len(deliveries) == 1  # the same delivery id on every try
    for _, headers, body in receiver.got:
        assert alerts.verify(SECRET, body, headers["X-Plankton-Signature"])
        assert not alerts.verify("wrong", body, headers["X-Plankton-Signature"])
        assert headers["X-Plankton-Event"] == "run.failed"
    body = json.loads(receiver.got[-1][2])
    assert body["run_id"] == run_id and body["dag"] == "obs_fail"
    assert body["status"] == "failed" and body["event"] == "run.failed"
    assert body["url"] == f"http://console.test/runs/{run_id}"
    assert [t["name"] for t in body["failed_tasks"]] == ["Boom"]
    assert "ValueError: boom" in body["failed_tasks"][0]["error"]
    assert body["failed_tasks_total"] == 1
    assert "hunter2" not in json.dumps(body)  # the DSN's password is redacted
    assert body["params"]["dsn"].startswith("postgresql://")

    hooked = [json.loads(x) for x in r.lrange("obs:hook", 0, -1)]
    assert [h["run_id"] for h in hooked] == [ok_id]
    assert hooked[0]["status"] == "succeeded" and hooked[0]["failed_tasks"] == []


def test_destinations_follow_the_dag_and_the_global_url():
    def hook(payload):
        return None

    dag = Dag(
        lambda: None, name="d", on_failure=["https://a.test/x", hook], on_success="http://b.test/y"
    )
    s = Settings(webhook_url="https://global.test/")
    assert alerts.destinations(dag, "failed", s) == [
        "https://a.test/x",
        alerts.identity(hook),
        "https://global.test/",
    ]
    assert alerts.destinations(dag, "succeeded", s) == ["http://b.test/y"]
    assert alerts.destinations(dag, "cancelled", s) == []
    assert alerts.destinations(None, "failed", s) == ["https://global.test/"]


@pytest.mark.parametrize("bad", ["ftp://x", 42, ["https://ok.test", "nope"]])
def test_a_bad_alert_destination_is_refused_naming_the_dag(bad):
    with pytest.raises(DagError, match="DAG d: on_failure takes http"):
        Dag(lambda: None, name="d", on_failure=bad)
