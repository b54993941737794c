"""The built distribution (issue 23): ``pip install plankton-etl``, then ``import plankton``.

``plankton`` on the package index is an unrelated project, so the distribution is named
``plankton-etl``; the import package and the console script stay ``plankton``.

Slow (45-65 s, of which 15-30 s is pip fetching the dependencies from the package index, hence
the module's timeout): like ``python -m build`` it builds the sdist from a copy of the
source tree and the wheel from that sdist, with the build requirements pyproject.toml names;
it installs the wheel into a fresh virtualenv and, from a directory outside the repository
(so the source tree cannot be imported), runs the README's demo and serves the web console.
Everything it starts is stopped, and what it built and installed is deleted, before it ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.servers import free_port, wait_for

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
DIST = "plankton-etl"
PACKAGES = ("plankton", "scheduler", "workers")
#: What a checkout holds besides its source (never copied into the build).
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.py[cod]",
    "*.egg-info",
    ".plankton",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    "build",
    "dist",
)
#: Calls one PEP 517 hook of the backend pyproject.toml names, with only the standard library
#: and the build requirements importable (``-S``: not this interpreter's site-packages).
HOOK = (
    "import importlib, sys; sys.path.insert(0, sys.argv[1]); "
    "hook = getattr(importlib.import_module(sys.argv[2]), sys.argv[3]); "
    "print('BUILT', hook(sys.argv[4]))"
)


def _clean_env() -> dict[str, str]:
    """No PLANKTON_* setting and nothing that would put other code on the path."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_") and k not in drop}


def _run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _hook(build_env: Path, backend: str, name: str, source: Path, out: Path) -> Path:
    args = [sys.executable, "-S", "-c", HOOK, str(build_env), backend, name, str(out)]
    built = _run(args, cwd=source).strip().splitlines()[-1]
    assert built.startswith("BUILT "), built
    return out / built.split(" ", 1)[1]


def _package_files(source: Path) -> set[str]:
    """Every file of the three packages (sources, templates, static assets, py.typed)."""
    return {
        p.relative_to(source).as_posix()
        for pkg in PACKAGES
        for p in (source / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _ours(work: Path) -> list[int]:
    """Processes whose command line names the work directory (the venv's Python runs the
    scheduler, workers and API; the private redis-server's --dir is under it too)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(work).encode() in cmd:
                found.append(int(entry.name))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(source snapshot, sdist, wheel, work dir): the sdist from a copy of the checkout, the
    wheel from the unpacked sdist."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    system = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]
    build_env, out = work / "build-env", work / "dist"
    out.mkdir()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(build_env)]
    _run([*pip, *system["requires"]], cwd=work)
    backend = system["build-backend"]
    sdist = _hook(build_env, backend, "build_sdist", source, out)
    unpacked = work / "unpacked"
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(unpacked, **safe)
    (top,) = unpacked.iterdir()
    wheel = _hook(build_env, backend, "build_wheel", top, out)
    yield source, sdist, wheel, work
    _kill(_ours(work))
    shutil.rmtree(work, ignore_errors=True)


def test_the_wheel_and_the_sdist_hold_every_file_of_the_packages(built):
    source, sdist, wheel, _ = built
    expected = _package_files(source)
    assert {"plankton/py.typed", "plankton/api/console/templates/run.html"} <= expected
    assert "plankton/api/console/static/run.js" in expected

    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(f"{info}/METADATA").decode()
        scripts = whl.read(f"{info}/entry_points.txt").decode()
    assert f"\nName: {DIST}\n" in metadata
    assert "plankton = plankton.cli:entry" in scripts
    assert expected <= names, sorted(expected - names)
    others = {n for n in names if not n.startswith(f"{info}/")} - expected
    assert others == set(), "the wheel holds files outside the three packages"

    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert top.startswith("plankton_etl-")
    assert expected <= held, sorted(expected - held)
    assert {"pyproject.toml", "README.md", "tests/conftest.py", "examples/simple.py"} <= held


def test_the_installed_wheel_runs_the_demo_and_serves_the_console(built):
    source, _, wheel, work = built
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    python, plankton = venv / "bin" / "python", venv / "bin" / "plankton"
    # this interpreter's pip installs into the fresh venv (the venv needs no pip of its own)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], work)

    demo = work / "demo"  # outside the repository: only the installed package is importable
    demo.mkdir()
    assert ROOT not in demo.parents
    shutil.copy(source / "examples" / "simple.py", demo / "simple.py")
    where = _run([str(python), "-c", "import plankton; print(plankton.__file__)"], demo)
    assert Path(where.strip()).is_relative_to(venv), where

    port, log = free_port(), work / "up.log"
    with open(log, "wb") as sink:
        served = subprocess.Popen(
            [str(plankton), "up", "--import", "simple", "--workers", "1", "--port", str(port)]
            + ["--dir", str(work / "served")],
            cwd=demo,
            env=_clean_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # the README's first command, as a user runs it once the wheel is installed
        args = ["up", "--import", "simple", "--run", "simple", "--dir", str(work / "ran")]
        out = _run([str(plankton), *args, "--port", "0"], demo)
        assert "simple succeeded" in out and '"hihihihihihihihihihi"' in out, out[-3000:]

        def get(path: str) -> bytes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return bytes(r.read())
            except OSError:
                return b""

        dags = wait_for(lambda: get("/ui/dags") or served.poll() is not None, 60, what="up")
        assert served.poll() is None, log.read_text()[-3000:]
        assert b'id="trigger-simple"' in dags, log.read_text()[-3000:]
        assert b'href="/ui/static/console.css"' in get("/")
        static = source / "plankton" / "api" / "console" / "static"
        for asset in sorted(static.iterdir()):
            assert get(f"/ui/static/{asset.name}") == asset.read_bytes(), asset.name
    finally:
        served.send_signal(signal.SIGINT)
        try:
            code = served.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)
            code = served.wait()
        left = _ours(work)
        _kill(left)
    assert code == 0, log.read_text()[-3000:]
    assert left == [], "processes left behind"
