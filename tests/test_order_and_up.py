"""Task order (depth-first post-order unless priority) and the embedded `plankton up`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import plankton as pk
from tests.dags import tasks

ROOT = Path(__file__).resolve().parent.parent


def test_leaves_run_in_depth_first_post_order_unless_a_task_sets_priority(client, r, stack):
    root = tasks.Collect().add_children(
        tasks.Relay().add_children(tasks.Stamp(label="a"), tasks.Stamp(label="b")),
        tasks.Stamp(label="c"),
        tasks.Relay().add_children(tasks.Stamp(label="d"), tasks.UrgentStamp(label="urgent")),
    )
    run = client.wait(client.submit(root), timeout=60)
    assert run["status"] == "succeeded"
    order = [x.decode() for x in r.lrange("pk:test:order", 0, -1)]
    assert order == ["urgent", "a", "b", "c", "d"]


def _processes_using(port: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f":{port}/".encode() in env or f"--port\x00{port}\x00".encode() in cmd:
            found.append(int(pid))
    return found


def test_up_runs_the_demo_and_leaves_no_process_behind(tmp_path):
    data = tmp_path / "pk"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plankton.cli",
            "up",
            "--import",
            "examples.simple",
            "--run",
            "simple",
            "--dir",
            str(data),
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Aggregator" in done.stdout and "succeeded" in done.stdout
    assert '"hihihihihihihihihihi"' in done.stdout
    port = (data / "url").read_text().strip().rsplit(":", 1)[1].split("/")[0]
    assert _processes_using(port) == []


def test_up_with_unknown_dag_exits_non_zero_before_starting_anything(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "plankton.cli",
            "up",
            "--import",
            "examples.simple",
            "--run",
            "nope",
            "--dir",
            str(tmp_path / "x"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "nope" in done.stderr
    assert not (tmp_path / "x").exists()


def test_client_submit_of_a_task_tree_in_a_script(redis_url, stack):
    client = pk.Client(redis_url)
    root = tasks.Count().add_children(*(tasks.Leaf(i=i) for i in range(5)))
    assert client.wait(client.submit(root), timeout=60)["result"] == 5
