"""Prometheus metrics of a Plankton deployment, read from Redis at scrape time (``GET /metrics``).

Why from Redis and not from the API process's memory: the events counted here (a task
ended, a lease was lost, a write was fenced) happen in workers and schedulers, and several
API replicas may be scraped. So the Lua transitions count them where they happen, atomically
with the transition itself, in one Redis hash (``keys.METRICS``): ``HINCRBY`` on a field
``name<US>label<US>label...`` (US = ASCII unit separator, which no DAG or family name holds).
A histogram is one field per bucket (not cumulative: one ``HINCRBY`` per observation) plus a
``_sum`` field; the collector adds the buckets up. Every replica therefore serves the same
numbers, and they survive API and scheduler restarts (and Redis restarts, with AOF on).

Gauges (queue latency, live workers, leadership, cron lag, channel backlog) are computed from
the live state at scrape time. Everything is read in three pipelined round trips whose size
depends on the number of queues, active runs and *running* tasks, never on how many task
records Redis holds (``benchmarks/metrics_scrape.py`` measures it with 100,000).

On one Redis the metrics hash and the per-queue ``waiting`` zsets are global keys written
from the per-run transition scripts. On a Redis Cluster a script may not leave its run's
slot, so each slot holding runs has its own copy of those keys, tagged with the slot's short
tag (``slots``; the run hash's ``mtag``), and the collector sums the copies: the tags in use
are listed in ``keys.METRIC_TAGS``, so a scrape reads at most one copy per slot (16,384),
however many runs and tasks there are; ~0.1 ms per copy, so affordable only when runs live
in a few home slots (docs/scaling.md).

Labels are low-cardinality on purpose: DAG, task family, queue, state, status, reason; never
a run or task id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from plankton import codec, keys
from plankton.authoring.dag import Dag
from plankton.engine import liveness, slots
from plankton.engine.counters import COUNTERS, HISTOGRAMS, SEP

#: The classic text format (0.0.4), which Prometheus 2 and 3 both read.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _clock(conn: Any, pipe: Any) -> Any:
    """Queue Redis TIME in ``pipe``; a function putting its reply first in the replies. A
    Redis Cluster pipeline refuses TIME (no key): it is then asked of one node first."""
    if not slots.is_cluster(conn):
        pipe.time()
        return lambda replies: replies
    now = conn.time()
    return lambda replies: [now, *replies]


def _slot_copies(
    pipe: Any, raw: dict[bytes, Any], tags: list[str], replies: list[Any]
) -> tuple[dict[bytes, Any], list[str]]:
    """Redis Cluster: add each slot's metrics hash (``replies``: hash, queue set per tag) to
    ``raw`` field by field, and queue in ``pipe`` the reads of each slot's waiting zsets;
    returns the total and the queue name of each zset read (in order)."""
    tagged: list[str] = []
    if tags:
        raw = {k: float(v) for k, v in raw.items()}
    for i, tag in enumerate(tags):
        for k, v in replies[2 * i].items():
            raw[k] = raw.get(k, 0.0) + float(v)
        for q in sorted(codec.text(q) for q in replies[2 * i + 1]):
            tagged.append(q)
            pipe.zcard(keys.waiting(q, tag))
            pipe.zrange(keys.waiting(q, tag), 0, 0, withscores=True)
    return raw, tagged


def _waiting(heads: list[tuple[str, Any, Any]], now_ms: int) -> dict[str, tuple[int, float]]:
    """queue -> (tasks waiting, age of the oldest, s), from (queue, ZCARD, head) rows; a
    queue that has a zset in several slots (Cluster) is summed."""
    waiting: dict[str, tuple[int, float]] = {}
    for q, n, head in heads:
        oldest = (now_ms - head[0][1]) / 1000 if head else 0.0
        was = waiting.get(q, (0, 0.0))
        waiting[q] = (was[0] + int(n), max(was[1], oldest, 0.0))
    return waiting


def _backlog(rows: list[Any]) -> dict[str, int]:
    """family -> unread channel values, from the HMGETs of running tasks."""
    backlog: dict[str, int] = {}
    for fam, n_children, produced, read in rows:
        if fam is None or int(n_children or 0) == 0:
            continue
        unread = int(produced or 0) - int(read or 0)
        name = codec.text(fam)
        backlog[name] = backlog.get(name, 0) + max(0, unread)
    return backlog


def _fmt_le(bound: float) -> str:
    return repr(float(bound)) if bound != int(bound) else f"{float(bound):.1f}"


class PlanktonCollector(Collector):
    """Reads every Plankton metric from Redis on each ``collect()`` (each scrape)."""

    def __init__(self, conn: redis.Redis, dags: Iterable[Dag] = (), heartbeat: float = 5.0) -> None:
        self.conn = conn
        self.scheduled = [d for d in dags if d.schedule is not None]
        self.heartbeat = heartbeat

    def describe(self) -> Iterator[Metric]:  # no scrape at registration time
        return iter(())

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        yield from self._counters(snap["hash"])
        yield from self._live(snap)

    # -- reading --------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        """Three pipelined round trips; sizes bounded by queues, active runs, running tasks."""
        pipe = self.conn.pipeline(transaction=False)
        clock = _clock(self.conn, pipe)
        pipe.hgetall(keys.METRICS)
        pipe.smembers(keys.WAITING_QUEUES)
        pipe.pttl(keys.LEADER)
        pipe.get(keys.LEADER_EPOCH)
        pipe.smembers(keys.ACTIVE)
        pipe.zcard(keys.OUTBOX)
        pipe.smembers(keys.METRIC_TAGS)
        for d in self.scheduled:
            pipe.hget(keys.cron(d.name), "last_fire")
        (now_s, now_us), raw, queues, pttl, epoch, active, outbox, tags, *fires = clock(
            pipe.execute()
        )
        queues = sorted(codec.text(q) for q in queues)
        active = sorted(codec.text(r) for r in active)
        tags = sorted(codec.text(t) for t in tags)  # Redis Cluster: the slots' copies
        for q in queues:
            pipe.zcard(keys.waiting(q))
            pipe.zrange(keys.waiting(q), 0, 0, withscores=True)
        for run_id in active:
            pipe.hmget(keys.run(run_id), "dag", "status")
            pipe.zrange(keys.leases(run_id), 0, -1)
        for tag in tags:
            pipe.hgetall(keys.metrics(tag))
            pipe.smembers(keys.waiting_queues(tag))
        second = pipe.execute()
        now_ms = now_s * 1000 + now_us // 1000
        pipe.zcount(keys.WORKERS, liveness.alive_since_ms(self.heartbeat, now_ms), "+inf")
        heads = [(q, second[2 * i], second[2 * i + 1]) for i, q in enumerate(queues)]
        runs_by: dict[tuple[str, str], int] = {}
        running: list[tuple[str, str]] = []
        base = 2 * len(queues)
        for i, run_id in enumerate(active):
            (dag, status), leased = second[base + 2 * i], second[base + 2 * i + 1]
            if dag is not None:
                label = (codec.text(dag), codec.text(status))
                runs_by[label] = runs_by.get(label, 0) + 1
            for t in leased:
                running.append((run_id, codec.text(t)))
                pipe.hmget(
                    keys.task(run_id, codec.text(t)), "family", "n_children", "produced", "ch_read"
                )
        raw, tagged = _slot_copies(pipe, raw, tags, second[base + 2 * len(active) :])
        third = pipe.execute()
        live, rest = third[0], third[1:]
        split = len(rest) - 2 * len(tagged)
        heads += [(q, rest[split + 2 * i], rest[split + 2 * i + 1]) for i, q in enumerate(tagged)]
        waiting, backlog = _waiting(heads, now_ms), _backlog(rest[:split])
        return {
            "now": now_s + now_us / 1e6,
            "hash": raw,
            "waiting": waiting,
            "leader": 1 if pttl is not None and int(pttl) > 0 else 0,
            "epoch": int(epoch or 0),
            "outbox": int(outbox),
            "runs": runs_by,
            "workers": int(live),
            "backlog": backlog,
            "fires": fires,
            "running": len(running),
        }

    # -- exposition -----------------------------------------------------------------------
    @staticmethod
    def _counters(raw: dict[bytes, bytes]) -> Iterator[Metric]:
        counters: dict[str, dict[tuple[str, ...], float]] = {f: {} for f in COUNTERS}
        buckets: dict[str, dict[tuple[str, ...], dict[int, int]]] = {f: {} for f in HISTOGRAMS}
        sums: dict[str, dict[tuple[str, ...], float]] = {f: {} for f in HISTOGRAMS}
        for k, v in raw.items():
            name, *parts = codec.text(k).split(SEP)
            if name in counters:
                counters[name][tuple(parts)] = float(v)
            elif name.endswith("_b") and name[:-2] in buckets and parts:
                per = buckets[name[:-2]].setdefault(tuple(parts[:-1]), {})
                per[int(parts[-1])] = int(v)
            elif name.endswith("_sum") and name[:-4] in sums:
                sums[name[:-4]][tuple(parts)] = float(v)
        for fname, fam in COUNTERS.items():
            metric = CounterMetricFamily(fam.name, fam.help, labels=fam.labels)
            for labels, value in sorted(counters[fname].items()):
                if len(labels) == len(fam.labels):
                    metric.add_metric(list(labels), value)
            yield metric
        for fname, fam in HISTOGRAMS.items():
            hist = HistogramMetricFamily(fam.name, fam.help, labels=fam.labels)
            for labels in sorted(set(buckets[fname]) | set(sums[fname])):
                if len(labels) != len(fam.labels):
                    continue
                per = buckets[fname].get(labels, {})
                running, rows = 0, []
                for i, bound in enumerate(fam.buckets, start=1):
                    running += per.get(i, 0)
                    rows.append((_fmt_le(bound), running))
                running += per.get(len(fam.buckets) + 1, 0)
                rows.append(("+Inf", running))
                hist.add_metric(list(labels), rows, sums[fname].get(labels, 0.0))
            yield hist

    def _live(self, snap: dict[str, Any]) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "plankton_tasks_waiting",
            "Tasks queued for a worker but not yet started.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "plankton_tasks_waiting_oldest_seconds",
            "Age of the oldest task queued but not yet started (queue latency).",
            labels=["queue"],
        )
        for q, (n, age) in snap["waiting"].items():
            waiting.add_metric([q], n)
            oldest.add_metric([q], age)
        yield waiting
        yield oldest
        active = GaugeMetricFamily(
            "plankton_runs_active", "Runs not yet ended, by status.", labels=["dag", "status"]
        )
        for (dag, status), n in sorted(snap["runs"].items()):
            active.add_metric([dag, status], n)
        yield active
        yield GaugeMetricFamily(
            "plankton_tasks_running", "Task attempts holding a lease.", value=snap["running"]
        )
        yield GaugeMetricFamily(
            "plankton_workers_live",
            "Workers whose heartbeat was seen within three heartbeat periods.",
            value=snap["workers"],
        )
        backlog = GaugeMetricFamily(
            "plankton_channel_backlog",
            "Values emitted to the results channels of running tasks and not yet read, by "
            "the consuming task's family.",
            labels=["family"],
        )
        for fam, n in sorted(snap["backlog"].items()):
            backlog.add_metric([fam], n)
        yield backlog
        yield GaugeMetricFamily(
            "plankton_scheduler_leader",
            "1 if a scheduler holds the leader lease, else 0.",
            value=snap["leader"],
        )
        yield GaugeMetricFamily(
            "plankton_scheduler_leader_epoch",
            "Fencing epoch of the scheduler leadership (goes up on each new leader).",
            value=snap["epoch"],
        )
        yield GaugeMetricFamily(
            "plankton_webhook_outbox",
            "Webhook deliveries waiting to be sent or retried.",
            value=snap["outbox"],
        )
        yield self._cron_lag(snap)

    def _cron_lag(self, snap: dict[str, Any]) -> Metric:
        import datetime as _dt

        lag = GaugeMetricFamily(
            "plankton_cron_lag_seconds",
            "How long the oldest fire time of a schedule is overdue (0 when nothing is due).",
            labels=["dag"],
        )
        now = _dt.datetime.fromtimestamp(snap["now"], _dt.timezone.utc)
        for dag, raw in zip(self.scheduled, snap["fires"]):
            if not raw:
                continue  # no scheduler has seen this schedule yet
            assert dag.schedule is not None
            last = _dt.datetime.fromtimestamp(int(raw), _dt.timezone.utc)
            due = dag.schedule.next_fire(last)
            lag.add_metric([dag.name], max(0.0, (now - due).total_seconds()))
        return lag


def registry_for(
    conn: redis.Redis, dags: Iterable[Dag] = (), heartbeat: float = 5.0
) -> CollectorRegistry:
    """A registry holding only the Plankton collector (no process metrics: with several
    API replicas those would describe whichever replica was scraped)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PlanktonCollector(conn, dags, heartbeat))
    return reg


def scrape(registry: CollectorRegistry) -> bytes:
    """The exposition text of one scrape."""
    return generate_latest(registry)
