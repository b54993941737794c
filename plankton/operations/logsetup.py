"""Process logging: human-readable lines by default, one JSON object per line on request.

Every long-running process (worker, scheduler, API, ``plankton up``) calls :func:`configure`
once at start-up with its role. ``PLANKTON_LOG_FORMAT=json`` then makes each record a JSON
object with ``ts`` (UTC, ISO 8601, ms), ``level``, ``role``, ``logger``, ``pid``, ``msg``, and
``run_id`` / ``task_id`` / ``attempt`` when the record was written while a task ran (the
worker sets them with :func:`task_context`) or passed them in ``extra``. Log shippers (Loki,
Elastic, CloudWatch) index those fields without a parsing rule; the default format stays the
one people read in a terminal.

Why not python-json-logger or structlog: a ten-line ``Formatter`` does the job, and one more
dependency in every worker image would buy nothing here.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from plankton.errors import ConfigError

#: Accepted values of PLANKTON_LOG_FORMAT.
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: Fields the worker sets while a task attempt runs (a contextvar per thread of the pool).
_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "plankton_log_context", default=None
)
_CONTEXT_FIELDS = ("run_id", "task_id", "attempt", "task")


def tag(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Tag every record logged from now on in this thread with ``fields`` (run_id, task_id,
    attempt, task) until :func:`untag` is given the returned token."""
    return _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})


def untag(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _CONTEXT.reset(token)


@contextlib.contextmanager
def task_context(**fields: Any) -> Iterator[None]:
    """``with task_context(run_id=...):`` the same as :func:`tag` for a block."""
    token = tag(**fields)
    try:
        yield
    finally:
        untag(token)


def log_format(env: Mapping[str, str] | None = None) -> str:
    """The configured format; ConfigError names the variable on a value it does not know."""
    env = os.environ if env is None else env
    value = (env.get("PLANKTON_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        raise ConfigError("PLANKTON_LOG_FORMAT", value, f"expected one of {', '.join(FORMATS)}")
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = (_CONTEXT.get() or {}).get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(
    role: str,
    level: str | int = "INFO",
    fmt: str | None = None,
    stream: Any = None,
    text_format: str = TEXT_FORMAT,
) -> str:
    """Set up the root logger of this process for ``role``; returns the format used.

    Replaces handlers set earlier (a second call switches format cleanly). Loggers of
    libraries (uvicorn, rq) propagate to the root, so their lines get the same shape.
    """
    fmt = fmt or log_format()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return fmt
