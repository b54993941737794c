"""Task functions and worker settings of the SAQ peer (``python -m saq
benchmarks.peers.tasks_saq.settings``); the Redis URL and queue name come from the
environment the peer sets (BENCH_SAQ_URL, BENCH_SAQ_QUEUE). SAQ's defaults otherwise:
JSON serialisation, concurrency 10 per worker."""

from __future__ import annotations

import os

from saq import Queue


async def leaf(ctx, *, i: int) -> str:
    return str(i)


async def gather(ctx, *, values: list, n: int) -> int:
    if len(values) != n or sorted(int(v) for v in values) != list(range(n)):
        raise AssertionError(f"gather received {len(values)} values, expected {n}")
    return len(values)


async def noop(ctx) -> int:
    return 1


settings = {
    "queue": Queue.from_url(
        os.environ.get("BENCH_SAQ_URL", "redis://localhost:6379/0"),
        name=os.environ.get("BENCH_SAQ_QUEUE", "bench-saq"),
    ),
    "functions": [leaf, gather, noop],
}
