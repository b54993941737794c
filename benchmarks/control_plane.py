"""``python -m benchmarks.control_plane``: the control plane's table (issue 13).

For each N (default 10,000 and 100,000 leaves under one parent, the ``flat`` DAG), on a
private Redis with a scheduler and 2 workers: submit by DAG name (and, inside it, the DAG
function's tree build), the run itself (``wait(tasks=False)``), ``Client.status``, and the
CLI's ``plankton show RUN`` / ``show RUN --json`` as a user types them (a subprocess, so
interpreter start-up is included and reported apart). Beside them, measured in the same run,
the floors: redis-py pipelining one HSET of a task's fields per task (write) and one HGETALL
per task (read). Prints a table and writes ``benchmarks/results/control-plane-latest.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RedisServer, machine_info, redis_connection, write_json
from benchmarks.plankton_bench import ROOT, Stack

RESULTS = Path(__file__).resolve().parent / "results"


def _floor_write(conn: Any, n: int, chunk: int = 10_000) -> float:
    """One pipelined HSET per task of a record shaped like the one submit writes."""
    record = {
        "family": "benchmarks.bench_tasks:BLeaf",
        "name": "BLeaf",
        "params": b"\x83\xa1i\xcd\x03\xe8\xa5since\xc0\xa2to\xc0",
        "param_hash": "a" * 64,
        "tree_hash": "b" * 64,
        "parent": str(n),
        "children": b"\x90",
        "n_children": 0,
        "n_started": 0,
        "n_done": 0,
        "priority": "",
        "queue": "default",
        "timeout": "",
        "retries": 0,
        "state": "ready",
        "attempt": 1,
        "attempts": 0,
        "fails": 0,
        "lost": 0,
        "order": 0,
    }
    t0 = time.perf_counter()
    pipe = conn.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"floor:task:{i}", mapping=record)
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    took = time.perf_counter() - t0
    for start in range(0, n, chunk):
        conn.delete(*(f"floor:task:{i}" for i in range(start, min(n, start + chunk))))
    return took


def _floor_read(conn: Any, run_id: str, n: int, chunk: int = 10_000) -> float:
    """One pipelined HGETALL per task of the run (raw replies, nothing decoded)."""
    from plankton import keys

    t0 = time.perf_counter()
    pipe = conn.pipeline(transaction=False)
    for i in range(n):
        pipe.hgetall(keys.task(run_id, str(i)))
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - t0


def _cli(env: dict[str, str], *args: str) -> tuple[float, int]:
    """Wall seconds of ``python -m plankton.cli ARGS`` (stdout to a file, not a terminal)."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.run(
            [sys.executable, "-m", "plankton.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.PIPE,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"plankton {' '.join(args)}: {proc.stderr.decode()[-500:]}")
    return time.perf_counter() - t0, proc.returncode


def _render(run: dict[str, Any]) -> float:
    """Seconds ``plankton show`` spends drawing the tree of an already-read run."""
    import io

    from rich.console import Console

    from plankton.views import render

    t0 = time.perf_counter()
    render.print_run(run, Console(file=io.StringIO(), width=160))
    return time.perf_counter() - t0


def measure(client: Any, stack: Stack, n: int) -> dict[str, Any]:
    import plankton as pk  # noqa: F401 - imported for the side effect of the registry

    conn = client.conn
    dag = client.find_dag("flat")
    t0 = time.perf_counter()
    dag.plan({"n": n}, max_tasks=client.settings.max_tasks)
    build = time.perf_counter() - t0
    floor_write = _floor_write(conn, n + 1)
    t0 = time.perf_counter()
    rid = client.submit("flat", params={"n": n})
    submit = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = client.wait(rid, timeout=1800, tasks=False)
    wait = time.perf_counter() - t0
    ok = run["status"] == "succeeded" and run["result"] == n
    floor_read = _floor_read(conn, rid, n + 1)
    t0 = time.perf_counter()
    full = client.status(rid)
    status = time.perf_counter() - t0
    ok &= len(full["tasks"]) == n + 1 and all(t["state"] == "succeeded" for t in full["tasks"])
    render_s = _render(full)
    env = dict(stack.env, PLANKTON_REDIS_URL=client.settings.url)
    startup, _ = _cli(env, "--version")
    show_json, _ = _cli(env, "show", rid, "--json")
    show_tree, _ = _cli(env, "show", rid)
    return {
        "n_tasks": n + 1,
        "checked": bool(ok),
        "build_s": build,
        "submit_s": submit,
        "floor_write_s": floor_write,
        "run_s": wait,
        "status_s": status,
        "floor_read_s": floor_read,
        "cli_startup_s": startup,
        "show_json_s": show_json,
        "show_s": show_tree,
        "render_s": render_s,
        "submit_per_floor": submit / floor_write,
        "status_per_floor": status / floor_read,
        "show_json_per_floor": (show_json - startup) / floor_read,
        "show_render_s": show_tree - show_json,
        "submit_us_per_task": submit / (n + 1) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.control_plane")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--out", default=str(RESULTS / "control-plane-latest.json"))
    args = parser.parse_args(argv)
    import plankton as pk

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    server = RedisServer().start()
    stack = Stack(server.url)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": os.getloadavg(),
        "sizes": {},
    }
    try:
        stack.start(2)
        os.environ["PLANKTON_MAX_TASKS"] = str(max(sizes) + 10)
        client = pk.Client(server.url, imports=["benchmarks.bench_tasks"])
        client.wait(client.submit("flat", params={"n": 10}), timeout=60)  # warm up
        for n in sizes:
            print(f"N = {n:,} ...", file=sys.stderr, flush=True)
            report["sizes"][str(n)] = measure(client, stack, n)
            redis_connection(server.url).flushdb()
            client.wait(client.submit("flat", params={"n": 10}), timeout=60)
    finally:
        stack.stop()
        server.stop()
    report["load_after"] = os.getloadavg()
    print_table(report)
    write_json(report, args.out)
    return 0 if all(s["checked"] for s in report["sizes"].values()) else 1


ROWS = [
    ("submit by DAG name", "submit_s"),
    ("  of which the DAG function's build", "build_s"),
    ("  write floor (pipelined HSET per task)", "floor_write_s"),
    ("the run itself (wait(tasks=False))", "run_s"),
    ("Client.status(run_id)", "status_s"),
    ("  read floor (pipelined HGETALL per task)", "floor_read_s"),
    ("plankton show RUN", "show_s"),
    ("plankton show RUN --json", "show_json_s"),
    ("  CLI start-up (plankton --version)", "cli_startup_s"),
    ("submit / write floor", "submit_per_floor"),
    ("status / read floor", "status_per_floor"),
    ("(show --json - start-up) / read floor", "show_json_per_floor"),
    ("show's tree rendering (show - show --json)", "show_render_s"),
    ("show's tree rendering (in-process)", "render_s"),
    ("submit, us per task", "submit_us_per_task"),
]


def print_table(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    head = f"{'step':<46}" + "".join(f"{'N = ' + format(int(n), ','):>14}" for n in sizes)
    print(head)
    for label, key in ROWS:
        print(f"{label:<46}" + "".join(f"{s[key]:>14.3f}" for s in sizes.values()))
    print(f"{'checked':<46}" + "".join(f"{str(s['checked']):>14}" for s in sizes.values()))
    print(f"load average before/after: {report['load_before']} / {report['load_after']}")


if __name__ == "__main__":
    sys.exit(main())
