"""``serve``: run the API app with uvicorn, after the start-up checks.

The one rule enforced here rather than per request: binding an address other than loopback
without ``PLANKTON_API_TOKEN`` is refused (exit 2), so the API is never exposed to a network
without authentication by accident.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import redis
import uvicorn

from plankton.api.app import create_app
from plankton.client import Client
from plankton.engine.connection import redact
from plankton.errors import PlanktonError
from plankton.operations import logsetup
from plankton.settings import load

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Exit codes: bad configuration (refused bind, bad import, bad setting); server failed.
EXIT_CONFIG = 2
EXIT_FAILED = 1
#: How long uvicorn lets requests in flight finish after SIGTERM/Ctrl-C (s).
GRACEFUL_SHUTDOWN = 5


def is_loopback(host: str) -> bool:
    """True iff every address ``host`` names is a loopback address ('' and 0.0.0.0 are not)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    url: str | None = None,
    imports: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code (0 after a clean stop)."""
    env = os.environ if env is None else env
    token = env.get("PLANKTON_API_TOKEN", "") or None
    if token is None and not is_loopback(host):
        print(
            f"plankton api: refusing to listen on {host!r} without authentication: it is "
            "not a loopback address and PLANKTON_API_TOKEN is not set. Set a token "
            "(export PLANKTON_API_TOKEN=$(openssl rand -hex 32)) or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        fmt = logsetup.configure(
            "api",
            logging.INFO,
            logsetup.log_format(env),
            text_format="%(levelname)s:     %(name)s: %(message)s",
        )
        settings = load(env, url=url, imports=tuple(imports))
        app = create_app(settings, token=token)
    except PlanktonError as exc:
        print(f"plankton api: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    _announce(app.state.client, host, port, token is not None)
    # JSON: uvicorn's own loggers propagate to ours, so its lines are JSON objects too
    extra: dict[str, Any] = {"log_config": None} if fmt == "json" else {}
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            log_level="info",
            **extra,
        )
    )
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    return 0 if server.started else EXIT_FAILED


def _announce(client: Client, host: str, port: int, auth: bool) -> None:
    dags = ", ".join(sorted(client.registry.dags)) or "none (give --import MODULE)"
    log.info(
        "Plankton API and web console on http://%s:%s/ (auth: %s), Redis %s, DAGs: %s",
        host,
        port,
        "bearer token" if auth else "off, loopback only",
        redact(client.settings.url),
        dags,
    )
    try:
        client.conn.ping()
    except redis.RedisError as exc:
        log.warning(
            "Redis is unreachable for now (%s); /healthz answers 503 until it is", redact(str(exc))
        )
