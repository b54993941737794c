"""``python -m benchmarks.cluster_scrape``: what one metrics scrape costs on a Redis Cluster
as the number of hash slots holding runs grows (docs/scaling.md).

On a Cluster every slot that holds runs has its own copy of the metric keys (the per-run
scripts may not leave their run's slot), and the collector sums the copies: its cost grows
with the slots in use, at most 16,384, and not with runs or tasks. This measures it on a
real 3-master Cluster on loopback (``tests.servers.RedisClusterNodes``) with 0, 48 (16 home
slots per master, the design's queues), 1,024 and 16,384 slot copies, each holding a
realistic hash (3 DAGs, 6 task families, a few histogram buckets: 70 fields) and a waiting
zset, beside a floor measured in the same run: the same collector on one Redis holding the
same numbers in the global keys (what a scrape costs today).

``PlanktonCollector.collect()`` is timed in-process (no HTTP), ``--scrapes`` times per
scenario; prints a table and writes ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RedisServer, machine_info, percentile, redis_connection, write_json
from plankton.engine import counters
from plankton.operations import metrics

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCENARIOS = (0, 48, 1024, 16384)


def _fields() -> dict[str, float]:
    """One slot's metrics hash: what a few runs of 3 DAGs of 6 families leave."""

    out: dict[str, float] = {}
    for d in range(3):
        out[counters.field("runs_started", f"dag{d}")] = 2
        out[counters.field("runs_ended", f"dag{d}", "succeeded")] = 2
        out[counters.field("run_seconds_b", f"dag{d}", "succeeded", 3)] = 2
        out[counters.field("run_seconds_sum", f"dag{d}", "succeeded")] = 14.5
    for f in range(6):
        fam = f"etl.tasks:Family{f}"
        for state in ("succeeded", "failed"):
            out[counters.field("tasks_ended", fam, state)] = 40
            for b in (1, 2, 3, 4):
                out[counters.field("task_seconds_b", fam, state, b)] = 10
            out[counters.field("task_seconds_sum", fam, state)] = 3.25
        out[counters.field("task_retries", fam, "error")] = 1
        out[counters.field("fenced_writes", "emit")] = 1
    return out


def _fill(
    conn: Any, tags: list[str], fields: dict[str, float], now_ms: int, waiting: int = 1
) -> None:
    """Write one copy of the metric keys per tag ('' = the global keys), each with
    ``waiting`` queued tasks."""
    from plankton import keys

    pipe = conn.pipeline(transaction=False)
    for i, tag in enumerate(tags):
        pipe.hset(keys.metrics(tag), mapping=fields)
        pipe.zadd(keys.waiting("default", tag), {f"r{i}-{j}/0": now_ms for j in range(waiting)})
        pipe.sadd(keys.waiting_queues(tag), "default")
        if tag:
            pipe.sadd(keys.METRIC_TAGS, tag)
        if len(pipe) > 4000:
            pipe.execute()
    pipe.execute()


def _values(collector: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape but the ages (they depend on the clock)."""
    return {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for m in collector.collect()
        for smp in m.samples
        if "oldest" not in smp.name
    }


def _time(conn: Any, n: int) -> dict[str, Any]:

    collector = metrics.PlanktonCollector(conn)
    values = _values(collector)  # warms the connections too
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        for _m in collector.collect():
            pass
        took.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(percentile(took, 50), 2),
        "p95_ms": round(percentile(took, 95), 2),
        "samples": len(values),
        "values": values,
    }


def run(scrapes: int) -> dict[str, Any]:
    from plankton.engine import slots
    from tests.servers import RedisClusterNodes

    fields = _fields()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "fields_per_copy": len(fields),
        "scenarios": {},
    }
    now_ms = int(time.time() * 1000)
    with RedisServer() as single:
        one = redis_connection(single.url)
        nodes = RedisClusterNodes(Path(tempfile.mkdtemp(prefix="plankton-bench-cluster-")))
        try:
            rc = nodes.start().client()
            home = [slots.tag_of_slot(s) for s in range(16384)]
            for n in SCENARIOS:
                rc.flushall()
                one.flushall()
                # Home slots spread evenly over the slot space (and so over the masters).
                tags = [home[(i * 16384) // n] for i in range(n)] if n else []
                _fill(rc, tags, fields, now_ms)
                # The floor: one Redis, the same totals in the global keys.
                if n:
                    _fill(one, [""], {k: v * n for k, v in fields.items()}, now_ms, waiting=n)
                print(f"scrape with {n} slot copies ...", file=sys.stderr, flush=True)
                c, o = _time(rc, scrapes), _time(one, scrapes)
                same = c.pop("values") == o.pop("values")
                report["scenarios"][str(n)] = {"cluster": c, "one_redis": o, "same_numbers": same}
            rc.close()
        finally:
            nodes.stop()
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{'slot copies':>11} {'Cluster p50/p95 ms':>20} {'one Redis p50/p95 ms':>22} "
        f"{'samples':>8}"
    )
    for n, row in report["scenarios"].items():
        c, o = row["cluster"], row["one_redis"]
        print(
            f"{n:>11} {c['p50_ms']:>9} / {c['p95_ms']:<8} {o['p50_ms']:>10} / "
            f"{o['p95_ms']:<9} {c['samples']:>8}"
            + ("" if row["same_numbers"] else "   SUMS DIFFER from one Redis")
        )
    print(
        f"\n{report['fields_per_copy']} fields per copy; 3 masters on loopback; the same "
        "totals on one Redis as the floor"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_scrape", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "cluster-scrape-latest.json"))
    args = parser.parse_args(argv)
    if args.scrapes < 1:
        parser.error("--scrapes must be at least 1")
    report = run(args.scrapes)
    print_table(report)
    write_json(report, args.out)
    return 0 if all(r["same_numbers"] for r in report["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
