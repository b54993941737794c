"""Task code for the observability tests (metrics, webhooks, JSON logs)."""

from __future__ import annotations

import json
import os

import redis

import plankton as pk
from tests.tasks import Boom, Collect, Leaf


def _conn() -> redis.Redis:
    return redis.Redis.from_url(os.environ["PLANKTON_REDIS_URL"])


class FailOnce(pk.Task):
    """Fails its first attempt, succeeds on the retry."""

    retries = 2
    key = pk.Param(str)

    def run(self):
        if _conn().incr(self.key) == 1:
            raise RuntimeError("first attempt fails")
        self.log.info("second attempt of %s", self.key)
        self.emit(self.key)
        return self.key


class Talk(pk.Task):
    """Writes a line with task.log (the JSON logs test looks for its run and task ids)."""

    def run(self):
        self.log.info("talking from a task")
        return 1


def on_ok(payload: dict) -> None:
    """on_success callable: runs in the scheduler; records what it was given."""
    _conn().rpush("obs:hook", json.dumps(payload))


@pk.dag(on_success=on_ok)
def obs_ok(n: int = 3):
    return Collect().add_children(*(Leaf(i=i) for i in range(n)))


@pk.dag
def obs_fail(dsn: str = "postgresql://etl:hunter2@db/x"):
    return Collect().add_children(Leaf(i=1), Boom())


@pk.dag
def obs_retry(key: str = "obs:once"):
    return Collect().add_children(FailOnce(key=key))


@pk.dag
def obs_talk():
    return Talk()
