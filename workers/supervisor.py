"""``plankton worker``: a small supervisor around one worker process.

The worker process runs tasks on threads; when a task will not stop (timeout, cancel) or the
worker loses Redis for good, it exits with EXIT_RESTART and this supervisor starts a fresh
one. Signals are forwarded: one SIGTERM/SIGINT is a warm stop, a second a cold one. If the
supervisor itself is killed, the worker notices (its parent changed) and exits.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

from plankton.errors import ConfigError
from plankton.operations import logsetup
from workers.executor import EXIT_RESTART

log = logging.getLogger("plankton.worker")


def supervise(argv: list[str], stopped_early: list[int] | None = None) -> int:
    """Run and restart the worker process until a signal stops it; the exit code."""
    cmd = [sys.executable, "-m", "workers.main", *argv]
    try:
        logsetup.configure("worker")
    except ConfigError as exc:
        print(f"plankton worker: {exc}", file=sys.stderr)
        return 2
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if stopped_early:
        return 0  # asked to stop before a worker process started: nothing to stop
    restarts = 0
    while not stopping:
        # Same process group: killing the group (a host or container going away) takes the
        # worker with it. A Ctrl-C thus reaches the worker twice, directly and forwarded; the
        # worker counts signals less than a second apart as one.
        child = subprocess.Popen(cmd)
        if stopping:  # the signal came while the child was being started
            child.send_signal(signal.SIGTERM)
        code = _wait(child)
        if stopping or code == 0:
            return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code
        if code == 2:
            return 2
        restarts += 1
        log.warning("worker process exited with %s; restarting (restart %d)", code, restarts)
        time.sleep(min(0.2 * restarts, 2.0) if code != EXIT_RESTART else 0.05)
    return 0


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except InterruptedError:  # pragma: no cover - PEP 475 makes this rare
            continue
