"""Real scheduler and worker processes for integration tests, cleaned up afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Short timing knobs so fault tests finish in seconds (see settings.py for meanings).
FAST = {
    "PLANKTON_LEASE_MS": "3000",
    "PLANKTON_HEARTBEAT": "0.5",
    "PLANKTON_REAPER_INTERVAL": "0.3",
    "PLANKTON_RETRY_BASE": "0.05",
    "PLANKTON_RETRY_CAP": "1",
    "PLANKTON_LEADER_LEASE_MS": "1500",
    "PLANKTON_KILL_GRACE": "1",
}


@dataclass
class Cluster:
    """Starts processes with the test's Redis URL and kills them all at teardown."""

    url: str
    imports: list[str] = field(default_factory=lambda: ["tests.dags.tasks"])
    env_extra: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")}
        env.update(FAST)
        env.update(self.env_extra)
        env.update(extra)
        env["PLANKTON_REDIS_URL"] = self.url
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def _start(self, args: list[str], name: str, **extra: str) -> subprocess.Popen:
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            out = open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=self.env(**extra),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def _imports(self) -> list[str]:
        return [a for m in self.imports for a in ("--import", m)]

    def worker(self, name: str | None = None, *args: str, **extra: str) -> subprocess.Popen:
        name = name or f"w{len(self.procs)}"
        return self._start(
            ["-m", "workers", *self._imports(), "--name", name, *args], name, **extra
        )

    def scheduler(self, name: str | None = None, **extra: str) -> subprocess.Popen:
        name = name or f"s{len(self.procs)}"
        return self._start(["-m", "scheduler", *self._imports(), "--name", name], name, **extra)

    def start(
        self,
        workers: int | Iterable[str] = 1,
        *,
        imports: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Cluster:
        """The usual stack: one scheduler, then the workers (a count of default-named ones, or
        their names). ``imports`` and ``env`` are set first and stay, for the processes started
        later and for :meth:`cli`. Returns the cluster."""
        if imports is not None:
            self.imports = list(imports)
        self.env_extra.update(env or {})
        self.scheduler()
        for name in [None] * workers if isinstance(workers, int) else list(workers):
            self.worker(name)
        return self

    def cli(self, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "plankton.cli", *args],
            env=self.env(**extra),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kill_all(self) -> None:
        kill_groups(self.procs)


def kill_groups(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each process's group (it leads one: start_new_session), then reap them."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
