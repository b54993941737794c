"""``python -m benchmarks.resume [--sizes 100000,1000000]``: what resuming a failed run costs
and saves, beside a floor measured in the same run.

Workload per size N: ``RCount`` (the root: counts what it reads, then fails until the Redis
key ``bench:flag`` exists) over ``RMany`` (emits N short strings, ``str(i)``, 2-8 bytes of
msgpack each). The first run fails with RMany's N values in the root's channel, which the
scheduler keeps (``PLANKTON_RESUME_KEEP_DAYS``). Measured:

- ``kept``: Redis memory of that channel (``MEMORY USAGE``), and per value.
- ``resume write``: ``Client.rerun(run, from_failure=True)`` (plan, read the kept values,
  write the new run with them) beside the **floor**: redis-py reading the same stream
  (XRANGE pages) and writing the same entries to a scratch stream (one pipeline): the copy
  alone, no plan, no run.
- ``resume run`` vs ``full rerun``: wall time to success of the resumed run (RMany reused)
  and of ``Client.rerun(run)`` (RMany runs again), with a scheduler and 2 workers; both
  checked: the root counted N values, and RMany was reused (did not run) in the resume.

Prints a table and writes ``benchmarks/results/resume-latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import plankton as pk
from benchmarks.harness import RedisServer, machine_info, start_process, stop_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class RMany(pk.Task):
    n = pk.Param(int)

    def run(self):
        for i in range(self.n):
            self.emit(str(i))


class RCount(pk.Task):
    """Counts what it reads, then fails unless ``bench:flag`` exists (so RMany has
    succeeded, and all its values are in this task's channel, when the run fails)."""

    def run(self):
        import redis

        count = sum(1 for _ in self.results())
        if not redis.Redis.from_url(os.environ["PLANKTON_REDIS_URL"]).exists("bench:flag"):
            raise RuntimeError("bench:flag not set")
        return count


def _tree(n: int) -> RCount:
    return RCount().add_children(RMany(n=n))


def _floor_copy(conn: Any, key: str) -> float:
    t0 = time.perf_counter()
    after, entries = "-", []
    while True:
        page = conn.xrange(key, after, "+", count=10_000)
        entries += page
        if len(page) < 10_000:
            break
        after = "(" + page[-1][0].decode()
    pipe = conn.pipeline(transaction=True)
    for _, fields in entries:
        pipe.xadd("bench:floor", fields)
    pipe.execute()
    took = time.perf_counter() - t0
    conn.delete("bench:floor")
    return took


def _one(client: pk.Client, n: int) -> dict[str, Any]:
    from plankton import keys

    conn = client.conn
    conn.delete("bench:flag")
    # the task classes as the workers name them (not ``__main__``'s under ``python -m``)
    tree = importlib.import_module("benchmarks.resume")._tree
    first = client.wait(client.submit(tree(n)), timeout=600)
    assert first["status"] == "failed", first["status"]
    root = first["root"]
    ch = keys.channel(first["run_id"], root)
    deadline = time.monotonic() + 30
    while conn.ttl(ch) < 0:  # settled: kept with a TTL
        if time.monotonic() > deadline:
            raise TimeoutError(f"channel {ch} was not kept (ttl {conn.ttl(ch)})")
        time.sleep(0.05)
    kept = int(conn.memory_usage(ch, samples=0) or 0)
    floor = _floor_copy(conn, ch)
    conn.set("bench:flag", 1)
    t0 = time.perf_counter()
    resumed_id = client.rerun(first["run_id"], from_failure=True)
    write = time.perf_counter() - t0
    resumed = client.wait(resumed_id, timeout=600, tasks=False)
    resume_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = client.wait(client.rerun(first["run_id"]), timeout=600, tasks=False)
    full_wall = time.perf_counter() - t0
    reused = client.status(resumed_id)["tasks"][0]["reused_from"] == first["run_id"]
    checked = resumed["result"] == full["result"] == n and reused
    return {
        "n": n,
        "kept_bytes": kept,
        "bytes_per_value": kept / n,
        "resume_write_s": write,
        "floor_copy_s": floor,
        "write_over_floor": write / floor if floor else None,
        "resume_run_s": resume_wall,
        "full_rerun_s": full_wall,
        "checked": checked,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with RedisServer() as server:
        env = {
            **os.environ,
            "PLANKTON_REDIS_URL": server.url,
            "PLANKTON_IMPORTS": "benchmarks.resume",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        os.environ["PLANKTON_REDIS_URL"] = server.url
        procs = [start_process([sys.executable, "-m", "scheduler"], env=env, cwd=ROOT)]
        procs += [
            start_process([sys.executable, "-m", "workers", "--name", f"w{i}"], env=env, cwd=ROOT)
            for i in range(2)
        ]
        try:
            client = pk.Client(server.url, imports=["benchmarks.resume"])
            for n in sizes:
                rows.append(_one(client, n))
            client.close()
        finally:
            for p in procs:
                stop_process(p)
    print(
        f"{'N':>9} {'kept':>10} {'B/value':>8} {'resume write':>13} {'floor copy':>11} "
        f"{'ratio':>6} {'resume run':>11} {'full rerun':>11} checked"
    )
    for r in rows:
        print(
            f"{r['n']:>9,} {r['kept_bytes']:>10,} {r['bytes_per_value']:>8.1f} "
            f"{r['resume_write_s']:>12.3f}s {r['floor_copy_s']:>10.3f}s "
            f"{r['write_over_floor']:>5.1f}x {r['resume_run_s']:>10.2f}s "
            f"{r['full_rerun_s']:>10.2f}s {r['checked']}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "resume-latest.json"
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if all(r["checked"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
