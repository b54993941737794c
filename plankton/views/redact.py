"""Passwords hidden in what Plankton shows: params, errors, webhooks, pages.

A task param is stored as it was given, so a DSN such as
``postgresql://etl:hunter2@db/warehouse`` would be shown in clear by ``show``, the API, the
console and webhooks. Every view passes params and error texts through :func:`value` /
:func:`text`, which replace the password of any URL (``scheme://user:***@host``) and of a
libpq keyword DSN (``password=***``). The record in Redis is untouched, so ``rerun`` still
re-creates the run; to keep a credential out of Redis altogether, declare the param
:class:`plankton.Secret` and pass a reference (``env:PG_DSN``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "text", "value"]

MASK = "***"
#: ``scheme://user:password@`` (the password part, up to the last ``@`` before the host).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/@:\s]*):[^/\s]*@")
#: ``password=...`` in a keyword DSN (``host=db password='a b' user=etl``).
#: Also ``sentinel_password=...`` in a URL's query (up to the next ``&``).
_KEYWORD_PASSWORD = re.compile(r"(\b(?:\w*_)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)


def text(s: str) -> str:
    """``s`` with the password of every URL and keyword DSN in it replaced by ***."""
    if "@" in s:
        s = _URL_PASSWORD.sub(rf"\1:{MASK}@", s)
    if "assword" in s or "ASSWORD" in s:
        s = _KEYWORD_PASSWORD.sub(rf"\1{MASK}", s)
    return s


def value(v: Any) -> Any:
    """A JSON-ready value (params) with :func:`text` applied to every string in it."""
    if isinstance(v, str):
        return text(v)
    if isinstance(v, dict):
        return {k: value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [value(x) for x in v]
    return v
