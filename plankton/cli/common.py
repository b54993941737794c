"""Shared CLI options, error-to-exit-code mapping and output helpers."""

from __future__ import annotations

import datetime as _dt
import sys
from typing import Any, Callable

import click

from plankton.engine.connection import redact
from plankton.errors import ConnectionFailed, NotFoundError, PlanktonError

#: Exit codes: a run that did not succeed, bad input, Redis unreachable.
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NO_REDIS = 3


def handle_error(exc: BaseException) -> int:
    """Print a one-line error (no traceback, passwords redacted) and pick the exit code."""
    if isinstance(exc, click.exceptions.Abort):
        click.echo("Aborted.", err=True)
        return 130
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, ConnectionFailed):
        click.echo(f"error: {redact(str(exc))}", err=True)
        return EXIT_NO_REDIS
    if isinstance(exc, (NotFoundError, PlanktonError)):
        click.echo(f"error: {redact(str(exc))}", err=True)
        return EXIT_BAD_INPUT
    import redis

    if isinstance(exc, redis.RedisError):
        click.echo(f"error: Redis: {redact(str(exc))}", err=True)
        return EXIT_NO_REDIS
    raise exc


def url_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="PLANKTON_REDIS_URL",
        default=None,
        show_envvar=True,
        help="Redis URL (default redis://localhost:6379/0).",
    )(f)


def import_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Module with task and DAG code (repeatable; env PLANKTON_IMPORTS).",
    )(f)


def parse_iso(value: str | None, flag: str) -> _dt.datetime | None:
    if value is None:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or datetime", param_hint=flag
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


def parse_params(items: tuple[str, ...], flag: str = "--param") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        key, value = item.split("=", 1)
        if not key.strip():
            raise click.BadParameter(f"{item!r} has an empty name", param_hint=flag)
        out[key.strip()] = value
    return out


def is_tty() -> bool:
    return sys.stdout.isatty()
