"""Tasks for tests/test_resume.py and tests/test_complete.py: every execution of run() and
complete() is counted in Redis (hash ``test:ran``, field ``Family:key``), outside the task."""

from __future__ import annotations

import time

import plankton as pk
from tests.dags.tasks import env_redis

RAN = "test:ran"


def _bump(task: pk.Task, key: str) -> None:
    env_redis().hincrby(RAN, f"{type(task).__name__}:{key}", 1)


class Src(pk.Task):
    """A leaf: emits ``key-0`` .. ``key-(n-1)``; fails while ``flag`` is set and its key
    missing; with ``gate``, waits (up to 60 s) for that key before emitting."""

    key = pk.Param(str)
    n = pk.Param(int, default=3)
    flag = pk.Param(str, default="")
    gate = pk.Param(str, default="")

    def run(self):
        _bump(self, self.key)
        conn = env_redis()
        if self.flag and not conn.exists(self.flag):
            raise RuntimeError(f"flag {self.flag} not set")
        deadline = time.monotonic() + 60
        while self.gate and not conn.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(self.n):
            self.emit(f"{self.key}-{i}")
        return self.key


class Mid(pk.Task):
    """Passes its children's values on, tagged with its key, in the order it reads them."""

    key = pk.Param(str)

    def complete(self):
        conn = env_redis()
        conn.hincrby(RAN, f"Mid.complete:{self.key}", 1)
        if conn.exists(f"raise:{self.key}"):
            raise ValueError(f"cannot tell whether {self.key} is done")
        return bool(conn.exists(f"done:{self.key}"))

    def run(self):
        _bump(self, self.key)
        n = 0
        for value in self.results():
            self.emit(f"{self.key}/{value}")
            n += 1
        return n


class Top(pk.Task):
    """The root: returns every value in arrival order."""

    key = pk.Param(str, default="top")

    def complete(self):
        env_redis().hincrby(RAN, "Top.complete", 1)
        return bool(env_redis().exists("done:top"))

    def run(self):
        _bump(self, self.key)
        return list(self.results())


def tree(fail_flag: str = "flag", gate: str = "", b1_n: int = 3) -> Top:
    """Top -> (A -> a1, a2), (B -> b1, b2); b2 fails until ``fail_flag`` is set."""
    return Top().add_children(
        Mid(key="A").add_children(Src(key="a1"), Src(key="a2", n=2)),
        Mid(key="B").add_children(
            Src(key="b1", n=b1_n), Src(key="b2", n=4, flag=fail_flag, gate=gate)
        ),
    )


@pk.dag()
def three_level(fail_flag: str = "flag"):
    return tree(fail_flag)
