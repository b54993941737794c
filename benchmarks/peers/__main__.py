"""``python -m benchmarks.peers [--only rq,celery,dask,luigi] [--workloads ...] [--repeats 3]``

Starts a private redis-server for each peer (unless ``--redis-url``), records the raw Redis
op rate (``redis-benchmark``) and the machine, runs the selected peers on the selected workloads,
prints a table and writes ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.peers import PEERS, WORKLOADS, format_table, resolve_names, run_peers

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "peers.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated peers (default all: {', '.join(PEERS)}; "
        "'dask' means both Dask variants)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated workloads (default: {','.join(WORKLOADS)})",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--redis-url",
        default="",
        help="use this Redis instead of a private redis-server per peer "
        "(it is not flushed, and redis-benchmark is not run)",
    )
    parser.add_argument(
        "--no-redis-benchmark", action="store_true", help="skip the raw redis-benchmark figures"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path")
    args = parser.parse_args(argv)
    args.names = resolve_names(args.only.split(",") if args.only else None)
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workload_list if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def fresh_redis():
    """A private redis-server for one peer; its URL; stopped afterwards."""
    with harness.RedisServer() as server:
        yield server.url


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every finally: block stops its workers and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report: dict = {
        "command": "python -m benchmarks.peers " + " ".join(argv or sys.argv[1:]),
        "machine": harness.machine_info(),
        "repeats": args.repeats,
        "workloads": args.workload_list,
    }
    if args.redis_url:
        report["redis"] = {"url": args.redis_url}
        report["peers"] = run_peers(
            args.names, args.workload_list, args.redis_url, args.repeats, log=log
        )
    else:
        report["redis"] = {"server": "private redis-server per peer, --save '' --appendonly no"}
        if not args.no_redis_benchmark:
            log("redis-benchmark ...")
            with harness.RedisServer() as server:
                report["redis"]["benchmark"] = harness.redis_benchmark(server.port)
        report["peers"] = run_peers(
            args.names, args.workload_list, fresh_redis, args.repeats, log=log
        )
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["loadavg_after"] = list(os.getloadavg())

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    bench = report["redis"].get("benchmark")
    if bench and "unpipelined" in bench:
        up = bench["unpipelined"]["ops_per_s"]
        pp = next(v for k, v in bench.items() if k.startswith("pipelined"))["ops_per_s"]
        print(
            "raw Redis (redis-benchmark -n 200000), ops/s: "
            + ", ".join(f"{k} {up[k]:,.0f} / {pp.get(k, 0):,.0f} with -P 16" for k in up)
        )
    m = report["machine"]
    print(
        f"machine: {m.get('cpu_model')} x{m.get('cpu_count')}, Python {m.get('python')}, "
        f"redis-server {m.get('redis_server')}, load before/after "
        f"{m.get('loadavg', [0])[0]:.2f}/{report['loadavg_after'][0]:.2f}; "
        f"median (min-max) of {args.repeats}"
    )
    print(format_table(report["peers"]))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
