"""Shared pieces of the benchmark suite: a private redis-server, the raw Redis op rate,
machine facts, process bookkeeping and the small statistics every workload reports.

Everything here is standard library plus ``redis`` (already a Plankton dependency), so the
Plankton benchmarks and the peers (RQ, Celery, Dask, Luigi) share one method of measuring.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Sequence

REDIS_BENCHMARK_TESTS = "set,get,lpush,rpop"


# --------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A free TCP port on loopback (bound and released; good enough on a quiet host)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[float, bytes]:
    """GET ``url``: (seconds, body), for benchmarks that time an HTTP route."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return time.perf_counter() - started, body


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_process(
    args: Sequence[str],
    *,
    log_path: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``args`` as the leader of a new process group (session), so that it and every
    child it forks can be stopped together with :func:`stop_process`."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log_path:
            out.close()


def stop_process(
    proc: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Stop ``proc`` and its whole process group: ``sig`` first, SIGKILL after ``timeout``.

    The group is the one :func:`start_process` created (pgid == pid), so this never touches
    processes that it did not start."""
    if proc is None:
        return
    pgid = proc.pid
    if proc.poll() is None:
        _signal_group(pgid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children of its group linger: kill what is left.
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """True if any process of process group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --------------------------------------------------------------------------------------
# redis-server


class RedisServer:
    """A private redis-server on a free loopback port, in a temp dir, with no persistence.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Stopped by PID."""

    def __init__(self, port: int = 0, extra: Sequence[str] = ()):
        self.port = port
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.directory: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.directory = tempfile.mkdtemp(prefix="plankton-bench-redis-")
        if not self.port:
            self.port = free_port()
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            self.directory,
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            *self.extra,
        ]
        self.proc = start_process(args, log_path=os.path.join(self.directory, "redis.log"))
        try:
            wait_for(self.ping, timeout, what=f"redis-server on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_redis(**kwargs) -> RedisServer:
    return RedisServer(**kwargs).start()


def redis_server_version() -> str | None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v=(\S+)", out.stdout)
    return m.group(1) if m else out.stdout.strip() or None


_RB_LINE = re.compile(r"([A-Za-z_\- ]+?):\s*([\d.]+)\s+requests per second")


def parse_redis_benchmark(output: str) -> dict[str, float]:
    """Parse ``redis-benchmark -q`` output into ``{"SET": ops/s, ...}``.

    Its progress lines are separated by carriage returns; only the final lines carry
    "requests per second"."""
    rates: dict[str, float] = {}
    for chunk in re.split(r"[\r\n]+", output):
        m = _RB_LINE.search(chunk)
        if m:
            rates[m.group(1).strip().upper()] = float(m.group(2))
    return rates


def redis_benchmark(
    port: int,
    host: str = "127.0.0.1",
    requests: int = 200_000,
    tests: str = REDIS_BENCHMARK_TESTS,
    pipeline: int = 16,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """The raw Redis op rate on this machine: ``redis-benchmark -q -n 200000 -t ...``
    without and with ``-P 16``. Returns ops/s per command and their mean."""
    binary = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
    if not os.path.exists(binary):
        return {"skipped": "redis-benchmark not found (apt-get install -y redis-tools)"}
    result: dict[str, Any] = {
        "command": f"redis-benchmark -q -n {requests} -t {tests} [-P {pipeline}]"
    }
    for label, extra in (("unpipelined", []), (f"pipelined_P{pipeline}", ["-P", str(pipeline)])):
        args = [binary, "-h", host, "-p", str(port), "-q", "-n", str(requests), "-t", tests, *extra]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        rates = parse_redis_benchmark(proc.stdout)
        if not rates:
            raise RuntimeError(
                f"could not parse redis-benchmark output: {proc.stdout!r} {proc.stderr!r}"
            )
        result[label] = {"ops_per_s": rates, "mean_ops_per_s": statistics.fmean(rates.values())}
    return result


def used_memory_peak(conn) -> int:
    """Redis ``used_memory_peak`` in bytes: the server's high-water mark since it started
    (``CONFIG RESETSTAT`` does not reset it on Redis 7.0), so read it against
    :func:`used_memory` taken before a run, or use a fresh server per measurement."""
    return int(conn.info("memory")["used_memory_peak"])


def used_memory(conn) -> int:
    return int(conn.info("memory")["used_memory"])


def reset_stats(conn) -> None:
    """``CONFIG RESETSTAT``: zeroes ``INFO commandstats`` and the other counters."""
    conn.config_resetstat()


def count_commands(conn) -> int:
    """Total commands Redis has executed (sum of ``calls`` in ``INFO commandstats``),
    not counting the ``INFO`` calls themselves. Take the difference of two readings."""
    stats = conn.info("commandstats")
    total = 0
    for name, fields in stats.items():
        if name in ("cmdstat_info",):
            continue
        if isinstance(fields, dict):
            total += int(fields.get("calls", 0))
    return total


def command_breakdown(conn) -> dict[str, int]:
    """``{command: calls}`` from ``INFO commandstats`` (for looking at where calls go)."""
    stats = conn.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(f.get("calls", 0))
        for name, f in stats.items()
        if isinstance(f, dict)
    }


class CommandCounter:
    """Redis commands executed between ``__enter__`` and ``__exit__`` (``.count``)."""

    def __init__(self, conn):
        self.conn = conn
        self.count = 0
        self._start = 0

    def __enter__(self) -> "CommandCounter":
        self._start = count_commands(self.conn)
        return self

    def __exit__(self, *exc) -> None:
        self.count = count_commands(self.conn) - self._start


# --------------------------------------------------------------------------------------
# the machine


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_kb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_total_kb": _mem_total_kb(),
        "redis_server": redis_server_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def peak_rss_kb(pid: int | None = None) -> int | None:
    """A process's own peak resident set (``VmHWM`` in ``/proc/PID/status``), in kB.

    Not ``ru_maxrss``: a child inherits its parent's ``ru_maxrss`` across fork/exec."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------
# timing and statistics


class Timer:
    """``with Timer() as t: ...``; then ``t.elapsed`` (seconds, ``perf_counter``).

    ``t.elapsed`` also reads the running time while inside the block."""

    def __init__(self):
        self.start: float | None = None
        self.end: float | None = None

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.end = None
        return self

    def __exit__(self, *exc) -> None:
        self.end = time.perf_counter()

    @property
    def elapsed(self) -> float:
        if self.start is None:
            return 0.0
        return (self.end if self.end is not None else time.perf_counter()) - self.start


def summarise(values: Iterable[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of the values (which must not be empty)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarise() needs at least one value")
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0–100) by linear interpolation between closest ranks."""
    vals = sorted(values)
    if not vals:
        raise ValueError("percentile() needs at least one value")
    if len(vals) == 1:
        return vals[0]
    k = (len(vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def figure(values: Iterable[float], unit: str, checked: bool, **extra: Any) -> dict[str, Any]:
    """One reported figure: ``{"median", "min", "max", "unit", "checked", "runs", ...extra}``
    (``runs``: every repeat in order, so a slow first run shows as such)."""
    values = list(values)
    out: dict[str, Any] = summarise(values)
    out["runs"] = [round(float(v), 6) for v in values]
    out["unit"] = unit
    out["checked"] = bool(checked)
    out.update(extra)
    return out


def workload_list(parser: Any, text: str, known: Sequence[str]) -> list[str]:
    """``--workloads a,b`` as a list; an unknown name is a usage error naming the known ones."""
    workloads = [w.strip() for w in text.split(",") if w.strip()]
    unknown = set(workloads) - set(known)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return workloads


def write_json(report: Any, out: str | os.PathLike) -> Path:
    """Write a benchmark's report as JSON (creating its folder) and say where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path


def skipped(reason: str) -> dict[str, Any]:
    return {"skipped": reason, "checked": False}


def redis_connection(url: str, **kwargs):
    """A redis-py client for ``url`` with no socket timeout (redis-py 8 defaults to 5 s,
    which breaks any blocking wait longer than that)."""
    import redis

    kwargs.setdefault("socket_timeout", None)
    return redis.Redis.from_url(url, **kwargs)
