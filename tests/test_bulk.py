"""Bulk writes (plankton/engine/bulk.py) and the big-run path of ``writing.write_run`` that
uses them, against a real Redis."""

from __future__ import annotations

import pytest
import redis

import plankton as pk
from plankton import keys
from plankton.authoring.task import place
from plankton.engine.bulk import BulkWriter
from plankton.engine.connection import connect
from plankton.runs import writing
from plankton.views import reading


class Leaf(pk.Task):
    i = pk.Param(int)

    def run(self):  # never run: only written
        raise NotImplementedError


class Root(pk.Task):
    def run(self):
        raise NotImplementedError


def _in_use(conn: redis.Redis) -> int:
    return len(conn.connection_pool._in_use_connections)


def test_commands_go_out_in_chunks_and_every_reply_is_read(redis_url):
    conn = connect(redis_url)
    with BulkWriter(conn, chunk=100) as bulk:
        for i in range(1050):
            bulk.add("HSET", f"bulk:{i}", "i", i, "half", i // 2)
        assert _in_use(conn) == 1
    assert _in_use(conn) == 0
    assert conn.hgetall("bulk:1049") == {b"i": b"1049", b"half": b"524"}
    assert len(conn.keys("bulk:*")) == 1050
    assert conn.ping()  # nothing was left unread on the pool's connection


def test_an_error_reply_raises_and_its_connection_is_not_reused(redis_url):
    conn = connect(redis_url)
    conn.set("bulk:string", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        with BulkWriter(conn, chunk=10) as bulk:
            for i in range(25):
                bulk.add("HSET", "bulk:string" if i == 12 else f"bulk:{i}", "f", i)
    assert _in_use(conn) == 0
    assert conn.get("bulk:string") == b"x" and conn.ping()


def _write(conn: redis.Redis, rid: str, chunk: int) -> None:
    root = Root().add_children(*(Leaf(i=i) for i in range(2500)))
    writing.write_run(
        conn,
        rid,
        root,
        place(root, None, None),
        dag="bulk",
        params={},
        since=None,
        to=None,
        chunk=chunk,
    )


def test_a_big_run_is_written_as_the_one_transaction_of_a_small_one_writes_it(redis_url):
    conn = connect(redis_url)
    _write(conn, "rsmall", chunk=10_000)  # 2,501 tasks in one MULTI/EXEC
    _write(conn, "rbig", chunk=300)  # tasks through BulkWriter, then the run
    for tid in ("0", "1", "1234", "2500"):
        small = conn.hgetall(keys.task("rsmall", tid))
        big = conn.hgetall(keys.task("rbig", tid))
        assert small and big == small
    assert conn.zrange(keys.ready("rbig"), 0, -1, withscores=True) == conn.zrange(
        keys.ready("rsmall"), 0, -1, withscores=True
    )
    assert conn.zcard(keys.ready("rbig")) == 2500
    assert conn.hget(keys.run("rbig"), "n_tasks") == b"2501"
    assert reading.read_run(conn, "rbig")["status"] == "queued"
