"""``python -m benchmarks.redis_cpu``: how much Redis CPU one Plankton task costs, and so how
many tasks per second one Redis can carry before its main thread saturates.

Why: every transition of every task is a Lua script on one Redis, and Redis runs commands
on one thread. The ceiling of a single-Redis deployment is therefore 1 s divided by the
Redis main-thread CPU one task costs (docs/scaling.md).

Method: a private redis-server (no persistence), a scheduler and 2 workers (the standard
stack of ``python -m benchmarks``); each workload (wide-10k, fanin-1000, chain-100,
stream-100k) is run ``--repeats`` times. Around each run we read ``INFO cpu`` (the server's
``used_cpu_user + used_cpu_sys``, and the same for its main thread) and ``INFO
commandstats`` (calls, and the ``usec`` of EVALSHA: the share of that CPU spent inside the
Lua scripts; the commands a script calls are counted in commandstats too, so ``commands per
task`` includes them). The idle stack (worker polls, heartbeats, the
scheduler's loop) also costs Redis CPU: its rate is measured before the workloads and
subtracted per run (``net``), the raw figure is kept too.

Floor and peer, measured in the same invocation:

- ``floor``: ``redis-benchmark -t set -n 200000`` without pipelining against the same
  server: the Redis CPU of one plain round-trip command (what a task costs, in commands).
- ``peer``: RQ 2.x (``SimpleWorker`` x2, JSON serializer) running fanin-1000 on a fresh
  Redis: the Redis CPU one RQ job costs.

Prints a table and writes ``--out`` (JSON) beside the log ``benchmarks/results/*.log`` when
the output is redirected there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import bench_tasks as bt
from benchmarks.harness import (
    RedisServer,
    machine_info,
    redis_connection,
    used_memory,
    workload_list,
    write_json,
)
from benchmarks.plankton_bench import Stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: workload -> (tree builder, tasks per run, values per run, expected result)
WORKLOADS: dict[str, tuple[Callable[[], Any], int, int, int]] = {
    "wide-10k": (lambda: bt.fanin(10_000), 10_001, 10_000, 10_000),
    "fanin-1000": (lambda: bt.fanin(1000), 1001, 1000, 1000),
    "chain-100": (lambda: bt.chain(100), 100, 99, 100),
    "stream-100k": (lambda: bt.stream(100_000), 2, 100_000, 100_000),
}


def cpu(conn: Any) -> dict[str, float]:
    """The server's CPU seconds so far: whole process and main thread (user + sys)."""
    info = conn.info("cpu")
    return {
        "all": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "main": float(info.get("used_cpu_user_main_thread", info["used_cpu_user"]))
        + float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])),
    }


def commandstats(conn: Any) -> dict[str, tuple[int, int]]:
    """``{command: (calls, usec)}``, the INFO calls themselves left out."""
    out = {}
    for name, f in conn.info("commandstats").items():
        if isinstance(f, dict) and name != "cmdstat_info":
            out[name.removeprefix("cmdstat_")] = (int(f.get("calls", 0)), int(f.get("usec", 0)))
    return out


