"""The workloads SAQ can express, at its own defaults: 2 workers (``python -m saq
SETTINGS``, concurrency 10 each, JSON). SAQ has no dependencies between jobs, so a fan-in is
what its docs show: ``Queue.map`` of the leaves (it enqueues them and polls their results),
then a final ``gather`` job given the values, awaited with ``Queue.apply`` (polls every
10 ms). ``latency`` is one ``noop`` job at a time, ``Queue.apply`` polling every 2 ms.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from benchmarks import harness
from benchmarks.peers import LATENCY_N, RUN_TIMEOUT, WorkloadPeer

REPO_ROOT = Path(__file__).resolve().parents[2]
N_WORKERS = 2
#: Queue.map's poll interval (its default, 0.5 s, would dominate every figure).
POLL = 0.01
#: Polling for one job at a time: 2 ms (SAQ's pub/sub wait can miss a job that ended first).
LATENCY_POLL = 0.002


class SAQPeer(WorkloadPeer):
    def __init__(self, redis_url: str):
        from saq import Queue

        self.redis_url = redis_url
        self.conn = harness.redis_connection(redis_url)
        self.name = f"bench-saq-{uuid.uuid4().hex[:8]}"
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(redis_url, name=self.name)
        self.procs: list = []
        self.tmp = tempfile.mkdtemp(prefix="plankton-bench-saq-")

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def start_workers(self) -> None:
        env = dict(os.environ, BENCH_SAQ_URL=self.redis_url, BENCH_SAQ_QUEUE=self.name)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        for i in range(N_WORKERS):
            self.procs.append(
                harness.start_process(
                    [sys.executable, "-m", "saq", "benchmarks.peers.tasks_saq.settings", "--quiet"],
                    log_path=os.path.join(self.tmp, f"worker{i}.log"),
                    env=env,
                    cwd=str(REPO_ROOT),
                )
            )
        self._run(self.queue.connect())
        # Warm up: both workers have imported the tasks. A worker starting sweeps the jobs
        # it finds active without a live worker's lock, so a warm-up job can be aborted
        # ("swept") while the second worker starts: try again.
        done, deadline = 0, time.monotonic() + 60
        while done < 3:
            try:
                self._run(self._apply("noop", timeout=10))
                done += 1
            except Exception:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        for p in self.procs:
            harness.stop_process(p)
        self.procs = []
        try:
            self._run(self.queue.disconnect())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _apply(
        self, fn: str, timeout: float = RUN_TIMEOUT, poll: float = POLL, **kwargs: Any
    ) -> Any:
        # Queue.apply polls (Job.refresh(until_complete=) subscribes after the enqueue and
        # can miss a job that ended first: it then waited out its whole timeout here).
        return await self.queue.apply(fn, timeout=timeout, poll_interval=poll, **kwargs)

    async def _fanin(self, n: int) -> int:
        values = await self.queue.map(
            "leaf", [{"i": i} for i in range(n)], timeout=RUN_TIMEOUT, poll_interval=POLL
        )
        return await self._apply("gather", values=values, n=n)

    def fanin(self, n: int) -> tuple[float, bool]:
        t = time.perf_counter()
        value = self._run(self._fanin(n))
        return time.perf_counter() - t, value == n

    def chain(self) -> Any:
        raise NotImplementedError("SAQ has no job dependencies (chain-100 not expressed)")

    def stream(self) -> Any:
        raise NotImplementedError("SAQ has no streams between jobs (stream-100k not expressed)")

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        out, ok = [], True
        for _ in range(n):
            t = time.perf_counter()
            ok &= self._run(self._apply("noop", timeout=60, poll=LATENCY_POLL)) == 1
            out.append((time.perf_counter() - t) * 1000.0)
        return out, ok


def run_many(workloads: Iterable[str], redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return SAQPeer(redis_url).run_many(
        [w for w in workloads if w in ("fanin-1000", "wide-10k", "latency")], repeats
    )


def run(workload: str, redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats)
