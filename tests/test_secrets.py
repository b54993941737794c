"""Secret params never reach Redis, logs or views; URL passwords are hidden in every view."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import pytest
import redis

import plankton as pk
from plankton.views import redact
from tests.cluster import ROOT
from tests.dags import tasks as t

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x asks for httpx2 (see tests/api/test_api.py)
    from fastapi.testclient import TestClient

PASSWORD = "hunter2-s3cr3t"
DSN = f"postgresql://etl:{PASSWORD}@db.example:5432/warehouse"


def _all_redis_bytes(r: redis.Redis) -> bytes:
    """Every key and value in Redis, concatenated (hashes, lists, sets, zsets, streams)."""
    out = bytearray()
    for key in r.scan_iter(count=1000):
        out += key
        kind = r.type(key)
        if kind == b"string":
            out += r.get(key) or b""
        elif kind == b"hash":
            for k, v in r.hgetall(key).items():
                out += k + v
        elif kind == b"list":
            out += b"".join(r.lrange(key, 0, -1))
        elif kind == b"set":
            out += b"".join(r.smembers(key))
        elif kind == b"zset":
            out += b"".join(m for m, _ in r.zrange(key, 0, -1, withscores=True))
        elif kind == b"stream":
            for _, fields in r.xrange(key):
                for k, v in fields.items():
                    out += k + v
    return bytes(out)


def test_a_secret_is_resolved_on_the_worker_and_stored_nowhere(cluster, client, r, tmp_path):
    cluster.scheduler()
    cluster.worker(PK_TEST_DSN=DSN)
    run_id = client.submit("secret_dag")  # the default reference: env:PK_TEST_DSN
    run = client.wait(run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == hashlib.sha256(DSN.encode()).hexdigest()  # the worker read it
    task = run["tasks"][0]
    assert task["params"]["dsn"] == "env:PK_TEST_DSN"
    assert PASSWORD.encode() not in _all_redis_bytes(r)
    shown = cluster.cli("show", run_id, "--json").stdout + cluster.cli("logs", run_id).stdout
    assert "env:PK_TEST_DSN" in shown and PASSWORD not in shown
    for log in cluster.log_dir.glob("*.log"):
        assert PASSWORD.encode() not in log.read_bytes(), log.name


def test_the_param_hash_covers_the_reference_not_the_secret(tmp_path, monkeypatch):
    a = t.UsesSecret(dsn="env:PK_A")
    assert a.param_hash == t.UsesSecret(dsn=pk.Secret("env:PK_A")).param_hash
    assert a.param_hash != t.UsesSecret(dsn="env:PK_B").param_hash
    f = tmp_path / "dsn"
    f.write_text("one\n")
    task = t.UsesSecret(dsn=f"file:{f}")
    before = task.param_hash
    assert task.dsn.reveal() == "one"  # one trailing newline dropped
    f.write_text("two")
    assert t.UsesSecret(dsn=f"file:{f}").param_hash == before
    assert task.dsn.reveal() == "two"  # read when asked, not cached
    monkeypatch.setenv("PK_A", DSN)
    assert a.dsn.reveal() == DSN


@pytest.mark.parametrize("given", [DSN, "hunter2", "env:", "env:NOT-A-NAME", "file:", 42])
def test_a_literal_or_malformed_secret_is_refused_without_echoing_it(given):
    with pytest.raises(pk.ParamError) as err:
        t.UsesSecret(dsn=given)
    text = str(err.value)
    assert "dsn" in text and ("env:" in text or "secret" in text)
    if isinstance(given, str) and len(given) > 5:
        assert given not in text and PASSWORD not in text


def test_the_cli_refuses_a_literal_secret_with_exit_2_and_writes_nothing(cluster, r):
    done = cluster.cli("run", "secret_dag", "--import", "tests.dags.tasks", "--param", f"dsn={DSN}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "dsn" in done.stderr and PASSWORD not in done.stdout + done.stderr
    assert r.dbsize() == 0


def test_a_missing_secret_fails_the_task_naming_the_reference_and_host(client, stack):
    # the stack's worker has no PK_TEST_DSN in its environment
    run = client.wait(client.submit("secret_dag"), timeout=60)
    assert run["status"] == "failed"
    error = run["tasks"][0]["error"]
    assert "SecretError" in error and "env:PK_TEST_DSN" in error and "not set on host" in error


def test_url_passwords_are_hidden_in_show_the_api_and_errors(client, redis_url, stack):
    run_id = client.submit(t.FailWith(msg=f"cannot connect to {DSN}"))
    run = client.wait(run_id, timeout=60)
    assert run["status"] == "failed"
    masked = "postgresql://etl:***@db.example:5432/warehouse"
    assert run["tasks"][0]["params"]["msg"] == f"cannot connect to {masked}"
    assert masked in run["tasks"][0]["error"]
    assert PASSWORD not in json.dumps(run)
    shown = stack.cli("show", run_id).stdout + stack.cli("show", run_id, "--json").stdout
    assert masked in shown and PASSWORD not in shown
    from plankton.api.app import create_app

    with TestClient(create_app(redis_url, imports=["tests.dags.tasks"])) as http:
        body = http.get(f"/runs/{run_id}").text
    assert masked in body and PASSWORD not in body


@pytest.mark.parametrize(
    "given,shown",
    [
        (DSN, "postgresql://etl:***@db.example:5432/warehouse"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("host=db password='a b' user=etl", "host=db password=*** user=etl"),
        ("https://example.com/a@b", "https://example.com/a@b"),
        (
            "redis+sentinel://h:26379/m?sentinel_password=s3&db=0",
            "redis+sentinel://h:26379/m?sentinel_password=***&db=0",
        ),
        ("postgresql://etl@db/w", "postgresql://etl@db/w"),
    ],
)
def test_redact_text(given, shown):
    assert redact.text(given) == shown
    assert redact.value({"a": [given]}) == {"a": [shown]}


def test_secret_reveal_in_a_fresh_process_reads_its_own_environment():
    code = "import plankton as pk; s = pk.Secret('env:PK_X'); print(repr(s), str(s), s.reveal())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PK_X": "v", "PATH": "/usr/bin"},
    )
    assert done.stdout.split() == ["Secret('env:PK_X')", "env:PK_X", "v"], done.stderr
