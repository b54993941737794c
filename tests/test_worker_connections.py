"""Issue 18: a worker's Redis connections stay bounded whatever trees it runs.

Before, every consumer waiting on its channel held a connection of its own (XREAD BLOCK) and
the task threads' pool grew with the threads that ever ran at once: two workers ended rounds of
deep, wide and streaming trees with ~150 connections each. Now consumers wait in one shared
read (plankton/engine/shared_read.py) and task threads share a bounded pool
(PLANKTON_WORKER_CONNECTIONS), so a worker holds at most that pool + a few, and the count does
not grow from round to round or with the depth of a tree.

Real parts: a real redis-server, two worker processes and a scheduler; connections counted
with CLIENT LIST by the name every worker connection carries (``connection.client_name``),
threads read from /proc.
"""

from __future__ import annotations

import collections
from pathlib import Path

from tests.reliability import helpers as h

WORKERS = ("wc-a", "wc-b")
POOL = 6
#: The pool, the shared read, RQ's dequeue connection and a spare (a reconnect in flight).
BOUND = POOL + 3


def _connections(r) -> dict[str, int]:
    """Connections by worker: named by ``connection.client_name``, or by RQ (which names the
    connection it registers the worker on after the worker)."""
    by_name: collections.Counter[str] = collections.Counter()
    for c in r.client_list():
        name = c.get("name", "").removeprefix("plankton-worker:")
        if name in WORKERS:
            by_name[name] += 1
    return dict(by_name)


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def test_connections_per_worker_do_not_grow_with_depth_width_or_rounds(r, cluster, client, capsys):
    cluster.env_extra["PLANKTON_WORKER_CONNECTIONS"] = str(POOL)
    workers = [cluster.worker(name) for name in WORKERS]
    cluster.scheduler()
    rounds = []
    for i in range(3):
        for dag, params, want in (
            ("chain", {"depth": 100}, 100),
            ("fanin", {"n": 300}, 300),
            ("stream3", {"n": 2000, "leaves": 3}, 6000),
        ):
            run = client.wait(client.submit(dag, params), timeout=120)
            assert run["status"] == "succeeded", run.get("error")
            assert run["result"] == want
        rounds.append(_connections(r))
    threads = {w.args[-1]: _threads(h.inner_pid(w)) for w in workers}
    with capsys.disabled():
        print(f"\nconnections per worker after each round: {rounds}; threads {threads}")
    for counts in rounds:
        assert set(counts) == set(WORKERS), counts
        assert all(n <= BOUND for n in counts.values()), counts
