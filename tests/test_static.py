"""The static checks CI runs, as tests: ``ruff check`` on the whole tree, ``mypy --strict`` on
the library (``plankton/``) and mypy's defaults on the two process programs.

They run through pytest so that the README's test command and ``.ci/run`` include them; the
settings live in ``pyproject.toml`` (``[tool.ruff]``, ``[tool.mypy]``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: Directories ruff checks (everything with Python in it).
LINTED = ("plankton", "scheduler", "workers", "tests", "benchmarks", "examples")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_finds_nothing():
    done = _run("ruff", "check", *LINTED)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [("--strict", "plankton"), ("scheduler", "workers")],
    ids=["strict-plankton", "default-processes"],
)
def test_mypy_finds_nothing(args):
    done = _run("mypy", *args)
    assert done.returncode == 0, done.stdout + done.stderr
