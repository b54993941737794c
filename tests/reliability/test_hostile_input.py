"""Issue 5 point 8 (DESIGN guarantees 8 and 9): hostile input.

RELIABILITY §7 #19 (jobs forged straight into Redis, by hand: HSET rq:job:X + RPUSH, no RQ
API: naming os.system in msgpack and JSON, a pickle payload, an instance, a callback, unknown
msgpack extension types, a malformed hash, a dangling id; and a forged failure callback in
RQ's started-job registry, which RQ's own maintenance would import and call): nothing runs,
the jobs are recorded failed, the worker process keeps serving. #16: a task family the
worker was not told to import is refused. No pickle anywhere: every job and value in Redis
loads with msgpack. #15/#18: oversized emits and results are a SerializationError naming
the size (configurable limit, default 64 MiB); an oversized or zlib-bomb job is refused
without the worker inflating it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import zlib

import msgpack

from plankton import keys
from plankton.engine.transport import ENTRY
from tests.dags import fault_tasks as ft
from tests.reliability import helpers as h

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def forge(
    r,
    jid: str,
    payload: bytes | None,
    queue: str = "default",
    compress: bool = True,
    push: bool = True,
    **fields,
) -> None:
    """Write an RQ job by hand, as an attacker with write access to Redis would."""
    now = dt.datetime.now(dt.timezone.utc).strftime(STAMP)
    if payload is not None:
        mapping = {
            "data": zlib.compress(payload) if compress else payload,
            "origin": queue,
            "status": "queued",
            "created_at": now,
            "enqueued_at": now,
            "description": "forged",
            "timeout": 180,
        }
        mapping.update(fields)
        r.hset(f"rq:job:{jid}", mapping=mapping)
    if push:
        r.sadd("rq:queues", f"rq:queue:{queue}")
        r.rpush(f"rq:queue:{queue}", jid)


class Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _recorded_failed(r, jid: str) -> bool:
    """Failed in its job hash (what RQ's own tools show) and in RQ's failed registry."""
    return (
        r.hget(f"rq:job:{jid}", "status") == b"failed"
        and r.zscore("rq:failed:default", jid) is not None
    )


def test_forged_jobs_are_refused_recorded_failed_and_the_worker_keeps_serving(
    fc, redis_url, r, tmp_path
):
    marker = tmp_path / "marker"
    fc.start(["hw"], env={"PK_TEST_MARKER": str(tmp_path / "callback-marker")})
    pid = h.worker_ready(r, "hw")
    touch = f"touch {marker}"
    cases = {
        "msgpack-system": msgpack.packb(["os.system", None, [touch], {}]),
        "json-system": json.dumps(["os.system", None, [touch], {}]).encode(),
        "pickle": pickle.dumps(Evil(touch)),
        "pickle-entry": pickle.dumps([ENTRY, None, ["r1", [["0", 1]]], {}]),
        "instance": msgpack.packb([ENTRY, {"cmd": touch}, ["r1", [["0", 1]]], {}]),
        "kwargs": msgpack.packb([ENTRY, None, ["r1", [["0", 1]]], {"cmd": touch}]),
        "bad-args": msgpack.packb([ENTRY, None, [touch], {}]),
        "ext-type": msgpack.packb([ENTRY, None, [msgpack.ExtType(42, b"x"), []], {}]),
        "not-zlib": b"\x00not zlib, not msgpack",
        "builtin-eval": msgpack.packb(["eval", None, [f"__import__('os').system('{touch}')"], {}]),
    }
    for name, payload in cases.items():
        forge(r, f"forged-{name}", payload, compress=name != "not-zlib")
    forge(
        r,
        "forged-callback",
        msgpack.packb([ENTRY, None, ["r1", [["0", 1]]], {}]),
        failure_callback_name="tests.dags.fault_tasks.evil_callback",
        success_callback_name="tests.dags.fault_tasks.evil_callback",
    )
    forge(
        r,
        "forged-bad-date",
        msgpack.packb(["os.system", None, [touch], {}]),
        created_at="garbage",
        enqueued_at="garbage",
    )
    forge(r, "forged-no-hash", None)  # a dangling id
    ids = [f"forged-{n}" for n in cases] + ["forged-callback", "forged-bad-date"]
    h.until(
        lambda: all(_recorded_failed(r, j) for j in ids),
        15,
        "every forged job to be recorded failed",
    )
    h.until(lambda: r.llen("rq:queue:default") == 0, 5, "the queue to be drained")
    assert not marker.exists(), "a forged job ran"
    assert not (tmp_path / "callback-marker").exists(), "a forged callback ran"
    # the dangling id (no hash) is the scheduler's to drop, after a lease
    h.until(
        lambda: r.llen("rq:queue:default:intermediate") == 0,
        10,
        "the intermediate list to be clean",
    )
    exc = h.s(r.hget("rq:job:forged-msgpack-system", "exc_info"))
    assert "os.system" in exc and "refused" in exc
    # the same worker process goes on serving
    c = h.client(redis_url)
    run = c.wait(c.submit(ft.Bag().add_children(ft.Drip(tag="ok", n=3))), timeout=20)
    assert run["status"] == "succeeded"
    assert h.worker_ready(r, "hw") == pid and h.pid_alive(pid)


def test_forged_callback_in_rqs_started_registry_is_never_imported(fc, redis_url, r, tmp_path):
    """RQ's maintenance (run by every worker at start, then every 10 minutes) fails the
    expired entries of StartedJobRegistry and, on the way, imports and calls the failure
    callback the job hash names. A Plankton worker must not."""
    marker = tmp_path / "callback-marker"
    fc.env_extra = {"PK_TEST_MARKER": str(marker)}
    forge(
        r,
        "forged-wip",
        msgpack.packb([ENTRY, None, ["r1", [["0", 1]]], {}]),
        push=False,
        status="started",
        failure_callback_name="tests.dags.fault_tasks.evil_callback",
    )
    r.zadd("rq:wip:default", {"forged-wip:exec1": 1})
    r.sadd("rq:queues", "rq:queue:default")
    fc.worker("mw")
    h.worker_ready(r, "mw")
    h.until(lambda: r.zcard("rq:wip:default") == 0, 10, "maintenance to clear the entry")
    assert not marker.exists(), "RQ maintenance imported and ran a forged callback"


def test_task_family_not_imported_by_the_worker_is_refused(fc, redis_url, r):
    fc.start(["narrow"], imports=["tests.dags.tasks"])  # not tests.dags.fault_tasks
    pid = h.worker_ready(r, "narrow")
    c = h.client(redis_url)
    run = c.wait(c.submit(ft.Warm(key="never", seconds=0)), timeout=20)
    assert run["status"] == "failed"
    err = run["tasks"][0]["error"]
    assert "tests.dags.fault_tasks:Warm" in err and "narrow" in err and "tests.dags.tasks" in err
    assert r.get("pk:test:exec:never") is None
    from tests.dags import tasks as tt

    run = c.wait(c.submit(tt.Count().add_children(tt.Leaf(i=1))), timeout=20)
    assert run["status"] == "succeeded" and h.worker_ready(r, "narrow") == pid


def _is_pickle(blob: bytes) -> bool:
    for data in (blob, _inflate(blob)):
        if data and data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return True
    return False


def _inflate(blob: bytes) -> bytes:
    try:
        return zlib.decompress(blob)
    except zlib.error:
        return b""


def _msgpack_fields(values: dict, fields: tuple[bytes, ...]) -> None:
    for field in fields:
        if values.get(field):
            msgpack.unpackb(values[field], raw=False, timestamp=3)


def _hash_blobs(r, name: str) -> list:
    values = r.hgetall(name)
    if name.startswith("rq:job:") and b"data" in values:
        msgpack.unpackb(zlib.decompress(values[b"data"]), raw=False)
    if ":t:" in name:
        _msgpack_fields(values, (b"params", b"result", b"children"))
    if name.endswith(":run"):
        _msgpack_fields(values, (b"params", b"result"))
    return list(values.values())


def _stream_blobs(r, name: str) -> list:
    blobs = []
    for _, fields in r.xrange(name):
        blobs += list(fields.values())
        _msgpack_fields(fields, (b"v",))
    return blobs


def _list_blobs(r, name: str) -> list:
    blobs = r.lrange(name, 0, -1)
    if name.endswith(":logs"):
        for b in blobs:
            msgpack.unpackb(b, raw=False)
    return blobs


def _blobs_decoded(r, key) -> list:
    """Every stored value of ``key``, after decoding with msgpack those Plankton writes as
    msgpack (jobs, task and run fields, channel values, logs): a failure raises."""
    name = h.s(key)
    readers = {
        "hash": _hash_blobs,
        "list": _list_blobs,
        "stream": _stream_blobs,
        "string": lambda r, n: [r.get(n)],
        "zset": lambda r, n: [m for m, _ in r.zrange(n, 0, -1, withscores=True)],
        "set": lambda r, n: list(r.smembers(n)),
    }
    read = readers.get(h.s(r.type(key)))
    return read(r, name) if read else []


def test_no_pickle_anywhere_every_job_and_value_loads_with_msgpack(fc, redis_url, r):
    c = h.client(redis_url)
    ok = c.submit("drip_tree", params={"leaves": 4, "n": 20, "pause": 0})
    bad = c.submit(ft.Bag().add_children(ft.AlwaysFails(key="np")))
    # before any worker runs: the queued jobs, as written, are msgpack
    jobs = h.scan_keys(r, "rq:job:*")
    assert jobs
    for key in jobs:
        func, instance, args, kwargs = msgpack.unpackb(
            zlib.decompress(r.hget(key, "data")), raw=False
        )
        assert func == ENTRY and instance is None and kwargs == {}
    fc.start(["pw"])
    for rid in (ok, bad):
        c.wait(rid, timeout=30)
    checked = 0
    for key in h.scan_keys(r, "*"):
        for b in _blobs_decoded(r, key):
            assert not _is_pickle(b), f"pickle in {h.s(key)}"
            checked += 1
    assert checked > 50


def test_oversized_emit_and_result_are_serialization_errors(fc, redis_url, r):
    limit = 1024 * 1024
    fc.start(["big"], env={"PLANKTON_MAX_VALUE_BYTES": str(limit)})
    c = h.client(redis_url)
    for mode in ("emit", "return"):
        run = c.wait(c.submit(ft.Bag().add_children(ft.Big(size=2 * limit, mode=mode))), timeout=30)
        assert run["status"] == "failed"
        big = next(t for t in run["tasks"] if t["name"] == "Big")
        assert big["error"].startswith("SerializationError"), big["error"][:300]
        assert f"over the limit of {limit}" in big["error"] and "Big" in big["error"]
        assert big["attempts"] == 1 and big["state"] == "failed"
    run = c.wait(c.submit(ft.Bag().add_children(ft.Big(size=limit // 2, mode="emit"))), timeout=30)
    assert run["status"] == "succeeded"


def test_default_limit_is_64_mib(fc, redis_url, r):
    fc.start(["big64"])
    c = h.client(redis_url)
    run = c.wait(c.submit(ft.Bag().add_children(ft.Big(size=64 * 1024 * 1024 + 1))), timeout=60)
    big = next(t for t in run["tasks"] if t["name"] == "Big")
    assert run["status"] == "failed" and big["error"].startswith("SerializationError")
    assert f"over the limit of {64 * 1024 * 1024}" in big["error"]


def _forge_bomb(r, jid: str, size: int) -> None:
    forge(r, jid, msgpack.packb([ENTRY, None, ["r1", [["0", 1]], "x" * size], {}]))


def _hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_oversized_and_zlib_bomb_jobs_are_refused_without_inflating_them(fc, redis_url, r):
    fc.start(["bomb"])
    pid = h.worker_ready(r, "bomb")
    c = h.client(redis_url)
    assert c.wait(c.submit(ft.Drip(tag="warm-up", n=1)), timeout=20)["status"] == "succeeded"
    before = _hwm_kb(pid)
    _forge_bomb(r, "forged-bomb", 200 * 1024 * 1024)  # 200 MB inflated, ~200 KB stored
    h.until(lambda: _recorded_failed(r, "forged-bomb"), 20, "the bomb to be refused")
    grew_mb = (_hwm_kb(pid) - before) / 1024
    assert grew_mb < 50, f"the worker inflated the job: peak memory grew {grew_mb:.0f} MB"
    # a 50 MB job written by hand: refused (reading the hash costs ~2 x its size, once)
    forge(r, "forged-50mb", os.urandom(50 * 1024 * 1024), compress=False)
    h.until(lambda: _recorded_failed(r, "forged-50mb"), 20, "the 50 MB job to be refused")
    assert c.wait(c.submit(ft.Drip(tag="after", n=1)), timeout=20)["status"] == "succeeded"
    assert h.worker_ready(r, "bomb") == pid


def test_malformed_runs_in_redis_do_not_stop_the_scheduler(fc, redis_url, r):
    """Run records written by hand (or half lost) must not crash the scheduler: it skips
    them and keeps scheduling the healthy runs."""
    sched = fc.scheduler("hs")
    fc.worker("hw2")
    h.worker_ready(r, "hw2")
    # a live run whose lease names a task with no hash; one with a garbage lease member
    # and retry entry; one whose run hash is not even a hash
    r.hset("plankton:{bogus1}:run", mapping={"status": "running", "n_tasks": "3"})
    r.zadd("plankton:{bogus1}:leases", {"7": 1})
    r.hset("plankton:{bogus2}:run", mapping={"status": "running", "n_tasks": "x"})
    r.zadd("plankton:{bogus2}:leases", {"\xff\x00": 1})
    r.zadd("plankton:{bogus2}:retry", {"0": 1})
    r.hset("plankton:{bogus2}:t:0", mapping={"state": "retrying", "attempt": "zz"})
    r.set("plankton:{bogus3}:run", "not a hash")
    r.sadd(keys.ACTIVE, "bogus1", "bogus2", "bogus3")
    h.until(lambda: h.s(r.get(keys.LEADER)).startswith("hs-"), 10, "the scheduler to lead")
    c = h.client(redis_url)
    for i in range(2):  # retries need the scheduler's reaper to promote them
        run = c.wait(c.submit(ft.Bag().add_children(ft.FailsTwice(key=f"mal{i}"))), timeout=20)
        assert run["status"] == "succeeded" and run["result"] == [3]
    assert sched.poll() is None, "the scheduler died"
