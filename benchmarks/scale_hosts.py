"""scale-io over several hosts: 2,000 tasks sleeping 20 ms, from 1 to 32 workers (issue 18).

The hosts are network namespaces on one bridge (``tests/reliability/hosts.py``: root only).
Redis (a plain master, no persistence) and the scheduler run on host 0; the workers are spread
round-robin over hosts 1..N-1. For each worker count the benchmark starts the workers, waits
until every one is serving (start-up is not timed), runs one small warm-up run, then times
what a user does: ``Client.submit("scale_io", ...)`` by name and the default ``wait()`` (which
reads the run back with its tasks), ``--repeats`` times, median; and beside it the engine
path of ``python -m benchmarks --workloads scale-io`` (a tree built beforehand, submitted,
``wait(tasks=False)``), the measure of the issue's starting figure.

Reported per worker count: wall time, ideal time (2,000 x 20 ms / workers), efficiency (ideal /
wall), tasks/s, Redis connections per worker (``CLIENT LIST``: the connections a worker names
``plankton-worker:NAME``, and the one RQ names NAME), threads per worker (``/proc``), and
the Redis main thread's CPU per task (``INFO cpu``), and where the CPU went: the bed's
processes (workers, scheduler, Redis: ``/proc/PID/stat`` of each process tree) per task and as
a share of all cores over the wall time, the whole machine's busy share (``/proc/stat``: other
sessions included) and what the idle bed costs (2 s before the timed runs). With
``--peer-sizes`` the same counts run again with every process on one host (the root
namespace, loopback), in the same session.

    sudo .venv/bin/python -m benchmarks.scale_hosts                # 1,2,4,8,16,32 workers
    sudo .venv/bin/python -m benchmarks.scale_hosts --sizes 16,32 --peer-sizes 16,32

The machine's cores bound what any worker count can do: on 2 cores, 32 worker processes share
them with Redis and the scheduler; the CPU columns say how much of them the run used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import plankton as pk  # noqa: E402
from benchmarks import bench_tasks as bt  # noqa: E402
from benchmarks.harness import machine_info, write_json  # noqa: E402
from plankton import keys  # noqa: E402
from tests.reliability import hosts  # noqa: E402
from tests.servers import free_port, wait_for  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IMPORTS = ["benchmarks.bench_tasks"]
TASKS, SECONDS = 2000, 0.02
CORES = os.cpu_count() or 1


def _threads(name: str) -> int:
    """Threads of worker ``name``'s process (the supervisor's child: the most threads)."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not any(a in (b"workers", b"workers.main") for a in cmd) or name.encode() not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best


def _connections(r: Any, names: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for c in r.client_list():
        name = c.get("name", "").removeprefix("plankton-worker:")
        if name in counts:
            counts[name] += 1
    return counts


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system, every thread) of the processes ``roots`` and all their
    descendants, from ``/proc/PID/stat``: what the bed's workers, scheduler and Redis used."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(pid)] = int(fields[1])
        ticks[int(pid)] = int(fields[11]) + int(fields[12])
    keep: set[int] = set()
    todo = list(roots)
    children: dict[int, list[int]] = {}
    for child, ppid in parent.items():
        children.setdefault(ppid, []).append(child)
    while todo:
        one = todo.pop()
        if one not in keep:
            keep.add(one)
            todo += children.get(one, [])
    return sum(ticks.get(one, 0) for one in keep) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / hz, sum(vals[:8]) / hz


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info.get("used_cpu_user_main_thread", info["used_cpu_user"])) + float(
        info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])
    )