class Probe:
    """CPU and commandstats between ``__enter__`` and ``__exit__``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.wall = 0.0
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.usec: dict[str, int] = {}

    def __enter__(self) -> "Probe":
        self._cpu, self._stats, self._t = (
            cpu(self.conn),
            commandstats(self.conn),
            time.perf_counter(),
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self._t
        after, stats = cpu(self.conn), commandstats(self.conn)
        self.cpu = {k: after[k] - self._cpu[k] for k in after}
        for name, (calls, usec) in stats.items():
            c0, u0 = self._stats.get(name, (0, 0))
            if calls - c0:
                self.calls[name] = calls - c0
                self.usec[name] = usec - u0


def idle_rate(conn: Any, seconds: float) -> dict[str, float]:
    """Redis CPU seconds per wall second of the idle stack (subtracted from each run)."""
    with Probe(conn) as p:
        time.sleep(seconds)
    return {k: v / p.wall for k, v in p.cpu.items()} | {
        "calls_per_s": sum(p.calls.values()) / p.wall
    }


def _median(vals: list[float]) -> float:
    s = sorted(vals)
    return s[len(s) // 2]


def run_workload(client: Any, name: str, repeats: int, idle: dict[str, float]) -> dict[str, Any]:
    build, n_tasks, n_values, expected = WORKLOADS[name]
    conn = client.conn
    rows, ok, mem = [], True, []
    for _ in range(repeats):
        root = build()
        mem0 = used_memory(conn)
        with Probe(conn) as p:
            rid = client.submit(root)
            run = client.wait(rid, timeout=1800, tasks=False)
        ok &= run["status"] == "succeeded" and run["result"] == expected
        time.sleep(0.3)  # let the scheduler's settle of the ended run land
        mem.append((used_memory(conn) - mem0) / n_tasks)
        net_main = max(0.0, p.cpu["main"] - idle["main"] * p.wall)
        net_all = max(0.0, p.cpu["all"] - idle["all"] * p.wall)
        rows.append(
            {
                "wall_s": p.wall,
                "main_us_per_task": net_main * 1e6 / n_tasks,
                "all_us_per_task": net_all * 1e6 / n_tasks,
                "raw_main_us_per_task": p.cpu["main"] * 1e6 / n_tasks,
                "script_share": sum(p.usec.get(c, 0) for c in ("evalsha", "eval"))
                / max(1.0, p.cpu["main"] * 1e6),
                "commands_per_task": sum(p.calls.values()) / n_tasks,
                "main_us_per_value": net_main * 1e6 / n_values,
                "busy": p.cpu["main"] / p.wall,
                "top": sorted(((c, p.calls[c], p.usec[c]) for c in p.calls), key=lambda r: -r[2])[
                    :6
                ],
            }
        )
    best = sorted(rows, key=lambda r: r["main_us_per_task"])[len(rows) // 2]
    out: dict[str, Any] = {"checked": ok, "tasks": n_tasks, "values": n_values, "repeats": repeats}
    for key in (
        "main_us_per_task",
        "all_us_per_task",
        "raw_main_us_per_task",
        "script_share",
        "commands_per_task",
        "main_us_per_value",
        "wall_s",
        "busy",
    ):
        vals = [r[key] for r in rows]
        out[key] = {"median": _median(vals), "min": min(vals), "max": max(vals)}
    med = out["main_us_per_task"]["median"]
    out["saturation_tasks_per_s"] = round(1e6 / med) if med else None
    out["saturation_values_per_s"] = (
        round(1e6 / out["main_us_per_value"]["median"])
        if out["main_us_per_value"]["median"]
        else None
    )
    # What a finished run leaves (its records, kept PLANKTON_KEEP_DAYS), per task: only
    # meaningful with many tasks (a 2-task run's few hundred bytes drown in allocator noise).
    out["kept_bytes_per_task"] = round(_median(mem)) if n_tasks >= 1000 else None
    out["top_commands_median_run"] = [
        {"command": c, "calls": n, "usec": u} for c, n, u in best["top"]
    ]
    return out


def floor(server: RedisServer) -> dict[str, Any]:
    """Redis main-thread CPU of one plain SET round trip (redis-benchmark, no pipelining)."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        return {"skipped": "redis-benchmark not found (apt-get install -y redis-tools)"}
    conn = redis_connection(server.url)
    n = 200_000
    with Probe(conn) as p:
        subprocess.run(
            [
                binary,
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-q",
                "-n",
                str(n),
                "-t",
                "set",
                "-c",
                "8",
            ],
            capture_output=True,
            timeout=600,
            check=True,
        )
    return {
        "command": f"redis-benchmark -t set -n {n} -c 8",
        "requests": n,
        "main_us_per_command": p.cpu["main"] * 1e6 / n,
    }


def peer_rq(repeats: int) -> dict[str, Any]:
    """RQ running fanin-1000 on its own Redis: Redis CPU per RQ job."""
    try:
        from benchmarks.peers.rq_peer import RQPeer
    except ImportError as e:  # pragma: no cover - rq is a Plankton dependency
        return {"skipped": str(e)}
    with RedisServer() as server:
        peer = RQPeer(server.url)
        peer.start_workers()
        try:
            conn = redis_connection(server.url)
            time.sleep(0.5)
            idle = idle_rate(conn, 3.0)
            rows, ok = [], True
            for _ in range(repeats):
                with Probe(conn) as p:
                    _, good = peer.fanin(1000)
                ok &= bool(good)
                net = max(0.0, p.cpu["main"] - idle["main"] * p.wall)
                rows.append((net * 1e6 / 1001, sum(p.calls.values()) / 1001, p.wall))
        finally:
            peer.stop()
    us = [r[0] for r in rows]
    return {
        "workload": "fanin-1000",
        "checked": ok,
        "main_us_per_task": {"median": _median(us), "min": min(us), "max": max(us)},
        "commands_per_task": _median([r[1] for r in rows]),
        "wall_s": _median([r[2] for r in rows]),
        "saturation_tasks_per_s": round(1e6 / _median(us)) if _median(us) else None,
    }


