"""The benchmark workloads of ``../shared/BENCHMARKS.md`` written for Plankton's peers.

Each peer module (``rq_peer``, ``celery_peer``, ``dask_peer``, ``luigi_peer``) exposes::

    run(workload: str, redis_url: str, repeats: int = 3) -> dict[str, figure]
    run_many(workloads, redis_url, repeats=3) -> dict[str, figure]   # one set of workers

where a figure is ``{"median", "min", "max", "unit", "checked", ...extras}`` (or
``{"skipped": reason, "checked": False}``). The workload ``latency`` yields two figures,
``latency-p50`` and ``latency-p99``; every other workload yields one figure of its own name.

Each peer starts its own 2 workers as real OS processes and stops them (process groups,
try/finally), so nothing is left behind even when a run fails.

``run_peers(names, workloads, redis_url, repeats)`` runs several peers one after the other
and ``format_table(results)`` prints them side by side; ``python -m benchmarks.peers`` is the
command line (and ``python -m benchmarks --peers`` calls the same functions).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

WORKLOADS = ("fanin-1000", "chain-100", "stream-100k", "wide-10k", "latency")

FANIN_N = 1000
CHAIN_N = 100
STREAM_N = 100_000
WIDE_N = 10_000
LATENCY_N = 200

# tasks each workload runs (for Redis commands per task)
TASKS = {
    "fanin-1000": FANIN_N + 1,
    "chain-100": CHAIN_N,
    "stream-100k": 2,
    "wide-10k": WIDE_N + 1,
    "latency": LATENCY_N,
}

UNITS = {
    "fanin-1000": "tasks/s",
    "chain-100": "ms/edge",
    "stream-100k": "values/s",
    "wide-10k": "s",
    "latency-p50": "ms",
    "latency-p99": "ms",
}

# How long one run of a workload may take before it is abandoned (seconds).
RUN_TIMEOUT = 600

STREAM_ITEM = "value-{:014d}"  # 20 bytes, like the Plankton workload


def figure_from_wall(workload: str, wall: float) -> float:
    """The reported figure of one run from its wall time in seconds."""
    if workload == "fanin-1000":
        return (FANIN_N + 1) / wall
    if workload == "chain-100":
        return wall * 1000.0 / CHAIN_N
    if workload == "stream-100k":
        return STREAM_N / wall
    if workload == "wide-10k":
        return wall
    raise ValueError(f"no wall-time figure for {workload!r}")


class Peer:
    """A peer as listed by ``python -m benchmarks.peers``."""

    def __init__(
        self,
        name: str,
        module: str,
        requires: tuple[str, ...],
        pip: str,
        label: str,
        kwargs: dict[str, Any] | None = None,
    ):
        self.name = name
        self.module = module
        self.requires = requires
        self.pip = pip
        self.label = label
        self.kwargs = kwargs or {}

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def runner(self) -> Callable[..., dict[str, Any]]:
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return mod.run_many

    def run_many(self, workloads, redis_url: str, repeats: int = 3) -> dict[str, Any]:
        return self.runner()(workloads, redis_url, repeats, **self.kwargs)


PEERS: dict[str, Peer] = {
    "rq": Peer("rq", "rq_peer", ("rq",), "pip install 'rq>=2.12,<3'", "RQ SimpleWorker x2"),
    "celery": Peer("celery", "celery_peer", ("celery",), "pip install celery", "Celery solo x2"),
    "dask": Peer(
        "dask",
        "dask_peer",
        ("distributed",),
        "pip install 'dask[distributed]'",
        "Dask futures",
        {"queuing": True},
    ),
    "dask-noqueue": Peer(
        "dask-noqueue",
        "dask_peer",
        ("distributed",),
        "pip install 'dask[distributed]'",
        "Dask, queuing off",
        {"queuing": False},
    ),
    "luigi": Peer("luigi", "luigi_peer", ("luigi",), "pip install luigi", "Luigi local x2"),
    "saq": Peer("saq", "saq_peer", ("saq",), "pip install saq", "SAQ x2 (conc. 10)"),
    "streaq": Peer(
        "streaq", "streaq_peer", ("streaq",), "pip install streaq", "streaq x2 (conc. 16)"
    ),
}

# ``--only dask`` means both Dask variants
ALIASES = {"dask": ("dask", "dask-noqueue")}


class WorkloadPeer:
    """What the peers share: the workload dispatch and the run loop. A subclass defines
    ``conn``, ``start_workers()``, ``stop()``, ``fanin(n)``, ``chain()``, ``stream()`` and
    ``latency()``; each returns (figure values, checked)."""

    conn: Any = None

    def once(self, workload: str) -> Callable[[int], Any]:
        table: dict[str, Callable[[int], Any]] = {
            "fanin-1000": lambda r: self.fanin(FANIN_N),
            "chain-100": lambda r: self.chain(),
            "stream-100k": lambda r: self.stream(),
            "wide-10k": lambda r: self.fanin(WIDE_N),
            "latency": lambda r: self.latency(),
        }
        if workload not in table:
            raise ValueError(f"unknown workload {workload!r}")
        return table[workload]

    def run_many(self, workloads: Iterable[str], repeats: int = 3) -> dict[str, Any]:
        """Start the peer's workers, run each workload ``repeats`` times, stop them."""
        results: dict[str, Any] = {}
        try:
            self.start_workers()
            for workload in workloads:
                results.update(collect(workload, self.once(workload), repeats, conn=self.conn))
        finally:
            self.stop()
        return results

    # the per-peer methods
    def start_workers(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def fanin(self, n: int) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def chain(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def stream(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def latency(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def collect(
    workload: str, once: Callable[[int], tuple[Any, bool]], repeats: int, conn=None
) -> dict[str, Any]:
    """Run ``once(repeat_index)`` ``repeats`` times and build the workload's figures.

    ``once`` returns ``(wall_seconds, checked)``, or for ``latency`` ``(list_of_ms, checked)``;
    it raises if the run failed. With a Redis ``conn`` each run also records Redis commands per
    task (``INFO commandstats`` delta), ``used_memory`` before it, and ``used_memory_peak`` after
    it when the run raised it (Redis never lowers its high-water mark, so a peak that an earlier
    workload set is not this workload's: reported as None)."""
    from benchmarks import harness

    names = ["latency-p50", "latency-p99"] if workload == "latency" else [workload]
    values: dict[str, list[float]] = {n: [] for n in names}
    walls: list[float] = []
    per_task: list[float] = []
    peaks: list[int] = []
    starts: list[int] = []
    checked = True
    for r in range(repeats):
        if conn is not None:
            harness.reset_stats(conn)
            starts.append(harness.used_memory(conn))
            peak_before = harness.used_memory_peak(conn)
            before = harness.count_commands(conn)
        try:
            out, ok = once(r)
        except Exception as exc:  # a failed run: report it, keep going with other workloads
            error = f"{type(exc).__name__}: {exc}"
            return {n: {"error": error, "checked": False, "runs": values[n]} for n in names}
        if conn is not None:
            per_task.append((harness.count_commands(conn) - before) / TASKS[workload])
            peak_after = harness.used_memory_peak(conn)
            if peak_after > peak_before:  # the high-water mark was set by this run
                peaks.append(peak_after)
        checked = checked and bool(ok)
        if workload == "latency":
            values["latency-p50"].append(harness.percentile(out, 50))
            values["latency-p99"].append(harness.percentile(out, 99))
            walls.append(sum(out) / 1000.0)
        else:
            values[workload].append(figure_from_wall(workload, out))
            walls.append(out)
    result = {}
    for n in names:
        extra: dict[str, Any] = {
            "runs": [round(v, 6) for v in values[n]],
            "wall_s": [round(w, 6) for w in walls],
        }
        if per_task:
            extra["redis_commands_per_task"] = round(statistics.median(per_task), 2)
        if starts:
            extra["redis_used_memory_start_mb"] = round(min(starts) / 2**20, 2)
            # None: no run of this workload raised the server's high-water mark
            extra["redis_used_memory_peak_mb"] = round(max(peaks) / 2**20, 2) if peaks else None
        result[n] = harness.figure(values[n], UNITS[n], checked, **extra)
    return result


def run_in_subprocess(
    module: str,
    workloads,
    redis_url: str,
    repeats: int,
    extra_args: list[str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``python -m benchmarks.peers.<module> --child ...`` in its own process group and
    return the figures it writes as JSON. Used by the peers whose workers are children of the
    driving process (Dask's LocalCluster, Luigi's forked task processes): the whole group is
    killed at the end, so nothing is left behind even if the child hangs or crashes."""
    from benchmarks import harness

    workloads = list(workloads)
    repo_root = Path(__file__).resolve().parents[2]
    if timeout is None:
        timeout = RUN_TIMEOUT * max(1, len(workloads)) * max(1, repeats) + 120
    tmp = tempfile.mkdtemp(prefix=f"plankton-bench-{module}-")
    out_path = os.path.join(tmp, "result.json")
    log_path = os.path.join(tmp, "child.log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    args = [
        sys.executable,
        "-m",
        f"{__name__}.{module}",
        "--child",
        "--out",
        out_path,
        "--redis-url",
        redis_url,
        "--repeats",
        str(repeats),
        "--workloads",
        ",".join(workloads),
        *(extra_args or []),
    ]
    proc = harness.start_process(args, log_path=log_path, env=env, cwd=str(repo_root))
    try:
        try:
            proc.wait(timeout)
        except Exception:
            raise TimeoutError(f"{module} did not finish within {timeout:.0f}s")
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = Path(log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{module} exited with code {proc.returncode}:\n{tail}")
        with open(out_path) as fh:
            return json.load(fh)
    finally:
        harness.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def child_main(
    run_inprocess: Callable[..., dict[str, Any]],
    argv=None,
    extra: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """The ``--child`` entry point of a peer module run by :func:`run_in_subprocess`."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--no-queuing", action="store_true")
    args = parser.parse_args(argv)
    kwargs = extra(args) if extra else {}
    workloads = [w for w in args.workloads.split(",") if w]
    result = run_inprocess(workloads, args.redis_url, args.repeats, **kwargs)
    with open(args.out, "w") as fh:
        json.dump(result, fh)


# ------------------------------------------------------------------ several peers at once


def resolve_names(only: Iterable[str] | None) -> list[str]:
    """Peer names from ``--only`` (``dask`` means both Dask variants), in table order."""
    if not only:
        return list(PEERS)
    wanted: list[str] = []
    for name in only:
        name = name.strip()
        if not name:
            continue
        expanded = ALIASES.get(name, (name,))
        for n in expanded:
            if n not in PEERS:
                raise ValueError(f"unknown peer {n!r}; known: {', '.join(PEERS)}")
            if n not in wanted:
                wanted.append(n)
    return [n for n in PEERS if n in wanted]


def pip_command(peer: Peer) -> str:
    pip = Path(sys.executable).with_name("pip")
    return peer.pip.replace("pip install", f"{pip if pip.exists() else 'pip'} install", 1)


def run_peers(
    names: Iterable[str],
    workloads: Iterable[str],
    redis_url,
    repeats: int = 3,
    flush=None,
    log=None,
) -> dict[str, Any]:
    """Run each named peer on ``workloads``. Returns ``{peer: {"label", "figures"}}`` or
    ``{peer: {"label", "skipped"}}`` (not installed) or ``{peer: {"label", "error"}}``.

    ``redis_url`` is a URL, or a context-manager factory ``redis_url()`` yielding a URL per
    peer (``python -m benchmarks.peers`` gives each peer a fresh private redis-server, so
    commandstats and ``used_memory_peak`` are the peer's own). ``flush`` (optional) is called
    before each peer, e.g. to FLUSHALL a shared Redis."""
    workloads = list(workloads)
    out: dict[str, Any] = {}
    for name in names:
        peer = PEERS[name]
        entry: dict[str, Any] = {"label": peer.label}
        missing = peer.missing()
        if missing:
            entry["skipped"] = (
                f"not installed ({', '.join(missing)}): {pip_command(peer)} "
                f"(or pip install -e '.[peers]')"
            )
            out[name] = entry
            if log:
                log(f"{name}: skipped, {entry['skipped']}")
            continue
        if flush:
            flush()
        if log:
            log(f"{name}: running {', '.join(workloads)} x{repeats} ...")
        try:
            if callable(redis_url):
                with redis_url() as url:
                    entry["figures"] = peer.run_many(workloads, url, repeats)
            else:
                entry["figures"] = peer.run_many(workloads, redis_url, repeats)
        except Exception as exc:  # one peer failing must not lose the others' figures
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out[name] = entry
        if log:
            log(f"{name}: done" + (f" with error: {entry['error']}" if "error" in entry else ""))
    return out


ROWS = [
    ("fanin-1000", "fanin-1000 (tasks/s)"),
    ("chain-100", "chain-100 (ms/edge)"),
    ("stream-100k", "stream-100k (values/s)"),
    ("wide-10k", "wide-10k (s)"),
    ("latency-p50", "latency p50 (ms)"),
    ("latency-p99", "latency p99 (ms)"),
]


def _num(v: float) -> str:
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_cell(fig: dict[str, Any] | None) -> str:
    if not fig:
        return "-"
    if "skipped" in fig:
        return "skipped"
    if "error" in fig:
        return "ERROR"
    cell = f"{_num(fig['median'])} ({_num(fig['min'])}-{_num(fig['max'])})"
    return cell if fig.get("checked") else cell + " UNCHECKED"


def _columns(results, extra_columns):
    columns: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for label, figs in (extra_columns or {}).items():
        columns.append((label, figs, None))
    for name, entry in results.items():
        status = None
        if "skipped" in entry:
            status = "not installed"
        elif "error" in entry:
            status = "error"
        columns.append((entry.get("label", name), entry.get("figures"), status))
    return columns


def _command_rows(columns) -> list[list[str]]:
    rows = []
    for key in ("fanin-1000", "chain-100", "wide-10k", "latency-p50"):
        cells = []
        for _, figs, _ in columns:
            per = ((figs or {}).get(key) or {}).get("redis_commands_per_task")
            cells.append(f"{per:.1f}" if per is not None else "-")
        if any(c != "-" for c in cells):
            name = "latency" if key == "latency-p50" else key
            rows.append([f"Redis cmds/task ({name})"] + cells)
    cells = []
    for _, figs, _ in columns:
        peak = ((figs or {}).get("wide-10k") or {}).get("redis_used_memory_peak_mb")
        cells.append(f"{peak:.0f}" if peak is not None else "-")
    if any(c != "-" for c in cells):
        rows.append(["Redis used_memory_peak MB (wide-10k)"] + cells)
    return rows


def _notes(results, columns) -> list[str]:
    notes = []
    for label, figs, _ in columns:
        for key, fig in (figs or {}).items():
            if "skipped" in fig:
                notes.append(f"{label}, {key}: {fig['skipped']}")
            elif "error" in fig:
                notes.append(f"{label}, {key}: {fig['error'].splitlines()[0][:300]}")
    for name, entry in results.items():
        if "skipped" in entry:
            notes.append(f"{name}: {entry['skipped']}")
        elif "error" in entry:
            notes.append(f"{name}: {entry['error'].splitlines()[0][:300]}")
    return list(dict.fromkeys(notes))


def format_table(
    results: dict[str, Any], extra_columns: dict[str, dict[str, Any]] | None = None
) -> str:
    """A plain-text table: one row per figure, one column per peer (``median (min-max)``),
    then Redis commands per task where measured, then notes (skips, errors).

    ``results`` is what :func:`run_peers` returns; ``extra_columns`` (``{label: figures}``)
    lets a caller put e.g. Plankton's own figures first."""
    columns = _columns(results, extra_columns)
    rows = [["workload"] + [c[0] for c in columns]]
    present = set()
    for _, figs, _ in columns:
        present.update((figs or {}).keys())
    if not present:  # nothing ran: still show which figures were asked for
        present = {key for key, _ in ROWS}
    for key, label in ROWS:
        if key in present:
            rows.append(
                [label]
                + [status or format_cell((figs or {}).get(key)) for _, figs, status in columns]
            )
    rows += _command_rows(columns)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = _notes(results, columns)
    if notes:
        lines.append("")
        lines.extend(f"  note: {n}" for n in notes)
    return "\n".join(lines)