class Site:
    """Where the processes run: ``bed`` hosts (Redis and scheduler on host 0), or one host."""

    def __init__(self, log_dir: Path, n_hosts: int) -> None:
        self.log_dir = log_dir
        self.bed = (
            hosts.Bed(n_hosts, log_dir, tag=str(os.getpid() % 200 + 20))
            if n_hosts
            else hosts.Bed(0, log_dir, tag=str(os.getpid() % 200 + 21))
        )
        self.multi = n_hosts > 0
        self.workers: list[Any] = []
        self.names: list[str] = []

    def open(self) -> "Site":
        if self.multi:
            self.bed.open()
            home: Any = self.bed.hosts[0]
            ip = home.ip
        else:
            home, ip = None, "127.0.0.1"
        port = free_port()
        self.bed.start(
            home,
            [
                "redis-server",
                "--bind",
                ip,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            "redis",
        )
        self.url = f"redis://{ip}:{port}/0"
        self.client = pk.Client(self.url, imports=IMPORTS)
        self.bed.scheduler(home, self.url, "scheduler", IMPORTS, **self._env())
        return self

    def _env(self) -> dict[str, str]:
        # the default timings, not the fault tests' short ones
        return {k: "" for k in hosts.FAST}

    def set_workers(self, n: int) -> None:
        while len(self.workers) < n:
            i = len(self.workers)
            name = f"sw{i}"
            if self.multi:
                host = self.bed.hosts[1 + i % (len(self.bed.hosts) - 1)]
                proc = self.bed.worker(host, self.url, name, IMPORTS, **self._env())
            else:
                proc = self.bed.start(
                    None,
                    [
                        sys.executable,
                        "-m",
                        "workers",
                        *[a for m in IMPORTS for a in ("--import", m)],
                        "--name",
                        name,
                    ],
                    name,
                    self.bed.plankton_env(self.url, **self._env()),
                )
            self.workers.append(proc)
            self.names.append(name)
        r = self.client.conn
        for name in self.names:
            wait_for(
                lambda name=name: r.zscore(keys.WORKERS, name) is not None,
                60,
                what=f"worker {name} serving",
            )

    def close(self) -> None:
        self.client.close()
        self.bed.close()


def measure(site: Site, n: int, repeats: int) -> dict[str, Any]:
    site.set_workers(n)
    c, r = site.client, site.client.conn
    c.wait(c.submit("scale_io", params={"n": 2 * n, "seconds": SECONDS}), timeout=120)
    walls, engine, cpus, ok = [], [], [], True
    bed_cpu, client_cpu, busy = [], [], []
    roots = [p.pid for p in site.bed.procs]
    idle0, t_idle = _tree_cpu(roots), time.perf_counter()
    time.sleep(2.0)
    idle_cpu = (_tree_cpu(roots) - idle0) / (time.perf_counter() - t_idle)
    for _ in range(repeats):
        cpu0, bed0, self0, m0 = _redis_cpu(r), _tree_cpu(roots), _self_cpu(), _machine_busy()
        t0 = time.perf_counter()
        run = c.wait(c.submit("scale_io", params={"n": TASKS, "seconds": SECONDS}), timeout=600)
        walls.append(time.perf_counter() - t0)
        m1 = _machine_busy()
        cpus.append(_redis_cpu(r) - cpu0)
        bed_cpu.append(_tree_cpu(roots) - bed0)
        client_cpu.append(_self_cpu() - self0)
        busy.append((m1[0] - m0[0]) / max(1e-9, m1[1] - m0[1]))
        ok &= run["status"] == "succeeded" and run["result"] == TASKS
        # the engine path of `python -m benchmarks --workloads scale-io` (the 0.76):
        # a tree built beforehand, and wait(tasks=False)
        tree = bt.sleepers(TASKS, SECONDS)
        t0 = time.perf_counter()
        run = c.wait(c.submit(tree), timeout=600, tasks=False)
        engine.append(time.perf_counter() - t0)
        ok &= run["status"] == "succeeded" and run["result"] == TASKS
    wall = statistics.median(walls)
    ideal = TASKS * SECONDS / n
    conns = _connections(r, site.names)
    return {
        "workers": n,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / wall, 3),
        "tasks_per_s": round(TASKS / wall),
        "engine_wall_s": round(statistics.median(engine), 3),
        "engine_efficiency": round(ideal / statistics.median(engine), 3),
        "walls_s": [round(w, 3) for w in walls],
        "checked": ok,
        "redis_cpu_us_per_task": round(statistics.median(cpus) / (TASKS + 1) * 1e6, 1),
        # where the CPU went: the bed's processes (workers, scheduler, Redis) and this
        # client, per task, against the machine's cores over the same wall time
        "bed_cpu_ms_per_task": round(statistics.median(bed_cpu) / (TASKS + 1) * 1e3, 3),
        "client_cpu_ms_per_task": round(statistics.median(client_cpu) / (TASKS + 1) * 1e3, 3),
        "bed_cpu_share_of_cores": round(
            statistics.median([b / (w * CORES) for b, w in zip(bed_cpu, walls)]), 3
        ),
        "machine_busy": round(statistics.median(busy), 3),
        "idle_cpu_cores": round(idle_cpu, 3),
        "connections_per_worker_max": max(conns.values()),
        "connections_per_worker_mean": round(sum(conns.values()) / len(conns), 1),
        "threads_per_worker_max": max(_threads(name) for name in site.names),
    }


