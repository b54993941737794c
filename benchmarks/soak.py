"""Soak: many DAG runs while worker processes are SIGKILLed and restarted (issue 5 point 9).

    python -m benchmarks.soak [--runs 200] [--workers 3] [--kill-every 3] [--inflight 8]

Starts a private redis-server, one scheduler and ``--workers`` workers (the tests' FAST
timing knobs: lease 3 s, heartbeat 0.5 s, reaper 0.3 s), and submits ``--runs`` runs of
``tests.dags.fault_tasks:drip_tree`` (root Bag <- Pass <- Drip leaves, streaming three levels),
``--inflight`` at a time. Every ``--kill-every`` seconds (+-50 %) a killer SIGKILLs the
process group of a random worker (supervisor and worker process) and restarts it under the
same name at once.

It reports runs succeeded / submitted, values lost and duplicated (each run's result is
compared, as a multiset, with the values its leaves emit), the detection time of each kill
(from SIGKILL until every attempt the dead worker held was declared lost; median and max),
the slowest run, and the slowest recovery (kill to detection). A table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

import plankton as pk  # noqa: E402
from plankton import keys  # noqa: E402
from tests.cluster import FAST, Cluster  # noqa: E402
from tests.dags import fault_tasks as ft  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

ENDED = ("succeeded", "failed", "cancelled")


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))


class Killer(threading.Thread):
    """SIGKILLs a random worker's process group every few seconds and restarts it."""

    def __init__(
        self, cluster: Cluster, procs: dict, r: redis.Redis, every: float, rng: random.Random
    ) -> None:
        super().__init__(daemon=True)
        self.cluster, self.procs, self.r, self.every, self.rng = cluster, procs, r, every, rng
        self.stop = threading.Event()
        self.kills: list[dict] = []
        self.lock = threading.Lock()

    def held_by(self, worker: str) -> dict:
        held = {}
        for raw in self.r.smembers(keys.ACTIVE):
            run_id = _s(raw)
            for t in self.r.zrange(keys.leases(run_id), 0, -1):
                tid = _s(t)
                st, a, w = self.r.hmget(keys.task(run_id, tid), "state", "attempt", "worker")
                if _s(st) == "running" and _s(w) == worker:
                    held[(run_id, tid)] = _s(a)
        return held

    def run(self) -> None:
        import os
        import signal

        while not self.stop.wait(self.every * self.rng.uniform(0.5, 1.5)):
            name = self.rng.choice(sorted(self.procs))
            held = self.held_by(name)
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
            killed = time.monotonic()
            self.procs[name] = self.cluster.worker(name)
            with self.lock:
                self.kills.append(
                    {
                        "worker": name,
                        "at": killed,
                        "held": held,
                        "left": dict(held),
                        "detected": None if held else 0.0,
                    }
                )


