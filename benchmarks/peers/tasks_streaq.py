"""Task functions of the streaq peer (``python -m streaq run
benchmarks.peers.tasks_streaq:worker``); the Redis URL and queue name come from the
environment the peer sets (BENCH_STREAQ_URL, BENCH_STREAQ_QUEUE). streaq's defaults otherwise
(concurrency 16), but JSON instead of its default pickle (no pickle, as for every peer)."""

from __future__ import annotations

import json
import os

from streaq import Worker

worker = Worker(
    redis_url=os.environ.get("BENCH_STREAQ_URL", "redis://localhost:6379/0"),
    queue_name=os.environ.get("BENCH_STREAQ_QUEUE", "bench-streaq"),
    serializer=json.dumps,
    deserializer=json.loads,
)


@worker.task()
async def leaf(i: int) -> str:
    return str(i)


@worker.task()
async def gather(ids: list[str], n: int) -> int:
    """The fan-in: runs after every leaf (``after=ids``) and reads their results in one MGET
    of streaq's result keys."""
    raws = await worker.redis.mget([worker.results_key + i for i in ids])
    values = [json.loads(raw)["r"] for raw in raws if raw]
    if len(values) != n or sorted(int(v) for v in values) != list(range(n)):
        raise AssertionError(f"gather received {len(values)} values, expected {n}")
    return len(values)


@worker.task()
async def noop() -> int:
    return 1
