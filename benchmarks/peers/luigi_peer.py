"""The workloads on Luigi: ``luigi.build(..., local_scheduler=True, workers=2)``.

With 2 workers Luigi runs every task in a forked process; data passes through
``LocalTarget`` files in a temp dir (the Luigi way: a task's output is a target its parent
reads). ``wide-10k`` is skipped: Luigi's local scheduler is known to take over 300 s on it.
The whole peer runs in a child process of its own (process group), so no forked task process
can outlive it. Redis is not used.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Any, Iterable

import luigi

from benchmarks.peers import (
    CHAIN_N,
    FANIN_N,
    LATENCY_N,
    STREAM_ITEM,
    STREAM_N,
    child_main,
    collect,
    run_in_subprocess,
)

N_WORKERS = 2
SKIP = {
    "wide-10k": "Luigi's local scheduler takes over 300 s on wide-10k (BENCHMARKS.md); "
    "skipped to keep the suite short"
}


class BenchTask(luigi.Task):
    directory = luigi.Parameter()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


class Leaf(BenchTask):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(self.path(f"leaf-{self.i}"))

    def run(self):
        with self.output().open("w") as fh:
            fh.write(str(self.i))


class FanIn(BenchTask):
    n = luigi.IntParameter()

    def requires(self):
        return [Leaf(directory=self.directory, i=i) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget(self.path("fanin"))

    def run(self):
        values = []
        for target in self.input():
            with target.open("r") as fh:
                values.append(fh.read())
        if len(values) != self.n or sorted(int(v) for v in values) != list(range(self.n)):
            raise AssertionError(f"fan-in received {len(values)} values, expected {self.n}")
        with self.output().open("w") as fh:
            fh.write(str(len(values)))


class Chain(BenchTask):
    k = luigi.IntParameter()
    n = luigi.IntParameter()

    def requires(self):
        return Chain(directory=self.directory, k=self.k - 1, n=self.n) if self.k > 1 else []

    def output(self):
        return luigi.LocalTarget(self.path(f"chain-{self.k}"))

    def run(self):
        value = 0
        if self.k > 1:
            with self.input().open("r") as fh:
                value = int(fh.read())
        value += 1
        if self.k == self.n and value != self.n:
            raise AssertionError(f"chain root computed {value}, expected {self.n}")
        with self.output().open("w") as fh:
            fh.write(str(value))


class StreamChild(BenchTask):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(self.path("stream-child"))

    def run(self):
        with self.output().open("w") as fh:
            fh.write("\n".join(STREAM_ITEM.format(i) for i in range(self.n)))
            fh.write("\n")


class StreamParent(BenchTask):
    n = luigi.IntParameter()

    def requires(self):
        return StreamChild(directory=self.directory, n=self.n)

    def output(self):
        return luigi.LocalTarget(self.path("stream-parent"))

    def run(self):
        with self.input().open("r") as fh:
            counted = sum(1 for _ in fh)
        if counted != self.n:
            raise AssertionError(f"stream parent counted {counted} values, expected {self.n}")
        with self.output().open("w") as fh:
            fh.write(str(counted))


class Noop(BenchTask):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(self.path(f"noop-{self.i}"))

    def run(self):
        with self.output().open("w") as fh:
            fh.write("1")


def _read(target) -> str:
    with target.open("r") as fh:
        return fh.read()


class LuigiPeer:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="plankton-bench-luigi-")
        self.counter = 0

    def fresh_dir(self) -> str:
        self.counter += 1
        path = os.path.join(self.tmp, f"run-{self.counter}")
        os.makedirs(path)
        return path

    def build(self, task) -> bool:
        result = luigi.build(
            [task],
            local_scheduler=True,
            workers=N_WORKERS,
            detailed_summary=True,
            log_level="WARNING",
        )
        return result.status in (
            luigi.execution_summary.LuigiStatusCode.SUCCESS,
            luigi.execution_summary.LuigiStatusCode.SUCCESS_WITH_RETRY,
        )

    def timed(self, task, expected: str) -> tuple[float, bool]:
        t = time.perf_counter()
        ok = self.build(task)
        wall = time.perf_counter() - t
        if not ok:
            raise RuntimeError(f"luigi.build of {task} did not succeed")
        return wall, _read(task.output()) == expected

    def once(self, workload: str):
        if workload == "fanin-1000":
            return lambda r: self.timed(FanIn(directory=self.fresh_dir(), n=FANIN_N), str(FANIN_N))
        if workload == "chain-100":
            return lambda r: self.timed(
                Chain(directory=self.fresh_dir(), k=CHAIN_N, n=CHAIN_N), str(CHAIN_N)
            )
        if workload == "stream-100k":
            return lambda r: self.timed(
                StreamParent(directory=self.fresh_dir(), n=STREAM_N), str(STREAM_N)
            )
        if workload == "latency":
            return lambda r: self.latency()
        raise ValueError(f"unknown workload {workload!r}")

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        directory = self.fresh_dir()
        out = []
        ok = True
        for i in range(n):
            task = Noop(directory=directory, i=i)
            t = time.perf_counter()
            done = self.build(task)
            out.append((time.perf_counter() - t) * 1000.0)
            ok = ok and done and _read(task.output()) == "1"
        return out, ok

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_inprocess(
    workloads: Iterable[str], redis_url: str = "", repeats: int = 3
) -> dict[str, Any]:
    logging.getLogger("luigi").setLevel(logging.WARNING)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    peer = LuigiPeer()
    results: dict[str, Any] = {}
    try:
        for workload in workloads:
            if workload in SKIP:
                results[workload] = {"skipped": SKIP[workload], "checked": False}
                continue
            results.update(collect(workload, peer.once(workload), repeats))
    finally:
        peer.close()
    return results


def run_many(workloads: Iterable[str], redis_url: str = "", repeats: int = 3) -> dict[str, Any]:
    workloads = list(workloads)
    runnable = [w for w in workloads if w not in SKIP]
    results = run_in_subprocess("luigi_peer", runnable, redis_url, repeats) if runnable else {}
    for w in workloads:
        if w in SKIP:
            results[w] = {"skipped": SKIP[w], "checked": False}
    return results


def run(workload: str, redis_url: str = "", repeats: int = 3) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats)


if __name__ == "__main__":
    from benchmarks.peers import luigi_peer as _module

    child_main(_module.run_inprocess)
