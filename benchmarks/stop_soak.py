"""``python -m benchmarks.stop_soak``: hundreds of SIGTERM stops of busy and idle workers.

Issue 18: a worker sometimes hung for good on SIGTERM (RQ's pub/sub thread join,
rq/rq#1613). The suite's tests/reliability/test_clean_stop.py stops 20 workers per run; this
soak stops ``--stops`` of them (default 200) the same way: rounds of ``--per-round`` workers
on their own queues, half of them given a task of 0.2-2 s, each sent SIGTERM at a random
moment 0-1.5 s after the tasks were submitted (before, during or after its task). It reports
how long each stop took, against the bound ``PLANKTON_STOP_GRACE`` + 2 s, and any exit that
was not 0.

Prints a table and writes ``benchmarks/results/stop-soak-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RedisServer, machine_info, percentile, redis_connection, wait_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMPORT = "benchmarks.bench_tasks"


def _worker(url: str, name: str, queue: str, grace: float) -> subprocess.Popen:
    env = dict(
        os.environ, PLANKTON_REDIS_URL=url, PLANKTON_STOP_GRACE=str(grace), PYTHONPATH=str(ROOT)
    )
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "--import", IMPORT, "--name", name, "--queues", queue],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ready(conn: Any, name: str) -> bool:
    pid = conn.hget(f"rq:worker:{name}", "pid")
    return (
        bool(pid)
        and not conn.hexists(f"rq:worker:{name}", "death")
        and conn.zscore("plankton:workers", name) is not None
    )


def soak(stops: int, per_round: int, grace: float, seed: int) -> dict[str, Any]:
    import plankton as pk
    from benchmarks import bench_tasks as bt

    per_round = min(per_round, bt.STOP_QUEUES)
    bound = grace + 2.0
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    with RedisServer() as server:
        conn = redis_connection(server.url)
        client = pk.Client(server.url, imports=(IMPORT,))
        rnd = 0
        while len(rows) < stops:
            names = {i: f"soak{rnd}-{i}" for i in range(per_round)}
            procs = {i: _worker(server.url, names[i], f"stop{i}", grace) for i in names}
            for i in names:
                wait_for(lambda: _ready(conn, names[i]), 60, what=f"worker {names[i]}")
            busy = set(rng.sample(sorted(names), per_round // 2))
            for i in busy:
                client.submit(getattr(bt, f"BBusy{i}")(seconds=rng.uniform(0.2, 2.0)))
            t0 = time.monotonic()
            sent: dict[int, float] = {}
            for i in rng.sample(sorted(names), per_round):
                time.sleep(max(0.0, t0 + rng.uniform(0.0, 1.5) - time.monotonic()))
                sent[i] = time.monotonic()
                procs[i].send_signal(signal.SIGTERM)
            for i, proc in procs.items():
                try:
                    code: int | None = proc.wait(bound + 30)
                except subprocess.TimeoutExpired:
                    code = None
                    proc.kill()
                    proc.wait()
                rows.append(
                    {"busy": i in busy, "seconds": time.monotonic() - sent[i], "code": code}
                )
            rnd += 1
            print(f"  {len(rows)}/{stops} stops", file=sys.stderr, end="\r")
        conn.close()
    print(file=sys.stderr)
    out: dict[str, Any] = {
        "stops": len(rows),
        "grace_s": grace,
        "bound_s": bound,
        "per_round": per_round,
        "seed": seed,
    }
    for label, pick in (
        ("all", rows),
        ("busy", [x for x in rows if x["busy"]]),
        ("idle", [x for x in rows if not x["busy"]]),
    ):
        times = [x["seconds"] for x in pick]
        out[label] = {
            "n": len(pick),
            "p50_s": round(percentile(times, 50), 3),
            "p99_s": round(percentile(times, 99), 3),
            "max_s": round(max(times), 3),
            "over_bound": sum(1 for t in times if t > bound),
            "hung": sum(1 for x in pick if x["code"] is None),
            "nonzero_exit": sum(1 for x in pick if x["code"] not in (0, None)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stop_soak")
    ap.add_argument("--stops", type=int, default=200)
    ap.add_argument("--per-round", type=int, default=8)
    ap.add_argument("--grace", type=float, default=3.0, help="PLANKTON_STOP_GRACE (s)")
    ap.add_argument("--seed", type=int, default=18)
    args = ap.parse_args(argv)
    result = soak(args.stops, args.per_round, args.grace, args.seed)
    print(
        f"worker stops (SIGTERM), bound = grace {result['grace_s']:.1f} s + 2 s "
        f"= {result['bound_s']:.1f} s"
    )
    print(
        f"{'':6} {'n':>5} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'>bound':>7} "
        f"{'hung':>5} {'exit!=0':>8}"
    )
    for label in ("all", "busy", "idle"):
        x = result[label]
        print(
            f"{label:6} {x['n']:>5} {x['p50_s']:>7.2f} {x['p99_s']:>7.2f} {x['max_s']:>7.2f}"
            f" {x['over_bound']:>7} {x['hung']:>5} {x['nonzero_exit']:>8}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "stop-soak-latest.json"
    path.write_text(json.dumps({"machine": machine_info(), "result": result}, indent=2) + "\n")
    print(f"written to {path}")
    bad = result["all"]["over_bound"] + result["all"]["hung"] + result["all"]["nonzero_exit"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