def watch(killer: Killer, r: redis.Redis, stop: threading.Event) -> None:
    """Marks each kill detected once every attempt it left behind moved on."""
    while not stop.is_set():
        with killer.lock:
            pending = [k for k in killer.kills if k["detected"] is None]
        for k in pending:
            for (run_id, tid), attempt in list(k["left"].items()):
                st, a = r.hmget(keys.task(run_id, tid), "state", "attempt")
                if _s(a) != attempt:
                    del k["left"][(run_id, tid)]
                elif _s(st) in ("succeeded", "failed", "cancelled"):
                    del k["left"][(run_id, tid)]  # finished just before the kill
                    k["held"].pop((run_id, tid), None)
            if not k["left"]:
                k["detected"] = time.monotonic() - k["at"] if k["held"] else 0.0
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=3.0)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--leaves", type=int, default=4)
    ap.add_argument("--values", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="plankton-soak-"))
    server = RedisServer(tmp / "redis").start()
    cluster = Cluster(server.url, imports=["tests.dags.fault_tasks"], log_dir=tmp)
    r = redis.Redis.from_url(server.url)
    want = Counter(tuple(v) for v in ft.expected_drip(args.leaves, args.values))
    started = time.monotonic()
    try:
        cluster.scheduler("soak-s")
        procs = {f"soak-w{i}": cluster.worker(f"soak-w{i}") for i in range(args.workers)}
        client = pk.Client(server.url, imports=["tests.dags.fault_tasks"])
        killer = Killer(cluster, procs, r, args.kill_every, rng)
        stop_watch = threading.Event()
        watcher = threading.Thread(target=watch, args=(killer, r, stop_watch), daemon=True)
        killer.start()
        watcher.start()
        submitted: dict[str, float] = {}
        done: dict[str, dict] = {}
        inflight: list[str] = []
        while len(done) < args.runs:
            if time.monotonic() - started > args.timeout:
                break
            while len(inflight) < args.inflight and len(submitted) < args.runs:
                rid = client.submit(
                    "drip_tree", params={"leaves": args.leaves, "n": args.values, "pause": 0.02}
                )
                submitted[rid] = time.monotonic()
                inflight.append(rid)
            for rid in list(inflight):
                status = _s(r.hget(keys.run(rid), "status"))
                if status in ENDED:
                    inflight.remove(rid)
                    run = client.status(rid)
                    done[rid] = {
                        "status": status,
                        "secs": time.monotonic() - submitted[rid],
                        "result": run["result"],
                        "error": run["error"],
                    }
            time.sleep(0.05)
        killer.stop.set()
        killer.join(30)
        deadline = time.monotonic() + 30
        while any(k["detected"] is None for k in killer.kills) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_watch.set()
        client.close()
    finally:
        cluster.kill_all()
        server.stop()
    elapsed = time.monotonic() - started
    lost = dup = 0
    failed = []
    for rid, d in done.items():
        if d["status"] != "succeeded":
            failed.append((rid, d["status"], (d["error"] or "")[:200]))
            continue
        got = Counter(tuple(v) for v in d["result"])
        lost += sum((want - got).values())
        dup += sum((got - want).values())
    detections = [k["detected"] for k in killer.kills if k["held"] and k["detected"]]
    undetected = sum(1 for k in killer.kills if k["detected"] is None)
    succeeded = sum(1 for d in done.values() if d["status"] == "succeeded")
    figures = {
        "runs_submitted": len(submitted),
        "runs_succeeded": succeeded,
        "runs_unfinished": len(submitted) - len(done),
        "values_lost": lost,
        "values_duplicated": dup,
        "kills": len(killer.kills),
        "kills_holding_attempts": len(detections) + undetected,
        "kills_undetected": undetected,
        "detect_median_s": round(statistics.median(detections), 3) if detections else None,
        "detect_max_s": round(max(detections), 3) if detections else None,
        "slowest_recovery_s": round(max(detections), 3) if detections else None,
        "slowest_run_s": round(max(d["secs"] for d in done.values()), 2) if done else None,
        "median_run_s": round(statistics.median(d["secs"] for d in done.values()), 2)
        if done
        else None,
        "elapsed_s": round(elapsed, 1),
        "workers": args.workers,
        "kill_every_s": args.kill_every,
        "lease_ms": int(FAST["PLANKTON_LEASE_MS"]),
        "heartbeat_s": float(FAST["PLANKTON_HEARTBEAT"]),
        "reaper_s": float(FAST["PLANKTON_REAPER_INTERVAL"]),
        "values_per_run": sum(want.values()),
        "logs": str(tmp),
    }
    rows = [
        ("runs succeeded / submitted", f"{succeeded}/{len(submitted)}"),
        ("values lost", lost),
        ("values duplicated", dup),
        (
            "worker SIGKILLs (holding attempts)",
            f"{figures['kills']} ({figures['kills_holding_attempts']})",
        ),
        ("detection median / max (s)", f"{figures['detect_median_s']} / {figures['detect_max_s']}"),
        ("kills never detected", undetected),
        ("slowest recovery (s)", figures["slowest_recovery_s"]),
        (
            "run time median / slowest (s)",
            f"{figures['median_run_s']} / {figures['slowest_run_s']}",
        ),
        ("elapsed (s)", figures["elapsed_s"]),
    ]
    width = max(len(k) for k, _ in rows)
    print(
        f"soak: {args.runs} drip_tree runs ({args.leaves} leaves x {args.values} values), "
        f"{args.workers} workers, SIGKILL every ~{args.kill_every}s, lease "
        f"{figures['lease_ms']} ms"
    )
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    for rid, status, err in failed[:10]:
        print(f"  run {rid} {status}: {err}")
    print(json.dumps(figures))
    ok = succeeded == len(submitted) == args.runs and lost == dup == 0 and not undetected
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
