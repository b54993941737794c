"""Sentinel URLs (issue 18 item 1): ``redis[s]+sentinel://[user:pw@]host:port,.../MASTER/DB``.

The parser's forms and refusals, the redaction of both passwords, and one end-to-end run over
TLS with an ACL user through a real sentinel: a worker and a scheduler (real processes), the
CLI and ``pk.Client`` all take the same URL. The failover itself, across network-namespace
hosts: ``tests/reliability/test_failover.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

import plankton as pk
from plankton.engine.connection import connect, is_sentinel, parse_sentinel, redact
from plankton.errors import ConnectionFailed
from tests.cluster import Cluster
from tests.reliability.test_auth_tls import ACL, SIMPLE, _certs
from tests.servers import free_port, wait_for


def test_forms():
    u = parse_sentinel(
        "redis+sentinel://pk:p%40ss@h1:26379,h2,[::1]:26380/main/3"
        "?sentinel_password=spw&socket_timeout=4"
    )
    assert u.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26380))
    assert u.service == "main" and not u.tls
    assert u.master_kwargs == {"db": 3, "username": "pk", "password": "p@ss", "socket_timeout": 4.0}
    assert u.sentinel_kwargs["password"] == "spw" and "username" not in u.sentinel_kwargs
    t = parse_sentinel("rediss+sentinel://h1/main?ssl_ca_certs=/ca.pem&sentinel_username=s")
    assert t.tls and t.master_kwargs["ssl"] and t.sentinel_kwargs["ssl"]
    assert t.sentinel_kwargs["ssl_ca_certs"] == t.master_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert t.sentinel_kwargs["username"] == "s" and "db" not in t.master_kwargs
    assert is_sentinel("REDIS+SENTINEL://h/m") and not is_sentinel("redis://h:1/0")


@pytest.mark.parametrize(
    "url, why",
    [
        ("redis+sentinel://h1", "the master's name is missing"),
        ("redis+sentinel:///main", "no sentinel host"),
        ("redis+sentinel://h1,,h2/main", "an empty sentinel host"),
        ("redis+sentinel://h1:port/main", "sentinel port 'port' is not a number"),
        ("redis+sentinel://h1:70000/main", "bad sentinel address"),
        ("redis+sentinel://h1/main/x", "Invalid value for 'db'"),
        ("redis+sentinel://h1/main/1/2", "too many path parts"),
        ("redis+sentinel://h1/main/1?db=2", "the db is given twice"),
    ],
)
def test_refusals_name_the_problem(url, why):
    with pytest.raises(ConnectionFailed) as err:
        connect(url)
    assert why in str(err.value) and "redis+sentinel://[user:pw@]host:26379" in str(err.value)


def test_redaction_covers_both_passwords():
    url = "rediss+sentinel://pk:s3cret@h1:26379/main/0?sentinel_password=t0p&x=1"
    assert redact(url) == "rediss+sentinel://***@h1:26379/main/0?sentinel_password=***&x=1"
    with pytest.raises(ConnectionFailed) as err:
        connect(url.replace("/main/0", "/main/zz"))
    assert "s3cret" not in str(err.value) and "t0p" not in str(err.value)


def _tls_args(certs: dict[str, Path], port: int) -> list[str]:
    return [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certs["cert"]),
        "--tls-key-file",
        str(certs["key"]),
        "--tls-ca-cert-file",
        str(certs["ca"]),
        "--tls-auth-clients",
        "no",
    ]


def test_tls_acl_sentinel_url_end_to_end(tmp_path):
    """Master and sentinel both on TLS; Plankton's ACL user on the master, the default user
    (the sentinel's) with its own password; every process gets the rediss+sentinel URL."""
    certs = _certs(tmp_path / "certs")
    mport, sport = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                *_tls_args(certs, mport),
                "--dir",
                str(tmp_path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                "admin-pw",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    fc = None
    try:
        admin = redis.Redis(
            port=mport,
            password="admin-pw",
            ssl=True,
            ssl_ca_certs=str(certs["ca"]),
            socket_timeout=1,
        )
        wait_for(lambda: _answers(admin), 10, what="TLS master")
        admin.execute_command("ACL", "SETUSER", "pk", *ACL)
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    *(
                        f"{a.removeprefix('--')} {b}"
                        for a, b in zip(_tls_args(certs, sport)[::2], _tls_args(certs, sport)[1::2])
                    ),
                    "tls-replication yes",
                    f"dir {tmp_path}",
                    f"sentinel monitor pkm 127.0.0.1 {mport} 1",
                    "sentinel auth-pass pkm admin-pw",
                    "",
                ]
            )
        )
        procs.append(
            subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"rediss+sentinel://pk:pk-pass-1@127.0.0.1:{sport}/pkm/0?ssl_ca_certs={certs['ca']}"
        conn = connect(url)
        wait_for(lambda: _answers(conn), 15, what="the master through the TLS sentinel")
        assert conn.acl_whoami() in ("pk", b"pk")
        fc = Cluster(url, imports=["examples.simple"], log_dir=tmp_path)
        fc.start(["sentinel-w"])
        done = fc.cli(
            "run",
            "simple",
            "--param",
            "n=3",
            "--param",
            "m=2",
            "--wait",
            "--json",
            "--import",
            "examples.simple",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "pk-pass-1" not in done.stdout + done.stderr
        client = pk.Client(url, imports=["examples.simple"])
        run = client.wait(client.submit("simple", params={"n": 3, "m": 2}), timeout=60)
        client.close()
        assert run["status"] == "succeeded" and run["result"] == SIMPLE, run["error"]
        conn.close()
        admin.close()
    finally:
        if fc:
            fc.kill_all()
        for p in procs:
            p.kill()
            p.wait(10)


def _answers(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
