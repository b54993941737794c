"""The one exception tree of Plankton.

    PlanktonError
    ├── ParamError            a task or DAG parameter is unknown, missing or of the wrong type
    ├── DagError              the tree is invalid (cycle, task added twice, two parents, bad cron)
    ├── SerializationError    a value cannot cross Redis as msgpack (or is over the size limit)
    ├── UpstreamFailed        a child of this task failed for good
    ├── NotFoundError         an unknown DAG, run or task was named
    ├── ConfigError           a setting (flag or PLANKTON_* variable) has a bad value
    ├── ConnectionFailed      Redis could not be reached after bounded retries
    ├── RunTimeout            waiting on a run took longer than asked
    ├── SecretError           a secret param's reference cannot be read where the task runs
    ├── ResumeError           a run cannot be resumed from failure (succeeded, live, values gone)
    └── Fenced                a superseded writer's write was refused (internal: an attempt
                              of a task, or a scheduler whose leader epoch moved on)

Every exception carries the fields it names and builds its message from them, so that a
caller can both show the message and act on the fields.
"""

from __future__ import annotations

from typing import Any


class PlanktonError(Exception):
    """Root of every error Plankton raises on purpose."""


class ParamError(PlanktonError):
    """A parameter is unknown, missing, or has a value of the wrong type.

    Fields: ``task`` (task or DAG name), ``param`` (parameter name), ``value`` (the offending
    value, or None when missing) and ``reason`` (what would be right).
    """

    def __init__(self, task: str, param: str, value: Any, reason: str) -> None:
        self.task, self.param, self.value, self.reason = task, param, value, reason
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(f"{task}: parameter {param!r} = {shown}: {reason}")


class DagError(PlanktonError):
    """The DAG is not a valid tree; ``tasks`` names the tasks involved."""

    def __init__(self, message: str, tasks: list[str] | None = None) -> None:
        self.tasks = list(tasks or [])
        super().__init__(message)


class SerializationError(PlanktonError):
    """A value cannot be encoded as msgpack, or is larger than the configured limit.

    Fields: ``task`` (where it happened), ``type_name`` (the offending type) and ``detail``.
    """

    def __init__(self, task: str, type_name: str, detail: str = "") -> None:
        self.task, self.type_name, self.detail = task, type_name, detail
        msg = f"{task}: cannot serialize value of type {type_name}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class UpstreamFailed(PlanktonError):
    """Raised by ``results()`` when a child failed for good; ``child`` names it."""

    def __init__(self, child: str, error: str = "") -> None:
        self.child, self.error = child, error
        super().__init__(f"child task {child} failed" + (f": {error}" if error else ""))


class NotFoundError(PlanktonError):
    """An unknown DAG, run or task was named; ``kind`` and ``name`` say which."""

    def __init__(self, kind: str, name: str, known: list[str] | None = None) -> None:
        self.kind, self.name, self.known = kind, name, list(known or [])
        msg = f"unknown {kind}: {name!r}"
        if known:
            msg += f" (known: {', '.join(sorted(known)[:20])})"
        super().__init__(msg)


class ConfigError(PlanktonError):
    """A setting has a bad value.

    Fields: ``setting`` (the flag or variable), ``value`` (what it was) and ``reason`` (what
    would be right). ``message`` replaces the default ``SETTING=VALUE: REASON`` text.
    """

    def __init__(self, setting: str, value: Any, reason: str, message: str | None = None) -> None:
        self.setting, self.value, self.reason = setting, value, reason
        super().__init__(message or f"{setting}={value!r}: {reason}")


class ConnectionFailed(PlanktonError):
    """Redis could not be reached, or refused us.

    Fields: ``url`` (with its password redacted; empty if unknown) and ``reason``.
    """

    def __init__(self, reason: str, url: str = "") -> None:
        self.reason, self.url = reason, url
        super().__init__(reason)


class RunTimeout(PlanktonError):
    """``Client.wait`` gave up before the run ended; fields ``run_id`` and ``timeout`` (s)."""

    def __init__(self, run_id: str, timeout: float) -> None:
        self.run_id, self.timeout = run_id, timeout
        super().__init__(f"run {run_id} did not end within {timeout}s")


class SecretError(PlanktonError):
    """A secret param's reference (``env:NAME``, ``file:PATH``) cannot be read on the host
    running the task. Fields: ``reference`` and ``reason``; never the secret."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference, self.reason = reference, reason
        super().__init__(f"secret {reference}: {reason}")


class ResumeError(PlanktonError):
    """``rerun --from-failure`` of ``run_id`` is refused; ``reason`` says why and what to do
    instead (the run succeeded or is still live, or the values to reuse expired)."""

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id, self.reason = run_id, reason
        super().__init__(f"cannot resume run {run_id}: {reason}")


class Fenced(PlanktonError):
    """A write was refused because its writer was superseded: an attempt of a task that is no
    longer current (lost lease, cancel, restart), or a scheduler whose leader epoch moved on.

    Raised inside a worker so that the task's thread stops, and inside a scheduler so that it
    stops acting as leader; never shown to users as a failure. Fields: ``writer`` (who wrote)
    and ``reason`` (what Redis said, if anything).
    """

    def __init__(self, writer: str, reason: str = "") -> None:
        self.writer, self.reason = writer, reason
        super().__init__(f"{writer}: {reason}" if reason else writer)
