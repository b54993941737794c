"""Secret params: a reference to a secret, never the secret itself.

A param declared ``pk.Param(pk.Secret)`` takes a *reference* such as ``env:PG_DSN`` (an
environment variable of the process running the task) or ``file:/run/secrets/pg_dsn`` (a file
on that host, e.g. a Docker or Kubernetes secret; one trailing newline is dropped). Only the
reference is stored in Redis, hashed into the task's param hash, shown by ``show``, the API,
the console and webhooks, and written to logs; the task reads the secret where it runs, with
:meth:`Secret.reveal`. This is how Airflow connections and Dagster's ``EnvVar`` keep
credentials out of their metadata stores. A literal value is refused when the param is set,
and the refusal does not echo it.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from plankton.errors import SecretError

__all__ = ["Secret", "check_reference"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FORMS = "env:VARIABLE or file:/path/to/file"


def check_reference(text: str) -> str:
    """``text`` if it is a well-formed reference; ValueError (not naming the text) if not."""
    scheme, sep, rest = text.partition(":")
    if sep and scheme == "env" and _ENV_NAME.fullmatch(rest):
        return text
    if sep and scheme == "file" and rest.strip() and "\x00" not in rest:
        return text
    if sep and scheme == "env":
        raise ValueError("env: must name an environment variable (letters, digits, _)")
    raise ValueError(
        f"expected a secret reference, {FORMS}, not the secret itself "
        "(a value given here would be stored in Redis and shown everywhere)"
    )


class Secret(str):
    """A reference to a secret (``env:NAME`` or ``file:PATH``); :meth:`reveal` reads it.

    A ``str`` subclass whose text is the reference, so it is stored, hashed and shown as the
    reference. Pass ``self.dsn.reveal()``, not ``self.dsn``, to the code that needs the value.
    """

    __slots__ = ()

    def __new__(cls, reference: str) -> Secret:
        return super().__new__(cls, check_reference(str(reference)))

    @property
    def reference(self) -> str:
        return str.__str__(self)

    def reveal(self) -> str:
        """The secret, read now on this host. SecretError (naming the reference and the
        host, never a value) if it cannot be read."""
        scheme, _, rest = self.reference.partition(":")
        if scheme == "env":
            value = os.environ.get(rest)
            if value is None:
                raise SecretError(
                    self.reference,
                    f"the environment variable {rest} is not set on host {socket.gethostname()}",
                )
            return value
        try:
            with open(rest, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise SecretError(
                self.reference, f"cannot read {rest} on host {socket.gethostname()}: {exc.strerror}"
            ) from None
        return text[:-1] if text.endswith("\n") else text

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    def __reduce__(self) -> Any:
        return (Secret, (self.reference,))
