"""``python -m benchmarks.ab``: two checkouts of Plankton, before and after, in one run.

A refactor must not move the figures, and these machines change speed by 2x between days:
so both sides are measured here, alternating rounds (before, after, before, after, ...), each
round (its order flipped every round: chain-100 moved 25 % with the order alone on
2026-12-07) a ``python -m benchmarks --repeats 1`` in that checkout with its own virtualenv. It
prints the median of each side per workload, their ratio (after / before for rates, before /
after for times: > 1 means after is faster) and writes the rounds to a JSON file.

    python -m benchmarks.ab --before /path/to/old/checkout --after . \\
        --workloads fanin-1000,chain-100,stream-100k --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: Units where smaller is better (the others are rates).
TIMES = ("ms/edge", "s", "ms")


def python_of(checkout: Path) -> str:
    venv = checkout / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def one_round(checkout: Path, workloads: str) -> dict[str, Any]:
    """One ``python -m benchmarks --repeats 1`` in ``checkout``; its workloads' figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "round.json"
        cmd = [python_of(checkout), "-m", "benchmarks", "--repeats", "1"]
        cmd += ["--workloads", workloads, "--out", str(out)]
        done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"{checkout}: benchmarks failed\n{done.stdout}\n{done.stderr}")
        workloads_out: dict[str, Any] = json.loads(out.read_text())["workloads"]
        return workloads_out


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for name in rounds["before"][0]:
        side = {s: [r[name]["median"] for r in rounds[s]] for s in ("before", "after")}
        unit = rounds["before"][0][name]["unit"]
        before, after = statistics.median(side["before"]), statistics.median(side["after"])
        faster = before / after if unit in TIMES else after / before
        table[name] = {
            "unit": unit,
            "before": before,
            "after": after,
            "after_faster_by": round(faster, 3),
            "rounds": side,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab")
    parser.add_argument("--before", type=Path, required=True, help="checkout measured first")
    parser.add_argument("--after", type=Path, default=Path("."), help="checkout measured second")
    parser.add_argument("--workloads", default="fanin-1000,chain-100,stream-100k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "ab-latest.json")
    args = parser.parse_args(argv)
    rounds: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        # the order flips every round: the side measured first in a round is not favoured
        for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
            rounds[side].append(one_round(getattr(args, side).resolve(), args.workloads))
            print(f"round {i + 1}/{args.rounds} {side} done", file=sys.stderr, flush=True)
    table = summarize(rounds)
    print(f"\n{'workload':<14} {'before':>12} {'after':>12}  unit        after faster by")
    for name, row in table.items():
        print(
            f"{name:<14} {row['before']:>12.4g} {row['after']:>12.4g}  {row['unit']:<11} "
            f"{row['after_faster_by']}x"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
