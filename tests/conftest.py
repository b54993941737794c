"""Shared fixtures: one real redis-server per test session, flushed between tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, RedisServer  # noqa: E402


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Tests never see the developer's PLANKTON_* settings."""
    for name in list(os.environ):
        if name.startswith("PLANKTON_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """URL of the session's Redis, flushed before each test."""
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    conn.close()
    return redis_server.url


@pytest.fixture
def r(redis_url):
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    server = PostgresServer(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(redis_url, tmp_path):
    """Factory for real scheduler/worker processes against the test Redis."""
    from tests.cluster import Cluster

    made = Cluster(redis_url, log_dir=tmp_path)
    yield made
    made.kill_all()


@pytest.fixture
def stack(cluster):
    """``cluster`` with its stack started: a scheduler and one worker importing
    ``tests.dags.tasks``. Other shapes: ``cluster.start(workers=2, imports=[...], env={...})``."""
    return cluster.start()


@pytest.fixture
def client(redis_url):
    import plankton as pk

    c = pk.Client(redis_url, imports=["tests.dags.tasks"])
    yield c
    c.close()
