"""The workloads on RQ 2.x: ``rq worker --worker-class rq.worker.SimpleWorker`` ×2, JSON
serializer (no pickle), DAG edges as ``depends_on``.

A parent reads its dependencies' return values from RQ's result streams (see
``tasks_rq``). The submitter waits for the root's result with a blocking ``XREAD`` on its
result stream (``Job.latest_result(timeout=...)``), so the wall time ends when RQ has stored
the root's result.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from benchmarks import harness
from benchmarks.peers import (
    CHAIN_N,
    LATENCY_N,
    RUN_TIMEOUT,
    STREAM_N,
    WorkloadPeer,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TASKS = "benchmarks.peers.tasks_rq"
N_WORKERS = 2


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


class RQPeer(WorkloadPeer):
    def __init__(self, redis_url: str):
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.redis_url = redis_url
        self.conn = harness.redis_connection(redis_url)
        self.queue_name = f"bench-rq-{uuid.uuid4().hex[:8]}"
        self.queue = Queue(self.queue_name, connection=self.conn, serializer=JSONSerializer)
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="plankton-bench-rq-")

    # ---------------------------------------------------------------- workers

    def start_workers(self) -> None:
        for i in range(N_WORKERS):
            name = f"{self.queue_name}-w{i}"
            args = [
                sys.executable,
                "-m",
                "rq.cli",
                "worker",
                "--worker-class",
                "rq.worker.SimpleWorker",
                "--serializer",
                "rq.serializers.JSONSerializer",
                "--url",
                self.redis_url,
                "--name",
                name,
                "--logging_level",
                "WARNING",
                "--disable-job-desc-logging",
                self.queue_name,
            ]
            self.procs.append(
                harness.start_process(
                    args,
                    log_path=os.path.join(self.tmp, f"worker{i}.log"),
                    env=_worker_env(),
                    cwd=str(REPO_ROOT),
                )
            )
        harness.wait_for(self._workers_ready, 60, interval=0.1, what="2 RQ workers")
        # Warm up: every worker imports the task module before the clock starts.
        for _ in range(3):
            self._wait([self.queue.enqueue(f"{TASKS}.noop") for _ in range(8)][-1])

    def _workers_ready(self) -> bool:
        from rq import Worker

        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"an RQ worker exited with code {p.returncode}: {self._logs()}")
        return len(Worker.all(queue=self.queue)) >= N_WORKERS

    def _logs(self) -> str:
        out = []
        for i in range(N_WORKERS):
            try:
                out.append(Path(self.tmp, f"worker{i}.log").read_text()[-2000:])
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            harness.stop_process(p)
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- helpers

    def _wait(self, job, timeout: float = RUN_TIMEOUT):
        """Block until ``job`` has a result; return its value, raise if it failed."""
        from rq.results import Result

        result = job.latest_result(timeout=int(timeout))
        if result is None:
            raise TimeoutError(f"RQ job {job.id} had no result after {timeout}s")
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {job.id} failed: {result.exc_string}")
        return result.return_value

    def _enqueue_leaves(self, n: int):
        from rq import Queue

        datas = [Queue.prepare_data(f"{TASKS}.leaf", args=(i,)) for i in range(n)]
        with self.conn.pipeline() as pipe:
            jobs = self.queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
        return jobs

    # ---------------------------------------------------------------- workloads

    def fanin(self, n: int) -> tuple[float, bool]:
        t = time.perf_counter()
        leaves = self._enqueue_leaves(n)
        root = self.queue.enqueue(f"{TASKS}.fanin_parent", args=(n,), depends_on=leaves)
        value = self._wait(root)
        wall = time.perf_counter() - t
        return wall, value == n

    def chain(self, n: int = CHAIN_N) -> tuple[float, bool]:
        t = time.perf_counter()
        job = self.queue.enqueue(f"{TASKS}.chain_first")
        for k in range(2, n + 1):
            root = k == n
            job = self.queue.enqueue(
                f"{TASKS}.chain_next",
                kwargs={"is_root": root, "expected": n if root else None},
                depends_on=job,
            )
        value = self._wait(job)
        wall = time.perf_counter() - t
        return wall, value == n

    def stream(self, n: int = STREAM_N) -> tuple[float, bool]:
        t = time.perf_counter()
        child = self.queue.enqueue(f"{TASKS}.stream_child", args=(n,))
        parent = self.queue.enqueue(f"{TASKS}.stream_parent", args=(n,), depends_on=child)
        value = self._wait(parent)
        wall = time.perf_counter() - t
        return wall, value == n

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        out = []
        ok = True
        for _ in range(n):
            t = time.perf_counter()
            job = self.queue.enqueue(f"{TASKS}.noop")
            value = self._wait(job, timeout=60)
            out.append((time.perf_counter() - t) * 1000.0)
            ok = ok and value == 1
        return out, ok


def run_many(workloads: Iterable[str], redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return RQPeer(redis_url).run_many(workloads, repeats)


def run(workload: str, redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats)
