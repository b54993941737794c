"""Issue 5 point 8, last part (RELIABILITY §7 #20): Redis with a password, with an ACL user
(``~plankton:* ~rq:* &rq:* +@all -@dangerous``, default user off) and over TLS
(``rediss://``, certificates made here with openssl) all run the simple DAG end to end;
wrong credentials, a missing CA and plain text to the TLS port fail fast with a clear
message, no traceback, and no password in the output.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

import plankton as pk
from tests.servers import RedisServer, free_port, wait_for

SIMPLE = ["hihihi"] * 15 + ["lolo"] * 25
ACL = ["on", ">pk-pass-1", "~plankton:*", "~rq:*", "&rq:*", "+@all", "-@dangerous"]


def _run_simple(private_cluster, url: str) -> None:
    private_cluster(url).start(["auth-w"], imports=["examples.simple"])
    client = pk.Client(url, imports=["examples.simple"])
    try:
        run = client.wait(client.submit("simple", params={"n": 3, "m": 2}), timeout=60)
    finally:
        client.close()
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == SIMPLE


def _cli_fails_clearly(private_cluster, url: str, secret: str, needle: str) -> None:
    fc = private_cluster(url)
    t0 = time.monotonic()
    done = fc.cli("run", "simple", "--import", "examples.simple", "--url", url, timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in out, out
    assert secret not in out, out
    assert needle in out, out


def _acl_user(url: str) -> None:
    admin = redis.Redis.from_url(url)
    admin.execute_command("ACL", "SETUSER", "pk", *ACL)
    admin.execute_command("ACL", "SETUSER", "default", "off")
    admin.close()


def test_requirepass(tmp_path, private_cluster):
    server = RedisServer(tmp_path / "pw", password="pw-s3cret-9").start()
    try:
        _run_simple(private_cluster, server.url)
        bad = server.url.replace("pw-s3cret-9", "wrong-pw-7")
        _cli_fails_clearly(private_cluster, bad, "wrong-pw-7", "refused the credentials")
    finally:
        server.stop()


def test_acl_user_with_default_user_off(tmp_path, private_cluster):
    server = RedisServer(tmp_path / "acl").start()
    try:
        _acl_user(server.url)
        url = f"redis://pk:pk-pass-1@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.RedisError):  # the ACL really is in force
            redis.Redis.from_url(url).flushall()
        _run_simple(private_cluster, url)
        _cli_fails_clearly(
            private_cluster,
            url.replace("pk-pass-1", "nope-pass-2"),
            "nope-pass-2",
            "refused the credentials",
        )
    finally:
        server.proc.kill()
        server.proc.wait(10)


def _certs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=plankton-test-ca",
    )
    ossl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ossl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def test_tls_with_acl_user(tmp_path, private_cluster):
    certs = _certs(tmp_path / "certs")
    port = free_port()
    data = tmp_path / "tls"
    data.mkdir()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
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
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        plain_admin = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs['ca']}"

        def up() -> bool:
            try:
                return redis.Redis.from_url(plain_admin, socket_timeout=1).ping()
            except redis.RedisError:
                return False

        wait_for(up, 10, what="TLS redis-server")
        _acl_user(plain_admin)
        url = f"rediss://pk:pk-pass-1@127.0.0.1:{port}/0?ssl_ca_certs={certs['ca']}"
        _run_simple(private_cluster, url)
        # plain text to the TLS port; TLS without our CA; a wrong password
        _cli_fails_clearly(
            private_cluster,
            f"redis://pk:pk-pass-1@127.0.0.1:{port}/0",
            "pk-pass-1",
            f"127.0.0.1:{port}",
        )
        _cli_fails_clearly(
            private_cluster,
            f"rediss://pk:pk-pass-1@127.0.0.1:{port}/0",
            "pk-pass-1",
            "CERTIFICATE_VERIFY_FAILED",
        )
        _cli_fails_clearly(
            private_cluster,
            url.replace("pk-pass-1", "bad-pass-3"),
            "bad-pass-3",
            "refused the credentials",
        )
    finally:
        proc.kill()
        proc.wait(10)