def run_site(label: str, n_hosts: int, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    log_dir = Path(tempfile.mkdtemp(prefix=f"plankton-scale-{label}-"))
    site = Site(log_dir, n_hosts).open()
    rows = []
    try:
        for n in sizes:
            row = measure(site, n, repeats)
            row["site"] = label
            print(
                f"  {label:>10} {n:>3} workers: wall {row['wall_s']:.2f}s, efficiency "
                f"{row['efficiency']:.2f} (engine path {row['engine_efficiency']:.2f}), "
                f"conns/worker <= {row['connections_per_worker_max']}"
                f", threads/worker {row['threads_per_worker_max']}; bed CPU "
                f"{row['bed_cpu_ms_per_task']:.2f} ms/task = {row['bed_cpu_share_of_cores']:.0%}"
                f" of {CORES} cores, machine busy {row['machine_busy']:.0%}, idle bed "
                f"{row['idle_cpu_cores']:.2f} cores",
                flush=True,
            )
            rows.append(row)
    finally:
        site.close()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        "site",
        "workers",
        "wall s",
        "ideal s",
        "efficiency",
        "engine eff.",
        "tasks/s",
        "Redis us/task",
        "bed ms/task",
        "bed/cores",
        "busy",
        "conns/worker",
        "threads/worker",
    )
    print("\n" + "  ".join(f"{h:>14}" for h in head))
    for row in rows:
        cells = (
            row["site"],
            row["workers"],
            row["wall_s"],
            row["ideal_s"],
            row["efficiency"],
            row["engine_efficiency"],
            row["tasks_per_s"],
            row["redis_cpu_us_per_task"],
            row["bed_cpu_ms_per_task"],
            row["bed_cpu_share_of_cores"],
            row["machine_busy"],
            row["connections_per_worker_max"],
            row["threads_per_worker_max"],
        )
        print("  ".join(f"{c!s:>14}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_hosts", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--hosts", type=int, default=4, help="network-namespace hosts (>= 2)")
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument(
        "--peer-sizes", default="16,32", help="worker counts run again on one host ('' for none)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "scale-hosts-latest.json"))
    args = parser.parse_args(argv)
    why = hosts.skip_reason()
    if why:
        parser.error(why)
    if args.hosts < 2:
        parser.error("--hosts must be at least 2 (Redis on one, workers on the others)")
    try:
        sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
        peer = sorted({int(x) for x in args.peer_sizes.split(",") if x.strip()})
    except ValueError:
        parser.error("--sizes and --peer-sizes are comma-separated worker counts")
    if not sizes or min(sizes + peer) < 1 or args.repeats < 1:
        parser.error("worker counts and --repeats must be at least 1")
    load = os.getloadavg()
    print(f"scale-io: {TASKS} tasks x {SECONDS * 1000:.0f} ms; load average {load[0]:.2f}")
    rows = run_site(f"{args.hosts} hosts", args.hosts, sizes, args.repeats)
    if peer:
        rows += run_site("one host", 0, peer, args.repeats)
    print_table(rows)
    write_json(
        {
            "machine": machine_info(),
            "load_before": load,
            "load_after": os.getloadavg(),
            "tasks": TASKS,
            "seconds": SECONDS,
            "rows": rows,
        },
        args.out,
    )
    return 0 if all(r["checked"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
