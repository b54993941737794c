"""The Celery app and tasks of the Celery peer (``celery -A benchmarks.peers.celery_app``).

Broker and result backend are both Redis, from ``PLANKTON_BENCH_CELERY_URL``; the queue
from ``PLANKTON_BENCH_CELERY_QUEUE``. JSON serialisation only (no pickle).
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.peers import STREAM_ITEM

URL_ENV = "PLANKTON_BENCH_CELERY_URL"
QUEUE_ENV = "PLANKTON_BENCH_CELERY_QUEUE"


def make_app(url: str, queue: str) -> Celery:
    app = Celery("plankton_bench", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=queue,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # redis-py 8's default 5 s socket timeout would break long blocking reads
        redis_socket_timeout=None,
    )
    return app


app = make_app(
    os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"), os.environ.get(QUEUE_ENV, "bench-celery")
)


@app.task(name="bench.leaf")
def leaf(i: int) -> str:
    return str(i)


@app.task(name="bench.collect")
def collect(values: list, n: int) -> int:
    if len(values) != n:
        raise AssertionError(f"fan-in received {len(values)} values, expected {n}")
    if sorted(int(v) for v in values) != list(range(n)):
        raise AssertionError("fan-in received the wrong values")
    return len(values)


@app.task(name="bench.first")
def first() -> int:
    return 1


@app.task(name="bench.inc")
def inc(value: int, expected: int | None = None) -> int:
    value = value + 1
    if expected is not None and value != expected:
        raise AssertionError(f"chain root computed {value}, expected {expected}")
    return value


@app.task(name="bench.stream_child")
def stream_child(n: int) -> list[str]:
    return [STREAM_ITEM.format(i) for i in range(n)]


@app.task(name="bench.count")
def count(values: list, n: int) -> int:
    if len(values) != n:
        raise AssertionError(f"stream parent counted {len(values)} values, expected {n}")
    return len(values)


@app.task(name="bench.noop")
def noop() -> int:
    return 1
