"""``python -m benchmarks.console_open``: how fast the console's run page opens and follows a
run of 10,000 leaves, in headless chromium, against ``plankton api`` (a uvicorn process).

Per repeat: submit a fresh run of N leaves under one parent with no worker (every task
queued), open its page and time until the tree is drawn (``open``: navigation start to the
grouped row in the DOM); then cancel the run and time until the page shows ``cancelled``
without a reload (``reflect``), and until it shows all N+1 tasks cancelled (``settled``: the
scheduler settles them just after, a delta of every task). Beside them, measured in the
same run: the floor the page cannot beat, one full read of the run in-process
(``reading.changes(conn, run, None)``), and the cost of one idle delta poll over HTTP
(``GET /runs/{id}?since=CURSOR`` with nothing changed).

Prints a table and writes ``benchmarks/results/console-open-latest.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RedisServer,
    free_port,
    http_get,
    machine_info,
    start_process,
    stop_process,
    summarise,
    wait_for,
    write_json,
)
from plankton.views import reading

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def _repeat(driver: Any, client: Any, base: str, n: int) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    from benchmarks import bench_tasks as bt

    run_id = client.submit(bt.BCount().add_children(*(bt.BLeaf(i=i) for i in range(n))))
    started = time.perf_counter()
    reading.changes(client.conn, run_id, None)
    floor = time.perf_counter() - started
    started = time.perf_counter()
    driver.get(f"{base}/ui/runs/{run_id}")
    wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#tree-body tr.group"),
        30,
        0.005,
        "the grouped tree",
    )
    opened = time.perf_counter() - started
    cursor = reading.changes(client.conn, run_id, None)["cursor"]
    idle = [http_get(f"{base}/runs/{run_id}?since={cursor}")[0] for _ in range(10)]
    started = time.perf_counter()
    client.cancel(run_id)
    wait_for(
        lambda: driver.find_element(By.ID, "run-status").text == "cancelled",
        30,
        0.005,
        "the page to show the cancel",
    )
    reflect = time.perf_counter() - started
    wait_for(
        lambda: f"cancelled {n + 1}" in driver.find_element(By.ID, "run-counts").text,
        30,
        0.005,
        "every task shown cancelled",
    )
    settled = time.perf_counter() - started
    counts = driver.find_element(By.ID, "run-counts").text
    navigations = driver.execute_script("return performance.getEntriesByType('navigation').length")
    checked = f"cancelled {n + 1}" in counts and navigations == 1
    if not checked:
        print(f"check failed: counts {counts!r}, navigations {navigations}")
    return {
        "open_s": opened,
        "reflect_s": reflect,
        "settled_s": settled,
        "floor_read_s": floor,
        "idle_poll_ms": sorted(idle)[len(idle) // 2] * 1000,
        "checked": checked,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_open")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "console-open-latest.json"))
    args = parser.parse_args(argv)
    import plankton as pk

    rows = []
    with RedisServer() as server:
        port = free_port()
        env = dict(
            os.environ,
            PLANKTON_REDIS_URL=server.url,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        env.pop("PLANKTON_API_TOKEN", None)
        api = start_process(
            [
                sys.executable,
                "-m",
                "plankton.api",
                "--import",
                "benchmarks.bench_tasks",
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
        )
        # the scheduler settles a cancelled run's tasks (no worker: every task stays queued)
        scheduler = start_process(
            [sys.executable, "-m", "scheduler", "--import", "benchmarks.bench_tasks"],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        driver = None
        client = pk.Client(server.url, imports=["benchmarks.bench_tasks"])
        try:
            wait_for(lambda: _ok(base), timeout=30, what="the API")
            driver = _browser()
            _repeat(driver, client, base, 10)  # warm the browser, the routes, the scripts
            rows = [_repeat(driver, client, base, args.tasks) for _ in range(args.repeats)]
        finally:
            if driver is not None:
                driver.quit()
            client.close()
            stop_process(api)
            stop_process(scheduler)
    report = {
        "machine": machine_info(),
        "tasks": args.tasks,
        "figures": {
            k: summarise(r[k] for r in rows)
            for k in ("open_s", "reflect_s", "settled_s", "floor_read_s", "idle_poll_ms")
        },
        "checked": all(r["checked"] for r in rows),
    }
    print(
        f"run page of {args.tasks:,} leaves, {args.repeats} repeats (checked: {report['checked']})"
    )
    print(f"{'figure':<34} {'median':>8} {'min':>8} {'max':>8}")
    labels = {
        "open_s": "open: tree drawn (s)",
        "reflect_s": "cancel shown, no reload (s)",
        "settled_s": "every task shown cancelled (s)",
        "floor_read_s": "floor: one full read in-process (s)",
        "idle_poll_ms": "idle delta poll over HTTP (ms)",
    }
    for key, label in labels.items():
        f = report["figures"][key]
        print(f"{label:<34} {f['median']:>8.3f} {f['min']:>8.3f} {f['max']:>8.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    return 0 if report["checked"] else 1


def _ok(base: str) -> bool:
    try:
        http_get(base + "/healthz")
        return True
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
