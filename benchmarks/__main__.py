"""``python -m benchmarks``: Plankton's workloads (BENCHMARKS.md), optionally beside peers.

Starts its own Redis (no persistence), a scheduler and 2 workers, runs every workload 3 times,
checks each run's output, prints a table and writes ``benchmarks/results/latest.json``.
``--peers`` also runs RQ (and the other peers installed) in the same invocation, so every
ratio compares figures measured on the same machine on the same day.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness import workload_list, write_json
from benchmarks.plankton_bench import WORKLOADS, run_all

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    parser.add_argument(
        "--peers",
        nargs="?",
        const="rq",
        default="",
        help="also run peers (default rq; e.g. rq,celery,dask,luigi)",
    )
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args(argv)
    workloads = workload_list(parser, args.workloads, WORKLOADS)
    report = run_all(workloads, args.repeats)
    if args.peers:
        from benchmarks.peers import resolve_names, run_peers
        from benchmarks.peers.__main__ import fresh_redis

        peer_workloads = [w for w in workloads if w in PEER_WORKLOADS]
        report["peers"] = run_peers(
            resolve_names(args.peers.split(",")), peer_workloads, fresh_redis, args.repeats
        )
        report["ratios"] = ratios(report)
    print_table(report)
    write_json(report, args.out)
    return 0 if all(w.get("checked") for w in report["workloads"].values()) else 1


#: Workloads the peers implement too.
PEER_WORKLOADS = ("fanin-1000", "chain-100", "stream-100k", "wide-10k", "latency")


def ratios(report: dict) -> dict:
    """Plankton relative to RQ, per workload (>1 means Plankton is better)."""
    rq = report.get("peers", {}).get("rq", {}).get("figures", {})
    out = {}
    for name, ours in report["workloads"].items():
        theirs = rq.get(name) or rq.get(name.removesuffix("-user"))
        if not theirs or not isinstance(theirs, dict) or "median" not in theirs:
            continue
        if not ours.get("median"):
            continue
        better_high = ours["unit"] in ("tasks/s", "values/s")
        a, b = ours["median"], theirs["median"]
        if a and b:
            out[name] = round(a / b if better_high else b / a, 2)
    return out


def print_table(report: dict) -> None:
    if report.get("peers"):
        from benchmarks.peers import format_table

        print()
        print(format_table(report["peers"], extra_columns={"Plankton x2": report["workloads"]}))
    print(f"\n{'workload':<14} {'median':>12} {'min':>12} {'max':>12}  unit        checked  extra")
    for name, w in report["workloads"].items():
        extra = {
            k: v
            for k, v in w.items()
            if k not in ("median", "min", "max", "unit", "checked", "runs")
        }
        if "median" not in w:
            print(f"{name:<14} {w}")
            continue
        print(
            f"{name:<14} {w['median']:>12.4g} {w['min']:>12.4g} {w['max']:>12.4g}  "
            f"{w['unit']:<11} {str(w['checked']):<7}  {json.dumps(extra, default=str)}"
        )
    if report.get("ratios"):
        print("\nPlankton vs RQ SimpleWorker x2 (same run; >1 = Plankton ahead):")
        for name, ratio in report["ratios"].items():
            print(f"  {name:<14} {ratio}x")


if __name__ == "__main__":
    sys.exit(main())
