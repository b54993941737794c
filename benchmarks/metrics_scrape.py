"""``python -m benchmarks.metrics_scrape``: what one ``GET /metrics`` costs, with 0 and with
100,000 task records in Redis.

The collector (plankton/operations/metrics.py) reads counters from one hash and gauges from the live
state in three pipelined round trips, so its cost should not grow with the number of task
records. This measures it end to end over real HTTP against ``plankton api`` (a uvicorn
process), beside a floor measured in the same run: ``GET /healthz`` (the same HTTP stack,
one Redis PING). Scenarios:

- ``empty``: a fresh Redis.
- ``100k``: one run of 100,000 leaves under one parent, submitted and queued with no worker
  (100,001 task hashes, 100,000 entries in the queue-latency zset, RQ jobs), 64 of its tasks
  holding leases (as if running).
- ``100k+busy``: the same, plus a metrics hash as a busy deployment fills it (20 DAGs, 100
  task families, every histogram bucket used: ~4,000 fields, ~5,900 series). What a scrape
  costs grows with the series it returns (label cardinality), not with task records.

Prints a table and writes ``benchmarks/results/metrics-scrape-latest.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    CommandCounter,
    RedisServer,
    free_port,
    http_get,
    machine_info,
    percentile,
    redis_connection,
    start_process,
    stop_process,
    summarise,
    wait_for,
    write_json,
)
from plankton.engine import counters

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _measure(base: str, conn: Any, n: int) -> dict[str, Any]:
    for _ in range(3):  # warm the connection pools and the script/route caches
        http_get(base + "/metrics")
        http_get(base + "/healthz")
    scrape, floor = [], []
    with CommandCounter(conn) as counted:
        for _ in range(n):
            took, body = http_get(base + "/metrics")
            scrape.append(took * 1000)
    for _ in range(n):
        floor.append(http_get(base + "/healthz")[0] * 1000)
    return {
        "scrape_ms": {**summarise(scrape), "p95": percentile(scrape, 95)},
        "healthz_ms": {**summarise(floor), "p95": percentile(floor, 95)},
        "redis_commands_per_scrape": counted.count / n,
        "bytes": len(body),
        "series": sum(
            1 for line in body.decode().splitlines() if line and not line.startswith("#")
        ),
        "checked": b"plankton_tasks_waiting" in body,
    }


def _fill(url: str, n_tasks: int, leased: int) -> dict[str, Any]:
    """A run of ``n_tasks`` leaves queued with no worker, ``leased`` of them 'running'."""
    import plankton as pk
    from benchmarks import bench_tasks as bt
    from plankton import keys

    client = pk.Client(url, imports=["benchmarks.bench_tasks"])
    started = time.perf_counter()
    root = bt.BCount().add_children(*(bt.BLeaf(i=i) for i in range(n_tasks)))
    run_id = client.submit(root)
    submit_s = time.perf_counter() - started
    conn = client.conn
    now_ms = int(time.time() * 1000)
    conn.zadd(keys.leases(run_id), {str(i): now_ms + 3_600_000 for i in range(leased)})
    tasks = sum(1 for _ in conn.scan_iter(match=keys.task(run_id, "*"), count=10_000))
    out = {
        "run_id": run_id,
        "task_records": tasks,
        "submit_s": submit_s,
        "waiting": conn.zcard(keys.waiting("default")),
        "leased": leased,
    }
    client.close()
    return out


def _busy_metrics(url: str) -> dict[str, Any]:
    """Fill the metrics hash as a busy deployment would: 20 DAGs, 100 task families, every
    histogram bucket used (label cardinality, not task count, sets its size)."""
    from plankton import keys

    conn = redis_connection(url)
    pipe = conn.pipeline(transaction=False)
    for d in range(20):
        dag = f"dag{d}"
        for status in ("succeeded", "failed", "cancelled"):
            counters.count(pipe, "runs_ended", dag, status, n=7)
            for b in range(len(counters.RUN_BUCKETS) + 1):
                pipe.hincrby(keys.METRICS, counters.field("run_seconds_b", dag, status, b + 1), 1)
            pipe.hincrbyfloat(keys.METRICS, counters.field("run_seconds_sum", dag, status), 9.5)
        counters.count(pipe, "runs_started", f"dag{d}", n=21)
    for f in range(100):
        fam = f"etl.tasks:Family{f}"
        for state in ("succeeded", "failed", "cancelled"):
            counters.count(pipe, "tasks_ended", fam, state, n=1000)
            for b in range(len(counters.TASK_BUCKETS) + 1):
                pipe.hincrby(keys.METRICS, counters.field("task_seconds_b", fam, state, b + 1), 3)
            pipe.hincrbyfloat(keys.METRICS, counters.field("task_seconds_sum", fam, state), 12.5)
        counters.count(pipe, "task_retries", fam, "error", n=5)
    pipe.execute()
    return {"metrics_fields": conn.hlen(keys.METRICS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scrape")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS / "metrics-scrape-latest.json"))
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine_info(), "scenarios": {}}
    with RedisServer() as server:
        conn = redis_connection(server.url)
        port = free_port()
        env = dict(
            os.environ,
            PLANKTON_REDIS_URL=server.url,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        env.pop("PLANKTON_API_TOKEN", None)
        api = start_process(
            [
                sys.executable,
                "-m",
                "plankton.api",
                "--import",
                "benchmarks.bench_tasks",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ok(base), timeout=30, what="the API")
            report["scenarios"]["empty"] = {
                "setup": {"task_records": 0},
                **_measure(base, conn, args.scrapes),
            }
            setup = _fill(server.url, args.tasks, leased=64)
            name = f"{args.tasks // 1000}k"
            report["scenarios"][name] = {"setup": setup, **_measure(base, conn, args.scrapes)}
            setup = {**setup, **_busy_metrics(server.url)}
            report["scenarios"][name + "+busy"] = {
                "setup": setup,
                **_measure(base, conn, args.scrapes),
            }
        finally:
            stop_process(api)
    _print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    return 0 if all(s["checked"] for s in report["scenarios"].values()) else 1


def _ok(base: str) -> bool:
    try:
        http_get(base + "/healthz")
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def _print(report: dict[str, Any]) -> None:
    head = (
        f"{'scenario':<11} {'task records':>12} {'scrape ms p50':>14} {'p95':>7} "
        f"{'max':>7} {'healthz ms p50':>15} {'cmds/scrape':>12} {'series':>7} {'bytes':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, s in report["scenarios"].items():
        print(
            f"{name:<11} {s['setup']['task_records']:>12,} {s['scrape_ms']['median']:>14.2f} "
            f"{s['scrape_ms']['p95']:>7.2f} {s['scrape_ms']['max']:>7.2f} "
            f"{s['healthz_ms']['median']:>15.2f} {s['redis_commands_per_scrape']:>12.1f} "
            f"{s['series']:>7} {s['bytes']:>8,}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
