"""PLANKTON_LOG_FORMAT=json: every line each process writes is one JSON object."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from plankton.errors import ConfigError
from plankton.operations import logsetup
from tests.cluster import ROOT
from tests.servers import free_port, wait_for


def _objects(text: str) -> list[dict]:
    """Every non-empty line parsed as JSON (a line that is not fails the test, named)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}")
    for obj in out:
        assert {"ts", "level", "role", "msg", "logger", "pid"} <= set(obj), obj
    return out


def test_worker_and_scheduler_log_json_with_run_and_task_ids(cluster, client, tmp_path: Path):
    cluster.imports = ["tests.dags.tasks", "tests.dags.obs_tasks"]
    client.registry.add_module("tests.dags.obs_tasks")
    cluster.scheduler("sj", PLANKTON_LOG_FORMAT="json")
    cluster.worker("wj", PLANKTON_LOG_FORMAT="json")
    run_id = client.submit("obs_talk")
    assert client.wait(run_id, timeout=60)["status"] == "succeeded"
    logs = {"sj": tmp_path / "sj-0.log", "wj": tmp_path / "wj-1.log"}
    # each record is written and flushed as a whole line; wait for the ones looked at
    wait_for(
        lambda: b"talking from a task" in logs["wj"].read_bytes(),
        timeout=30,
        what="the task's line in the worker log",
    )
    wait_for(
        lambda: b"leads" in logs["sj"].read_bytes(), timeout=30, what="the scheduler's lead line"
    )
    lines = {name: _objects(path.read_text()) for name, path in logs.items()}
    assert {o["role"] for o in lines["sj"]} == {"scheduler"}
    assert {o["role"] for o in lines["wj"]} == {"worker"}
    assert any("leads" in o["msg"] for o in lines["sj"])
    talk = [o for o in lines["wj"] if "talking from a task" in o["msg"]]
    assert len(talk) == 1
    assert talk[0]["run_id"] == run_id and talk[0]["task_id"] == "0"
    assert talk[0]["attempt"] == 1 and talk[0]["level"] == "info"
    started = [o for o in lines["wj"] if "serving" in o["msg"]]
    assert started and "run_id" not in started[0]  # only lines about a task carry its ids


def test_api_logs_json_including_uvicorn_access_lines(redis_url):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
    env.update(PLANKTON_LOG_FORMAT="json", PLANKTON_REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "plankton.api", "--import", "tests.dags.tasks", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="the API to answer")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"plankton_workers_live" in resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    objs = _objects(out)
    assert {o["role"] for o in objs} == {"api"}
    assert any(o["logger"] == "uvicorn.access" and "/metrics" in o["msg"] for o in objs)


def test_text_stays_the_default_and_a_bad_format_is_named():
    stream = io.StringIO()
    assert logsetup.configure("worker", "INFO", logsetup.log_format({}), stream=stream) == "text"
    logging.getLogger("plankton.test").info("plain line")
    assert "plain line" in stream.getvalue() and not stream.getvalue().startswith("{")
    with pytest.raises(ConfigError, match="PLANKTON_LOG_FORMAT='yaml'"):
        logsetup.log_format({"PLANKTON_LOG_FORMAT": "yaml"})
    stream = io.StringIO()
    logsetup.configure("scheduler", "INFO", "json", stream=stream)
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logging.getLogger("plankton.test").exception("with a traceback")
    (obj,) = _objects(stream.getvalue())
    assert obj["role"] == "scheduler" and "ValueError: multi\nline" in obj["exc"]
    logging.getLogger().handlers.clear()


def test_up_and_the_processes_it_starts_log_json(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
    env.update(PLANKTON_LOG_FORMAT="json", PYTHONPATH=str(ROOT))
    out = tmp_path / "up.log"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plankton.cli",
                "up",
                "--import",
                "tests.dags.tasks",
                "--workers",
                "1",
                "--port",
                "0",
                "--dir",
                str(tmp_path / "pk"),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: (
                b"Ctrl-C stops everything" in out.read_bytes()
                and b"serving default" in out.read_bytes()
            ),
            timeout=60,
            what="up's banner and its worker's start line",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    objs = _objects(out.read_text())
    assert {"up", "worker"} <= {o["role"] for o in objs}
    assert any(o["role"] == "up" and o["msg"] == "stopping..." for o in objs)
