"""Task functions for the RQ peer, importable by ``rq worker`` processes.

Results travel the RQ way: a job returns a value (stored by RQ in its ``rq:results:<id>``
stream, JSON-serialised), and the dependent job (``depends_on``) reads its dependencies'
results. Reading many results is pipelined (one round trip), which is what a careful RQ user
would write; it is RQ's public ``Result`` format, read with ``Result.restore``.
"""

from __future__ import annotations

from rq import get_current_job
from rq.results import Result

from benchmarks.peers import STREAM_ITEM


def leaf(i: int) -> str:
    return str(i)


def _dependency_results(job) -> list:
    # The job hash's ``dependency_ids`` (``job.dependency_ids`` reads the dependencies set,
    # which RQ only writes when the job had to wait, so it can be empty).
    ids = list(job._dependency_ids)
    with job.connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        responses = pipe.execute()
    values = []
    for job_id, response in zip(ids, responses):
        if not response:
            raise RuntimeError(f"no result for dependency {job_id}")
        result_id, payload = response[0]
        result = Result.restore(
            job_id,
            result_id.decode(),
            payload,
            connection=job.connection,
            serializer=job.serializer,
        )
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"dependency {job_id} did not succeed")
        values.append(result.return_value)
    return values


def fanin_parent(n: int) -> int:
    values = _dependency_results(get_current_job())
    if len(values) != n:
        raise AssertionError(f"fan-in received {len(values)} values, expected {n}")
    if sorted(int(v) for v in values) != list(range(n)):
        raise AssertionError("fan-in received the wrong values")
    return len(values)


def chain_first() -> int:
    return 1


def chain_next(is_root: bool = False, expected: int | None = None) -> int:
    value = get_current_job().dependency.return_value() + 1
    if is_root and value != expected:
        raise AssertionError(f"chain root computed {value}, expected {expected}")
    return value


def stream_child(n: int) -> list[str]:
    return [STREAM_ITEM.format(i) for i in range(n)]


def stream_parent(n: int) -> int:
    values = get_current_job().dependency.return_value()
    if len(values) != n:
        raise AssertionError(f"stream parent counted {len(values)} values, expected {n}")
    return len(values)


def noop() -> int:
    return 1
