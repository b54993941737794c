"""Task code for the console's browser tests (``--import tests.console.console_tasks``)."""

from __future__ import annotations

import datetime
import enum
import os
import time

import redis

import plankton as pk


class Sleeper(pk.Task):
    """Logs, waits ``delay`` seconds, emits its index."""

    i = pk.Param(int)
    delay = pk.Param(float, default=0.0)
    tag = pk.Param(str, default="")

    def run(self):
        self.log.info("leaf %d starts (tag %r)", self.i, self.tag)
        deadline = time.monotonic() + self.delay
        while time.monotonic() < deadline:  # short steps: a cancel stops it promptly
            time.sleep(0.05)
        self.emit(self.i)
        self.log.info("leaf %d done", self.i)


class Total(pk.Task):
    """Sums what its children emit."""

    def run(self):
        return sum(self.results())


class Broken(pk.Task):
    """Fails: the run page shows its traceback."""

    def run(self):
        raise ValueError("the input file has no header row")


@pk.dag(schedule="0 3 * * *", timezone="Europe/Paris", catchup=False, max_active_runs=20)
def console_demo(n: int = 3, delay: float = 0.0, tag: str = ""):
    """n sleeping leaves under one total."""
    return Total().add_children(*(Sleeper(i=i, delay=delay, tag=tag) for i in range(n)))


@pk.dag(max_active_runs=20)
def console_broken():
    """A total over a leaf that fails."""
    return Total().add_children(Broken(), Sleeper(i=0))


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


@pk.dag(max_active_runs=20)
def console_typed(
    color: Color = Color.RED,
    sizes: list[int] = [1, 2],
    note: str | None = None,
    when: datetime.date = datetime.date(2024, 1, 31),
):
    """Params of several types, for the trigger form."""
    return Total().add_children(*(Sleeper(i=s, tag=f"{color.name} {note} {when}") for s in sizes))


class Parked(Sleeper):
    """On a queue no test worker serves: its tasks stay queued (a big tree to look at)."""

    queue = "nobody"


class Flaky(pk.Task):
    """Fails until the Redis key ``console:flag`` is set, then emits 10."""

    def run(self):
        conn = redis.Redis.from_url(os.environ["PLANKTON_REDIS_URL"])
        try:
            if not conn.exists("console:flag"):
                # the resume test expects both Sleepers reused: fail only once they have
                # run (tasks 0 and 1), and a little after, for a FINISH another worker defers
                siblings = [pk.keys.task(self.run_id, t) for t in ("0", "1")]
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not all(
                    conn.hget(k, "state") in (b"running", b"succeeded") for k in siblings
                ):
                    time.sleep(0.01)
                time.sleep(0.3)
                raise RuntimeError("the upstream file is not there yet")
        finally:
            conn.close()
        self.emit(10)


@pk.dag(max_active_runs=20)
def console_flaky():
    """Two leaves and a leaf that fails until a flag is set."""
    return Total().add_children(Sleeper(i=1), Sleeper(i=2), Flaky())
