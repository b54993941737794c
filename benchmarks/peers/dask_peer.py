"""The workloads on Dask distributed, with futures: ``LocalCluster`` with 2 worker processes
(1 thread each, behind nannies) and the scheduler in the driving process.

Two variants: the default scheduler (queuing on, ``worker-saturation`` 1.1) and queuing off
(``distributed.scheduler.worker-saturation: inf``). Each runs in a child process of its own
(process group), so the cluster's processes cannot outlive it. Redis is not used.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from benchmarks.peers import (
    CHAIN_N,
    LATENCY_N,
    RUN_TIMEOUT,
    STREAM_ITEM,
    STREAM_N,
    WorkloadPeer,
    child_main,
    run_in_subprocess,
)

N_WORKERS = 2


# ------------------------------------------------------------------ task functions


def leaf(i: int) -> str:
    return str(i)


def collect_values(values: list, n: int) -> int:
    if len(values) != n:
        raise AssertionError(f"fan-in received {len(values)} values, expected {n}")
    if sorted(int(v) for v in values) != list(range(n)):
        raise AssertionError("fan-in received the wrong values")
    return len(values)


def first() -> int:
    return 1


def inc(value: int, expected: int | None = None) -> int:
    value = value + 1
    if expected is not None and value != expected:
        raise AssertionError(f"chain root computed {value}, expected {expected}")
    return value


def stream_child(n: int) -> list[str]:
    return [STREAM_ITEM.format(i) for i in range(n)]


def count(values: list, n: int) -> int:
    if len(values) != n:
        raise AssertionError(f"stream parent counted {len(values)} values, expected {n}")
    return len(values)


def noop() -> int:
    return 1


# ------------------------------------------------------------------ the peer


class DaskPeer(WorkloadPeer):
    def __init__(self, queuing: bool):
        import dask
        import distributed  # noqa: F401  (loads the distributed config defaults)

        self.queuing = queuing
        if not queuing:
            dask.config.set({"distributed.scheduler.worker-saturation": float("inf")})
        self.worker_saturation = dask.config.get("distributed.scheduler.worker-saturation")
        self.cluster = None
        self.client = None

    def start_workers(self) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(N_WORKERS, timeout=60)
        for _ in range(3):  # warm up: both workers import this module
            self.client.gather(self.client.map(noop_i, range(8), pure=False))

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def fanin(self, n: int) -> tuple[float, bool]:
        c = self.client
        t = time.perf_counter()
        leaves = c.map(leaf, range(n), pure=False)
        root = c.submit(collect_values, leaves, n, pure=False)
        value = root.result(timeout=RUN_TIMEOUT)
        wall = time.perf_counter() - t
        del leaves, root
        return wall, value == n

    def chain(self, n: int = CHAIN_N) -> tuple[float, bool]:
        c = self.client
        t = time.perf_counter()
        fut = c.submit(first, pure=False)
        futures = [fut]
        for k in range(2, n + 1):
            fut = c.submit(inc, fut, n if k == n else None, pure=False)
            futures.append(fut)
        value = fut.result(timeout=RUN_TIMEOUT)
        wall = time.perf_counter() - t
        del futures, fut
        return wall, value == n

    def stream(self, n: int = STREAM_N) -> tuple[float, bool]:
        c = self.client
        t = time.perf_counter()
        child = c.submit(stream_child, n, pure=False)
        parent = c.submit(count, child, n, pure=False)
        value = parent.result(timeout=RUN_TIMEOUT)
        wall = time.perf_counter() - t
        del child, parent
        return wall, value == n

    def latency(self, n: int = LATENCY_N) -> tuple[list[float], bool]:
        out = []
        ok = True
        for _ in range(n):
            t = time.perf_counter()
            value = self.client.submit(noop, pure=False).result(timeout=60)
            out.append((time.perf_counter() - t) * 1000.0)
            ok = ok and value == 1
        return out, ok


def noop_i(i: int) -> int:
    return i


def run_inprocess(
    workloads: Iterable[str], redis_url: str = "", repeats: int = 3, queuing: bool = True
) -> dict[str, Any]:
    return DaskPeer(queuing).run_many(workloads, repeats)


def run_many(
    workloads: Iterable[str], redis_url: str = "", repeats: int = 3, queuing: bool = True
) -> dict[str, Any]:
    return run_in_subprocess(
        "dask_peer", workloads, redis_url, repeats, [] if queuing else ["--no-queuing"]
    )


def run(
    workload: str, redis_url: str = "", repeats: int = 3, queuing: bool = True
) -> dict[str, Any]:
    return run_many([workload], redis_url, repeats, queuing=queuing)


if __name__ == "__main__":
    # Run the importable module's functions, so that workers unpickle them by reference.
    from benchmarks.peers import dask_peer as _module

    child_main(_module.run_inprocess, extra=lambda a: {"queuing": not a.no_queuing})
