"""Fixtures of the fault tests: a cluster that imports ``tests.dags.fault_tasks``, and clusters
on private redis-servers (AOF, ACL, TLS) that a test may kill."""

from __future__ import annotations

import pytest
import redis

from tests.cluster import Cluster
from tests.reliability.helpers import IMPORTS


@pytest.fixture
def fc(cluster):
    """The session Redis cluster, importing the fault-test tasks."""
    cluster.imports = list(IMPORTS)
    return cluster


@pytest.fixture
def private_cluster(tmp_path):
    """Factory: a Cluster on a given URL (own Redis), killed at teardown."""
    made: list[Cluster] = []

    def make(url: str, **env: str) -> Cluster:
        c = Cluster(url, imports=list(IMPORTS), env_extra=dict(env), log_dir=tmp_path)
        made.append(c)
        return c

    yield make
    for c in made:
        c.kill_all()


@pytest.fixture
def rconn():
    """Factory for raw Redis connections closed at teardown."""
    conns: list[redis.Redis] = []

    def make(url: str, **kw) -> redis.Redis:
        c = redis.Redis.from_url(url, **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()
