"""GET /metrics: counters and histograms move by exactly what happened; gauges follow the
live state. Real scheduler and worker processes; the scrape is parsed with the Prometheus
client's own parser."""

from __future__ import annotations

import datetime as _dt
import os
import signal
import warnings
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plankton import keys
from plankton.api.app import create_app
from plankton.authoring.dag import Dag
from plankton.authoring.task import Task
from plankton.engine import counters
from plankton.operations import metrics
from tests.servers import wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette asks for httpx2; httpx works (test_api.py)
    from fastapi.testclient import TestClient

IMPORTS = ["tests.dags.tasks", "tests.dags.obs_tasks"]


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@pytest.fixture
def scrape(redis_url):
    with TestClient(create_app(redis_url, IMPORTS)) as http:

        def get() -> dict[tuple[str, frozenset], float]:
            response = http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            return _samples(response.text)

        yield get


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _delta(before, after) -> dict[tuple[str, frozenset], float]:
    return {
        k: after.get(k, 0.0) - before.get(k, 0.0)
        for k in set(before) | set(after)
        if after.get(k, 0.0) != before.get(k, 0.0)
    }


def _ms(iso: str) -> int:
    return round(_dt.datetime.fromisoformat(iso).timestamp() * 1000)


def test_counters_and_histograms_move_by_exactly_what_happened(cluster, client, r, scrape):
    cluster.imports = IMPORTS
    client.registry.add_module("tests.dags.obs_tasks")
    cluster.scheduler("s1")
    cluster.worker("w1")
    warm = client.submit("obs_ok", params={"n": 1})  # families exist before the baseline
    client.wait(warm, timeout=60)

    def settled(*runs: str) -> bool:  # ended, settled, and their hooks called
        return not any(r.sismember(keys.ACTIVE, i) for i in runs) and r.zcard(keys.OUTBOX) == 0

    wait_for(lambda: settled(warm), timeout=30, what="warm-up settled")
    before = scrape()

    ids = [client.submit("obs_ok"), client.submit("obs_fail"), client.submit("obs_retry")]
    shown = [client.wait(i, timeout=60) for i in ids]
    assert [s["status"] for s in shown] == ["succeeded", "failed", "succeeded"]
    wait_for(lambda: settled(*ids), timeout=30, what="runs settled")
    shown = [client.status(i) for i in ids]
    after = scrape()

    expected: Counter = Counter()
    sums: Counter = Counter()
    for run in shown:
        dag, status = run["dag"], run["status"]
        expected[("plankton_runs_started_total", frozenset({"dag": dag}.items()))] += 1
        expected[
            ("plankton_runs_ended_total", frozenset({"dag": dag, "status": status}.items()))
        ] += 1
        expected[
            (
                "plankton_run_duration_seconds_count",
                frozenset({"dag": dag, "status": status}.items()),
            )
        ] += 1
        took = (_ms(run["ended_at"]) - _ms(run["started_at"])) / 1000
        for le in [metrics._fmt_le(b) for b in counters.RUN_BUCKETS if took <= b] + ["+Inf"]:
            expected[
                (
                    "plankton_run_duration_seconds_bucket",
                    frozenset({"dag": dag, "status": status, "le": le}.items()),
                )
            ] += 1
        for task in run["tasks"]:
            labels = {"family": task["family"], "state": task["state"]}
            expected[("plankton_tasks_ended_total", frozenset(labels.items()))] += 1
            ran = task["state"] == "succeeded" or (
                task["state"] == "failed" and not task["error"].startswith("UpstreamFailed")
            )
            if not ran:
                continue
            took = (_ms(task["ended_at"]) - _ms(task["started_at"])) / 1000
            sums[frozenset(labels.items())] += took
            expected[("plankton_task_duration_seconds_count", frozenset(labels.items()))] += 1
            for bound in counters.TASK_BUCKETS:
                if took <= bound:
                    le = {**labels, "le": metrics._fmt_le(bound)}
                    expected[("plankton_task_duration_seconds_bucket", frozenset(le.items()))] += 1
            expected[
                (
                    "plankton_task_duration_seconds_bucket",
                    frozenset({**labels, "le": "+Inf"}.items()),
                )
            ] += 1
    # obs_ok's on_success callable, called once
    expected[("plankton_webhook_deliveries_total", frozenset({"outcome": "sent"}.items()))] = 1
    expected[
        (
            "plankton_task_retries_total",
            frozenset({"family": "tests.dags.obs_tasks:FailOnce", "reason": "error"}.items()),
        )
    ] = 1

    delta = _delta(before, after)
    moved = {k: v for k, v in delta.items() if k[0].endswith(("_total", "_count", "_bucket"))}
    # The failed run's consumer may have been reading, or failing, when the run ended: its
    # refused READ/FAIL is counted (a timing the test cannot see from outside); nothing else.
    fenced = {dict(k[1])["op"] for k in moved if k[0] == "plankton_fenced_writes_total"}
    assert fenced <= {"read", "fail"}
    moved = {k: v for k, v in moved.items() if k[0] != "plankton_fenced_writes_total"}
    assert moved == dict(expected)
    for labels, total in sums.items():
        got = delta.get(("plankton_task_duration_seconds_sum", labels), 0.0)
        assert got == pytest.approx(total, abs=1e-6)
    assert _value(after, "plankton_runs_active", dag="obs_ok", status="running") == 0
    # a second API replica (a fresh process's app) serves the same counters
    with TestClient(create_app(client.settings.url, IMPORTS)) as replica:
        again = _samples(replica.get("/metrics").text)
    counted = [k for k in after if k[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert {k: again.get(k) for k in counted} == {k: after[k] for k in counted}


def test_queue_latency_rises_while_no_worker_runs_and_falls_when_one_starts(
    cluster, client, scrape, r
):
    cluster.scheduler("s1")
    wait_for(lambda: r.exists(keys.LEADER), timeout=30, what="a leading scheduler")
    run_id = client.submit("fanin", params={"n": 5})
    first = wait_for(
        lambda: (s := scrape()) and _value(s, "plankton_tasks_waiting", queue="default") == 5 and s,
        timeout=30,
        what="5 tasks waiting",
    )
    age = _value(first, "plankton_tasks_waiting_oldest_seconds", queue="default")
    assert _value(first, "plankton_workers_live") == 0
    assert _value(first, "plankton_scheduler_leader") == 1
    assert _value(first, "plankton_scheduler_leader_epoch") >= 1
    assert _value(first, "plankton_runs_active", dag="fanin", status="queued") == 1
    wait_for(
        lambda: (
            _value(scrape(), "plankton_tasks_waiting_oldest_seconds", queue="default") > age + 0.5
        ),
        timeout=30,
        what="latency rising",
    )

    cluster.worker("w1")
    assert client.wait(run_id, timeout=60)["status"] == "succeeded"
    last = scrape()
    assert _value(last, "plankton_tasks_waiting", queue="default") == 0
    assert _value(last, "plankton_tasks_waiting_oldest_seconds", queue="default") == 0
    assert _value(last, "plankton_workers_live") == 1


class _Nop(Task):
    def run(self):
        return None


def test_cron_lag_is_how_late_the_next_fire_time_is(r):
    dag = Dag(lambda: _Nop(), name="every5", schedule="*/5 * * * *")
    now = int(r.time()[0])
    last = now - now % 300 - 3600  # a fire time an hour ago
    r.hset(keys.cron("every5"), "last_fire", last)
    samples = _samples(metrics.scrape(metrics.registry_for(r, [dag])).decode())
    lag = _value(samples, "plankton_cron_lag_seconds", dag="every5")
    assert 3300 - 1 <= lag <= 3600 + 300  # its next fire (last + 5 min) is that overdue
    r.hset(keys.cron("every5"), "last_fire", now - now % 300)
    samples = _samples(metrics.scrape(metrics.registry_for(r, [dag])).decode())
    assert _value(samples, "plankton_cron_lag_seconds", dag="every5") == 0


def test_channel_backlog_and_a_lost_lease_show(cluster, client, r, scrape):
    cluster.imports = IMPORTS
    client.registry.add_module("tests.dags.obs_tasks")
    cluster.scheduler("s1")
    cluster.worker("w1", "--concurrency", "2")
    before = scrape()
    held = client.submit("obs_backlog", params={"flag": "obs:go", "n": 50})
    wait_for(
        lambda: (
            _value(scrape(), "plankton_channel_backlog", family="tests.dags.obs_tasks:Holder") == 50
        ),
        timeout=30,
        what="50 unread values in the held consumer's channel",
    )
    r.set("obs:go", 1)
    assert client.wait(held, timeout=60)["result"] == 50
    assert _value(scrape(), "plankton_channel_backlog", family="tests.dags.obs_tasks:Holder") == 0

    victim = cluster.worker("w2")  # the only worker on duty: w1 is killed first
    os.killpg(cluster.procs[1].pid, signal.SIGKILL)
    hung = client.submit("obs_hang", params={"flag": "obs:hang"})
    wait_for(lambda: r.get("obs:hang"), timeout=30, what="Hang started")
    os.killpg(victim.pid, signal.SIGKILL)  # worker and task gone: the lease runs out
    cluster.worker("w3")
    assert client.wait(hung, timeout=60)["result"] == 2
    delta = _delta(before, scrape())
    hang = frozenset({"family": "tests.dags.obs_tasks:Hang"}.items())
    assert delta[("plankton_lost_leases_total", hang)] == 1
    assert (
        delta[
            (
                "plankton_task_retries_total",
                frozenset({"family": "tests.dags.obs_tasks:Hang", "reason": "lost"}.items()),
            )
        ]
        == 1
    )
