"""plankton.engine.resp: the hiredis command packer sends exactly what redis-py's own would."""

from __future__ import annotations

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

import plankton as pk
from plankton.engine import resp
from plankton.engine.connection import connect
from plankton.states import TaskState

_REFERENCE = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode).pack

CASES = [
    ("SET", "k", "v"),
    (
        "HSET",
        "plankton:{r}:t:1",
        "state",
        TaskState.READY,
        "n",
        0,
        "big",
        2**63 - 1,
        "neg",
        -7,
        "f",
        0.1,
        "g",
        1e20,
        "h",
        float("inf"),
        "u",
        "é漢",
        "b",
        b"\x00\xff",
    ),
    ("CONFIG GET", "maxclients"),
    (b"CLIENT LIST",),
    ("SET", "s", pk.Secret("env:PG_DSN")),
    ("SET", "m", memoryview(b"view")),
    ("SET", "a", bytearray(b"arr")),
    ("SET", "large", "x" * 100_000),
]


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_packs_the_same_bytes_as_redis_py(args):
    packer = resp.packer()
    assert packer is not None, "hiredis is a dependency"
    assert b"".join(packer.pack(*args)) == b"".join(bytes(p) for p in _REFERENCE(*args))


def test_bool_and_unknown_types_are_refused_as_redis_py_does():
    packer = resp.packer()
    assert packer is not None
    with pytest.raises(redis.DataError, match="bool"):
        packer.pack("SET", "k", True)
    with pytest.raises(redis.DataError, match="dict"):
        packer.pack("SET", "k", {"a": 1})


def test_connect_uses_it_on_a_real_redis(redis_url):
    conn = connect(redis_url)
    assert isinstance(conn.connection_pool.get_connection()._command_packer, resp.FastPacker)
    pipe = conn.pipeline(transaction=True)
    pipe.hset(
        "plankton:test:resp",
        mapping={"state": TaskState.SUCCEEDED, "n": 3, "f": 2.5, "u": "é", "b": b"\x00"},
    )
    pipe.hgetall("plankton:test:resp")
    got = pipe.execute()[1]
    assert got == {
        b"state": b"succeeded",
        b"n": b"3",
        b"f": b"2.5",
        b"u": "é".encode(),
        b"b": b"\x00",
    }
    assert conn.config_get("maxclients")  # a command name with a space
