"""Small helpers shared by the fault tests: Redis-side reads, process checks, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import redis

import plankton as pk
from plankton import keys
from tests.servers import wait_for

IMPORTS = ["tests.dags.fault_tasks"]


def safe(fn: Callable[[], Any], default: Any = None) -> Any:
    """``fn()``, or ``default`` while Redis is down or loading (fault tests poll through it)."""
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return default


def s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


def client(url: str) -> pk.Client:
    return pk.Client(url, imports=IMPORTS)


def redis_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def task_ids(r: redis.Redis, run_id: str, name: str) -> list[str]:
    """Ids of the run's tasks whose class name is ``name``."""
    n = int(r.hget(keys.run(run_id), "n_tasks") or 0)
    return [str(i) for i in range(n) if s(r.hget(keys.task(run_id, str(i)), "name")) == name]


def task(r: redis.Redis, run_id: str, tid: str) -> dict[str, str]:
    return {
        s(k): s(v)
        for k, v in r.hgetall(keys.task(run_id, tid)).items()
        if k not in (b"params", b"result", b"children")
    }


def run_status(r: redis.Redis, run_id: str) -> str:
    return s(r.hget(keys.run(run_id), "status"))


def wait_run(
    r: redis.Redis, run_id: str, timeout: float, ended=("succeeded", "failed", "cancelled")
) -> str:
    return wait_for(
        lambda: run_status(r, run_id) in ended and run_status(r, run_id),
        timeout,
        interval=0.05,
        what=f"run {run_id} to end",
    )


def starts(r: redis.Redis, key: str) -> list[tuple[int, int, int]]:
    """(Redis ms, attempt, pid) of every recorded attempt start of a test task."""
    out = []
    for raw in r.lrange(f"pk:test:starts:{key}", 0, -1):
        ms, attempt, pid = s(raw).split(":")
        out.append((int(ms), int(attempt), int(pid)))
    return out


def stops(r: redis.Redis, key: str) -> list[tuple[int, int]]:
    out = []
    for raw in r.lrange(f"pk:test:stopped:{key}", 0, -1):
        ms, attempt = s(raw).split(":")
        out.append((int(ms), int(attempt)))
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def inner_pid(proc: subprocess.Popen, timeout: float = 15) -> int:
    """PID of the worker process a supervisor (``python -m workers``) started."""
    return wait_for(
        lambda: (children_of(proc.pid) or [0])[0],
        timeout,
        what=f"worker process under supervisor {proc.pid}",
    )


def worker_ready(r: redis.Redis, name: str, timeout: float = 20) -> int:
    """Wait until worker ``name`` registered with RQ and Plankton; returns its inner PID."""

    def ready():
        pid = r.hget(f"rq:worker:{name}", "pid")
        death = r.hexists(f"rq:worker:{name}", "death")
        beat = r.zscore(keys.WORKERS, name)
        return int(pid) if pid and not death and beat else 0

    return wait_for(ready, timeout, what=f"worker {name} to be serving")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(10)


def scan_keys(r: redis.Redis, pattern: str) -> list[bytes]:
    return list(r.scan_iter(match=pattern, count=1000))


def log_text(log_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log")))


def until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    return wait_for(pred, timeout, interval=interval, what=what)


def now() -> float:
    return time.monotonic()
