"""The static checks CI runs, as tests: ``ruff check`` (RUF100 included, so a stale ``noqa``
fails) and ``ruff format --check`` on the whole tree, and ``mypy --strict`` on the library
(``plankton/``) and the two process programs (``scheduler/``, ``workers/``).

They run through pytest so that the README's test command and ``.ci/run`` include them; the
settings live in ``pyproject.toml`` (``[tool.ruff]``, ``[tool.mypy]``).
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

#: Directories ruff lints and format-checks (everything with Python in it).
LINTED = ("plankton", "scheduler", "workers", "tests", "benchmarks", "examples")

#: Packages mypy checks with ``--strict``, in one invocation (one start-up, one import graph).
TYPED = ("plankton", "scheduler", "workers")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", *LINTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_changes_nothing() -> None:
    done = _run("ruff", "format", "--check", *LINTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_finds_nothing() -> None:
    done = _run("mypy", "--strict", *TYPED)
    assert done.returncode == 0, done.stdout + done.stderr
