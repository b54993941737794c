"""The workloads on Celery: ``celery worker -P solo`` ×2, Redis broker and result backend,
JSON serialisation; fan-in as a chord, lines as a chain.

Workers run without gossip, mingle and heartbeat (cluster chatter that is not per task);
the submitter waits with ``AsyncResult.get(follow_parents=False)`` on the chord body / the
chain's last task (Celery's Redis pub/sub result consumer). ``follow_parents=False`` matters:
by default ``get()`` re-checks every parent result on every message it receives, and for a
chord the parent is the header's GroupResult, so waiting on wide-10k costs the *submitter*
O(n^2) work plus 10,000 sequential GETs and pub/sub subscriptions (measured: 200-600 s
instead of ~15 s). A failed header task still fails the body (ChordError), and a failed
link fails the chain's last result, so the check is unchanged.
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
N_WORKERS = 2


class CeleryPeer(WorkloadPeer):
    def __init__(self, redis_url: str):
        from benchmarks.peers.celery_app import make_app

        self.redis_url = redis_url
        self.queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
        self.app = make_app(redis_url, self.queue)
        self.conn = harness.redis_connection(redis_url)
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="plankton-bench-celery-")

    def sig(self, name: str, *args, **kwargs):
        return self.app.signature(name, args=args, kwargs=kwargs)

    # ---------------------------------------------------------------- workers

    def start_workers(self) -> None:
        from benchmarks.peers.celery_app import QUEUE_ENV, URL_ENV

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env[URL_ENV] = self.redis_url
        env[QUEUE_ENV] = self.queue
        for i in range(N_WORKERS):
            args = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.peers.celery_app",
                "worker",
                "-P",
                "solo",
                "-c",
                "1",
                "-n",
                f"{self.queue}-w{i}@%h",
                "-Q",
                self.queue,
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
            self.procs.append(
                harness.start_process(
                    args,
                    log_path=os.path.join(self.tmp, f"worker{i}.log"),
                    env=env,
                    cwd=str(REPO_ROOT),
                )
            )
        harness.wait_for(self._workers_ready, 60, interval=0.2, what="2 Celery workers")
        for _ in range(3):  # warm up both workers
            group = [self.sig("bench.noop").apply_async() for _ in range(8)]
            for r in group:
                r.get(timeout=60)

    def _workers_ready(self) -> bool:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"a Celery worker exited with code {p.returncode}: {self._logs()}"
                )
        replies = self.app.control.ping(timeout=0.5) or []
        names = {name for reply in replies for name in reply}
        return sum(name.startswith(self.queue) for name in names) >= N_WORKERS

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
        try:
            self.app.close()
        except Exception:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- workloads

    def fanin(self, n: int) -> tuple[float, bool]:
        from celery import chord

        t = time.perf_counter()
        header = [self.sig("bench.leaf", i) for i in range(n)]
        result = chord(header, app=self.app)(self.sig("bench.collect", n=n))
        value = result.get(timeout=RUN_TIMEOUT, follow_parents=False)
        wall = time.perf_counter() - t
        return wall, value == n

    def chain(self, n: int = CHAIN_N) -> tuple[float, bool]:
        from celery import chain

        t = time.perf_counter()
        steps = [self.sig("bench.first")]
        steps += [self.sig("bench.inc") for _ in range(n - 2)]
        steps.append(self.sig("bench.inc", expected=n))
        result = chain(*steps, app=self.app).apply_async()
        value = result.get(timeout=RUN_TIMEOUT, follow_parents=False)
        wall = time.perf_counter() - t
        return wall, value == n

    def stream(self, n: int = STREAM_N) -> tuple[float, bool]:
        from celery import chain

        t = time.perf_counter()
        result = chain(
            self.sig("bench.stream_child", n), self.sig("bench.count", n=n), app=self.app
        ).apply_async()
        value = result.get(timeout=RUN_TIMEOUT, follow_parents=False)
        wall = time.perf_counter() - t
        return wall, value == n

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        out = []
        ok = True
        noop = self.sig("bench.noop")
        for _ in range(n):
            t = time.perf_counter()
            value = noop.apply_async().get(timeout=60)
            out.append((time.perf_counter() - t) * 1000.0)
            ok = ok and value == 1
        return out, ok


def run_many(workloads: Iterable[str], redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return CeleryPeer(redis_url).run_many(workloads, repeats)


def run(workload: str, redis_url: str, repeats: int = 3) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats)
