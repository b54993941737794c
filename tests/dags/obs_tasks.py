"""Task code for the observability tests (metrics, webhooks, JSON logs)."""

from __future__ import annotations

import json
import os
import time

import plankton as pk
from tests.dags.fault_tasks import wait_flag
from tests.dags.tasks import Boom, Collect, Leaf, Many, env_redis

_conn = env_redis


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


class Holder(pk.Task):
    """A consumer that reads nothing until the test sets ``flag``, then counts."""

    flag = pk.Param(str)

    def run(self):
        wait_flag(_conn(), self.flag, "the test's go-ahead", timeout=30)
        return sum(1 for _ in self.results())


class Hang(pk.Task):
    """Marks that it started (``flag``), then runs until killed."""

    flag = pk.Param(str)
    retries = 0

    def run(self):
        if self.attempt == 1:
            _conn().set(self.flag, os.getpid())
            time.sleep(60)
        return self.attempt


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


@pk.dag
def obs_backlog(flag: str = "obs:go", n: int = 50):
    return Holder(flag=flag).add_children(Many(n=n))


@pk.dag
def obs_hang(flag: str = "obs:hang"):
    return Hang(flag=flag)
