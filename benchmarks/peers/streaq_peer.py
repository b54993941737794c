"""The workloads streaq can express, at its own defaults: 2 workers (``python -m streaq run
MODULE:worker``, concurrency 16 each), JSON serialisation. A fan-in is the leaves
(``Worker.enqueue_many``, one pipeline) and a ``gather`` task started ``after`` all of them
that reads their results; the submitter waits on the gather's result (``Task.result``:
pub/sub, then GET). ``latency`` is one ``noop`` task at a time the same way.
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


class StreaqPeer(WorkloadPeer):
    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.conn = harness.redis_connection(redis_url)
        self.name = f"bench-streaq-{uuid.uuid4().hex[:8]}"
        os.environ["BENCH_STREAQ_URL"], os.environ["BENCH_STREAQ_QUEUE"] = redis_url, self.name
        from benchmarks.peers import tasks_streaq as tasks

        self.tasks = tasks
        self.worker = tasks.worker
        self.worker.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.procs: list = []
        self.tmp = tempfile.mkdtemp(prefix="plankton-bench-streaq-")

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def start_workers(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        for i in range(N_WORKERS):
            self.procs.append(
                harness.start_process(
                    [sys.executable, "-m", "streaq", "run", "benchmarks.peers.tasks_streaq:worker"],
                    log_path=os.path.join(self.tmp, f"worker{i}.log"),
                    env=env,
                    cwd=str(REPO_ROOT),
                )
            )
        self._run(self._session(self._warm_up))

    def stop(self) -> None:
        for p in self.procs:
            harness.stop_process(p)
        self.procs = []
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def _session(self, body: Any, *args: Any) -> Any:
        """``body`` inside ``async with worker`` (its client connection; the context must
        be entered and left in one task, so each workload run is one coroutine)."""
        async with self.worker:
            return await body(*args)

    async def _warm_up(self) -> None:
        for _ in range(3):  # both workers have imported the tasks
            await self._noop(60)

    async def _noop(self, timeout: float) -> Any:
        task = await self.tasks.noop.enqueue()
        return (await task.result(timeout=int(timeout))).result

    async def _fanin(self, n: int) -> tuple[float, int]:
        t = time.perf_counter()
        leaves = [self.tasks.leaf.enqueue(i) for i in range(n)]
        await self.worker.enqueue_many(leaves)
        root = await self.tasks.gather.enqueue([t.id for t in leaves], n).start(
            after=[t.id for t in leaves]
        )
        value = (await root.result(timeout=RUN_TIMEOUT)).result
        return time.perf_counter() - t, value

    def fanin(self, n: int) -> tuple[float, bool]:
        wall, value = self._run(self._session(self._fanin, n))
        return wall, value == n

    def chain(self) -> Any:
        raise NotImplementedError("chain-100 not written for streaq")

    def stream(self) -> Any:
        raise NotImplementedError("streaq has no streams between tasks")

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        return self._run(self._session(self._latency, n))

    async def _latency(self, n: int) -> tuple[list[float], bool]:
        out, ok = [], True
        for _ in range(n):
            t = time.perf_counter()
            ok &= await self._noop(60) == 1
            out.append((time.perf_counter() - t) * 1000.0)
        return out, ok


def run_many(workloads: Iterable[str], redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return StreaqPeer(redis_url).run_many(
        [w for w in workloads if w in ("fanin-1000", "wide-10k", "latency")], repeats
    )


def run(workload: str, redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats)
