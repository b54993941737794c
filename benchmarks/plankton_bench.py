"""Plankton's side of the benchmark: a private Redis, a scheduler, workers, and each workload
of BENCHMARKS.md run ``repeats`` times with its output checked."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import bench_tasks as bt
from benchmarks.harness import (
    RedisServer,
    figure,
    machine_info,
    peak_rss_kb,
    percentile,
    redis_benchmark,
    redis_connection,
    start_process,
    stop_process,
    used_memory,
    used_memory_peak,
)

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = [
    "fanin-1000",
    "fanin-1000-user",
    "chain-100",
    "stream-100k",
    "wide-10k",
    "wide-10k-user",
    "latency",
    "scale-io",
    "scale-100k",
    "scale-100k-flat",
]


class Stack:
    """Scheduler + N workers on a private Redis, restartable with another worker count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = dict(
            os.environ,
            PLANKTON_REDIS_URL=url,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        self.scheduler = None
        self.workers: list = []

    def start(self, n_workers: int) -> None:
        imp = ["--import", "benchmarks.bench_tasks"]
        if self.scheduler is None:
            self.scheduler = start_process(
                [sys.executable, "-m", "scheduler", *imp, "--log-level", "WARNING"],
                env=self.env,
                cwd=ROOT,
            )
        self.set_workers(n_workers)

    def set_workers(self, n: int) -> None:
        for proc in self.workers:
            stop_process(proc)
        self.workers = [
            start_process(
                [
                    sys.executable,
                    "-m",
                    "workers",
                    "--import",
                    "benchmarks.bench_tasks",
                    "--name",
                    f"bench-w{i}",
                ],
                env=self.env,
                cwd=ROOT,
            )
            for i in range(n)
        ]
        conn = redis_connection(self.url)
        conn.delete("plankton:workers")
        deadline = time.monotonic() + 30
        while conn.zcard("plankton:workers") < n:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            stop_process(proc)


def _timed(client: Any, root: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    rid = client.submit(root)
    run = client.wait(rid, timeout=1800, tasks=False)
    return time.perf_counter() - t0, run


def _result(client: Any, run: dict[str, Any]) -> Any:
    return run["result"]


def bench_fanin(client, stack, repeats):
    times, ok, cmds = [], True, []
    conn = client.conn
    for _ in range(repeats):
        root = bt.fanin(1000)
        before = _commands(conn)
        dt, run = _timed(client, root)
        cmds.append((_commands(conn) - before) / 1001)
        ok &= run["status"] == "succeeded" and run["result"] == 1000
        times.append(1001 / dt)
    return figure(times, "tasks/s", ok, redis_commands_per_task=round(min(cmds), 1))


def _user_path(client: Any, n: int) -> tuple[dict[str, float], dict[str, Any]]:
    """What a script does: ``submit("flat", params={"n": n})`` then the default ``wait()``
    (which waits for the end, then reads the run with its tasks), timed step by step."""
    t0 = time.perf_counter()
    rid = client.submit("flat", params={"n": n})
    t1 = time.perf_counter()
    while not client.await_end(rid, 1.0):  # the loop of Client.wait, split from its read
        pass
    t2 = time.perf_counter()
    run = client.status(rid)
    t3 = time.perf_counter()
    return {"submit_s": t1 - t0, "run_s": t2 - t1, "read_s": t3 - t2, "total_s": t3 - t0}, run


def _user_ok(run: dict[str, Any], n: int) -> bool:
    return (
        run["status"] == "succeeded"
        and run["result"] == n
        and len(run["tasks"]) == n + 1
        and all(t["state"] == "succeeded" for t in run["tasks"])
    )


def _steps(parts: list[dict[str, float]]) -> dict[str, float]:
    """Median of each step over the repeats."""
    return {k: round(sorted(p[k] for p in parts)[len(parts) // 2], 4) for k in parts[0]}


def bench_fanin_user(client, stack, repeats):
    vals, ok, parts = [], True, []
    for _ in range(repeats):
        times, run = _user_path(client, 1000)
        ok &= _user_ok(run, 1000)
        vals.append(1001 / times["total_s"])
        parts.append(times)
    return figure(vals, "tasks/s", ok, steps_s=_steps(parts))


def bench_wide_user(client, stack, repeats):
    vals, ok, parts = [], True, []
    for _ in range(repeats):
        times, run = _user_path(client, 10_000)
        ok &= _user_ok(run, 10_000)
        vals.append(times["total_s"])
        parts.append(times)
    return figure(vals, "s", ok, steps_s=_steps(parts))


def bench_scale_flat(client, stack, repeats):
    """100,000 leaves under one parent: the engine path (tree built before the clock,
    ``wait(tasks=False)``) and the user path (build + submit by name + run + status)."""
    engine, user, parts, ok = [], [], [], True
    for _ in range(max(1, min(repeats, 2))):
        dt, run = _timed(client, bt.fanin(100_000))
        ok &= run["status"] == "succeeded" and run["result"] == 100_000
        engine.append(dt)
        times, run = _user_path(client, 100_000)
        ok &= _user_ok(run, 100_000)
        user.append(times["total_s"])
        parts.append(times)
    e, u = sorted(engine)[len(engine) // 2], sorted(user)[len(user) // 2]
    return {
        "scale-100k-flat": figure(engine, "s", ok),
        "scale-100k-flat-user": figure(
            user, "s", ok, steps_s=_steps(parts), user_over_engine=round(u / e, 2)
        ),
    }


def bench_chain(client, stack, repeats):
    vals, ok = [], True
    for _ in range(repeats):
        dt, run = _timed(client, bt.chain(100))
        ok &= run["status"] == "succeeded" and run["result"] == 100
        vals.append(dt / 100 * 1000)
    return figure(vals, "ms/edge", ok)


def bench_stream(client, stack, repeats):
    vals, ok = [], True
    for _ in range(repeats):
        dt, run = _timed(client, bt.stream(100_000))
        ok &= run["status"] == "succeeded" and run["result"] == 100_000
        vals.append(100_000 / dt)
    return figure(vals, "values/s", ok)


def bench_wide(client, stack, repeats):
    vals, ok, mem = [], True, []
    conn = client.conn
    for _ in range(repeats):
        conn.config_resetstat()
        dt, run = _timed(client, bt.fanin(10_000))
        ok &= run["status"] == "succeeded" and run["result"] == 10_000
        vals.append(dt)
        mem.append(used_memory_peak(conn))
    return figure(
        vals,
        "s",
        ok,
        scheduler_vmhwm_kb=peak_rss_kb(stack.scheduler.pid),
        redis_used_memory_peak_bytes=max(mem),
        redis_peak_bytes_per_1000_tasks=int(max(mem) / 10.001),
    )


def bench_scale100k(client, stack, repeats):
    vals, ok = [], True
    for _ in range(max(1, min(repeats, 1))):
        dt, run = _timed(client, bt.scale(100_000, 100))
        ok &= run["status"] == "succeeded" and run["result"] == 100_000
        vals.append(dt)
    return figure(
        vals,
        "s",
        ok,
        scheduler_vmhwm_kb=peak_rss_kb(stack.scheduler.pid),
        ms_per_task=round(min(vals) / 100_101 * 1000, 4),
    )


def bench_latency(client, stack, repeats):
    """200 one-task DAGs one after another, ``repeats`` times: p50 and p99 of each round."""
    p50, p99, ok = [], [], True
    for _ in range(repeats):
        lat = []
        for _ in range(200):
            dt, run = _timed(client, bt.BNoop())
            ok &= run["status"] == "succeeded"
            lat.append(dt * 1000)
        p50.append(percentile(lat, 50))
        p99.append(percentile(lat, 99))
    return {"latency-p50": figure(p50, "ms", ok), "latency-p99": figure(p99, "ms", ok)}


def bench_scale_io(client, stack, repeats):
    out: dict[str, Any] = {}
    ok = True
    effs = []
    for n in (1, 2, 4, 8, 16):
        stack.set_workers(n)
        walls = []
        for _ in range(repeats):
            dt, run = _timed(client, bt.sleepers(2000, 0.02))
            ok &= run["status"] == "succeeded" and run["result"] == 2000
            walls.append(dt)
        wall = sorted(walls)[len(walls) // 2]
        eff = (2000 * 0.02 / n) / wall
        out[f"workers_{n}"] = {"wall_s": round(wall, 3), "efficiency": round(eff, 3)}
        effs.append(eff)
    stack.set_workers(2)
    return figure([min(effs)], "min efficiency", ok, per_workers=out)


BENCHES: dict[str, Callable] = {
    "fanin-1000": bench_fanin,
    "chain-100": bench_chain,
    "stream-100k": bench_stream,
    "wide-10k": bench_wide,
    "latency": bench_latency,
    "scale-io": bench_scale_io,
    "scale-100k": bench_scale100k,
    "fanin-1000-user": bench_fanin_user,
    "wide-10k-user": bench_wide_user,
    "scale-100k-flat": bench_scale_flat,
}


def _commands(conn) -> int:
    info = conn.info("commandstats")
    return sum(v["calls"] for v in info.values())


def run_all(workloads: list[str], repeats: int) -> dict[str, Any]:
    import plankton as pk

    server = RedisServer().start()
    stack = Stack(server.url)
    report: dict[str, Any] = {"machine": machine_info(), "workloads": {}}
    try:
        report["redis"] = {"benchmark": redis_benchmark(server.port)}
        stack.start(2)
        client = pk.Client(server.url, imports=["benchmarks.bench_tasks"])
        client.wait(client.submit(bt.BNoop()), timeout=60)  # warm up
        for name in workloads:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            got = BENCHES[name](client, stack, repeats)
            figures = got if "unit" not in got else {name: got}
            report["workloads"].update(figures)
            print(f"  {name}: {figures}", file=sys.stderr, flush=True)
        time.sleep(1.5)
        report["redis"]["after"] = {
            "dbsize": client.conn.dbsize(),
            "used_memory": used_memory(client.conn),
        }
    finally:
        stack.stop()
        server.stop()
    return report
