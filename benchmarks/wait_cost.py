"""``python -m benchmarks.wait_cost``: what PLANKTON_WAIT_REPLICAS costs (issue 18, docs/ha.md).

One master with one replica attached (both private, on loopback), a scheduler and 2 workers.
Each round runs the chosen workloads once with the setting off and once with it on (workers,
scheduler and client restarted with it; which goes first alternates), so both sides share the
machine's load of the moment. Prints the medians and on/off ratios, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_tasks as bt
from benchmarks.harness import (
    RedisServer,
    figure,
    machine_info,
    wait_for,
    workload_list,
    write_json,
)
from benchmarks.plankton_bench import BENCHES, Stack

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ["fanin-1000", "chain-100", "stream-100k", "wide-10k", "latency"]


def _round(url: str, replicas: int, workloads: list[str]) -> dict[str, Any]:
    import plankton as pk
    from plankton.settings import load

    stack = Stack(url)
    stack.env["PLANKTON_WAIT_REPLICAS"] = str(replicas)
    try:
        stack.start(2)
        client = pk.Client(
            settings=load(url=url, imports=("benchmarks.bench_tasks",), wait_replicas=replicas)
        )
        client.wait(client.submit(bt.BNoop()), timeout=60)  # warm up
        out: dict[str, Any] = {}
        for name in workloads:
            got = BENCHES[name](client, stack, 1)
            out.update(got if "unit" not in got else {name: got})
        client.close()
        return out
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_cost")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(DEFAULT))
    parser.add_argument("--out", default=str(RESULTS / "wait-cost.json"))
    args = parser.parse_args(argv)
    workloads = workload_list(parser, args.workloads, list(BENCHES))
    master = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    samples: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    checked: dict[str, bool] = {}
    units: dict[str, str] = {}
    try:
        import redis

        m = redis.Redis(port=master.port)
        m.set("bench:sync", 1)
        wait_for(lambda: m.wait(1, 100) == 1, 30, what="the replica to sync")
        for i in range(args.rounds):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                print(f"round {i + 1} WAIT {mode} ...", file=sys.stderr, flush=True)
                m.config_resetstat()
                got = _round(master.url, 1 if mode == "on" else 0, workloads)
                waits = m.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
                print(f"  WAIT calls: {waits}", file=sys.stderr, flush=True)
                samples[mode].setdefault("wait-calls", []).append(waits)
                units["wait-calls"], checked["wait-calls"] = "calls", True
                for name, fig in got.items():
                    samples[mode].setdefault(name, []).append(fig["median"])
                    checked[name] = checked.get(name, True) and fig["checked"]
                    units[name] = fig["unit"]
                m.flushall()
                time.sleep(0.5)
    finally:
        replica.stop()
        master.stop()
    report: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds, "figures": {}}
    print(f"{'workload':<16}{'unit':>10}{'WAIT off':>12}{'WAIT 1':>12}{'on/off':>9}")
    for name in samples["off"]:
        off = figure(samples["off"][name], units[name], checked[name])
        on = figure(samples["on"][name], units[name], checked[name])
        ratio = on["median"] / off["median"] if off["median"] else 0.0
        report["figures"][name] = {"off": off, "on": on, "on_over_off": round(ratio, 3)}
        print(
            f"{name:<16}{units[name]:>10}{off['median']:>12.4g}{on['median']:>12.4g}{ratio:>9.2f}"
        )
    write_json(report, args.out)
    return 0 if all(checked.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