def run_all(
    workloads: list[str], repeats: int, with_peer: bool, workers: int = 2
) -> dict[str, Any]:
    import plankton as pk

    report: dict[str, Any] = {"machine": machine_info(), "workloads": {}, "workers": workers}
    server = RedisServer().start()
    stack = Stack(server.url)
    try:
        stack.start(workers)
        client = pk.Client(server.url, imports=["benchmarks.bench_tasks"])
        client.wait(client.submit(bt.BNoop()), timeout=60)  # warm up
        client.wait(client.submit(bt.fanin(200)), timeout=60)
        time.sleep(1.0)
        idle = idle_rate(client.conn, 5.0)
        report["idle"] = idle
        print(
            f"idle stack: {idle['main'] * 100:.2f}% of a core, "
            f"{idle['calls_per_s']:.0f} commands/s",
            file=sys.stderr,
            flush=True,
        )
        for name in workloads:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            report["workloads"][name] = run_workload(client, name, repeats, idle)
        report["floor"] = floor(server)
    finally:
        stack.stop()
        server.stop()
    if with_peer:
        print("running the RQ peer (fanin-1000) ...", file=sys.stderr, flush=True)
        report["peer_rq"] = peer_rq(repeats)
    report["loadavg_after"] = list(os.getloadavg())
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{'workload':<12} {'tasks':>6} {'CPU us/task':>12} {'(min-max)':>15} "
        f"{'cmds/task':>9} {'us/value':>9} {'tasks/s':>8} {'busy':>5} {'sat. tasks/s':>13} "
        f"{'sat. values/s':>14} {'kept B/task':>11}"
    )
    for name, w in report["workloads"].items():
        m = w["main_us_per_task"]
        kept = w["kept_bytes_per_task"]
        print(
            f"{name:<12} {w['tasks']:>6} {m['median']:>12.1f} "
            f"{m['min']:>7.1f}-{m['max']:<7.1f} "
            f"{w['commands_per_task']['median']:>9.1f} "
            f"{w['main_us_per_value']['median']:>9.2f} "
            f"{w['tasks'] / w['wall_s']['median']:>8,.0f} {w['busy']['median']:>5.0%} "
            f"{w['saturation_tasks_per_s']:>13,} {w['saturation_values_per_s']:>14,} "
            f"{kept if kept is not None else '-':>11}" + ("" if w["checked"] else "   OUTPUT WRONG")
        )
    f = report.get("floor", {})
    if "main_us_per_command" in f:
        print(
            f"\nfloor: one plain SET round trip costs {f['main_us_per_command']:.2f} us of "
            f"Redis main-thread CPU ({f['command']})"
        )
    p = report.get("peer_rq")
    if p and "main_us_per_task" in p:
        print(
            f"peer: RQ fanin-1000 costs {p['main_us_per_task']['median']:.1f} us per job "
            f"({p['commands_per_task']:.1f} commands; saturation "
            f"{p['saturation_tasks_per_s']:,} jobs/s)"
        )
    print(
        "tasks/s: achieved by the stack; busy: Redis main-thread CPU / wall during the run "
        f"({report.get('workers', 2)} workers)"
    )
    idle = report.get("idle", {})
    if idle:
        print(
            f"idle {report.get('workers', 2)}-worker stack: {idle['main'] * 1e6:.0f} us of Redis "
            f"CPU per second "
            f"(subtracted); CPU = Redis main thread, user+sys, net of idle"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.redis_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--no-peer", action="store_true", help="skip the RQ peer")
    parser.add_argument(
        "--workers", type=int, default=2, help="Plankton workers (default 2, the standard stack)"
    )
    parser.add_argument("--out", default=str(RESULTS / "redis-cpu-latest.json"))
    args = parser.parse_args(argv)
    workloads = workload_list(parser, args.workloads, WORKLOADS)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    report = run_all(workloads, args.repeats, not args.no_peer, args.workers)
    print_table(report)
    write_json(report, args.out)
    return 0 if all(w["checked"] for w in report["workloads"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
