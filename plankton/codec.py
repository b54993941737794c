"""msgpack encoding of every byte that crosses Redis: jobs, values, results, metadata.

No pickle anywhere. Decoding refuses unknown msgpack extension types and caps sizes, so a
forged payload cannot make a process allocate without bound or build arbitrary objects.
Aware datetimes use msgpack's timestamp extension (-1) and come back as aware UTC datetimes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

import msgpack

from plankton.errors import SerializationError

#: Largest encoded value (an emitted value, a result, a job), in bytes. 64 MiB.
DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024

_MAX_LEN = 2**31 - 1


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"refused msgpack extension type {code}")


def _default(obj: Any) -> Any:
    # msgpack calls this for types it cannot pack itself; tuples pack as lists natively.
    raise TypeError(f"cannot serialize value of type {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack; TypeError/ValueError for anything outside the value types."""
    data: bytes = msgpack.packb(obj, use_bin_type=True, datetime=True, default=_default)
    return data


def loads(data: Any, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> Any:
    """Decode msgpack produced by :func:`dumps`, refusing ext types and oversized input."""
    if len(data) > max_bytes:
        raise ValueError(f"payload of {len(data)} bytes is over the limit of {max_bytes}")
    return msgpack.unpackb(
        data,
        raw=False,
        timestamp=3,
        strict_map_key=False,
        ext_hook=_refuse_ext,
    )


_PACK: Callable[[Any], bytes] = msgpack.Packer(
    use_bin_type=True, datetime=True, default=_default
).pack
_FAST = (str, bytes, float, type(None), bool)
_ARRAY_HEADER: Callable[[int], bytes] = msgpack.Packer().pack_array_header


def pack_batch(items: list[Any], n_encoded: int) -> bytes:
    """One msgpack array of ``items`` (a batch of a results channel, see ``channel.Writer``).

    ``bytes`` items are values :func:`check_value` encoded already and are joined as they
    are; the others are small scalars packed here. With ``n_encoded`` 0 (only scalars) the
    whole list is packed in one C call, the fast path of a stream of small values."""
    if n_encoded:
        return _ARRAY_HEADER(len(items)) + b"".join(
            item if type(item) is bytes else _PACK(item) for item in items
        )
    return _PACK(items)


def text(value: Any) -> str:
    """A Redis reply as text: bytes decoded as UTF-8, None as ''."""
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


def jsonable(value: Any) -> Any:
    """A decoded msgpack value made JSON-ready (datetimes and dates as ISO, bytes as text)."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    return value


def check_value(value: Any, where: str, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> bytes:
    """Encode a user value, raising SerializationError naming ``where`` and the type.

    Naive datetimes are refused: they would silently change meaning across hosts.
    """
    if type(value) in _FAST:  # the common case of a stream: one call, no tree walk
        try:
            data = _PACK(value)
        except ValueError as exc:  # a str with a lone surrogate has no UTF-8 form
            raise SerializationError(where, type(value).__name__, str(exc)) from exc
        if len(data) > max_bytes:
            raise SerializationError(
                where,
                type(value).__name__,
                f"{len(data)} bytes is over the limit of {max_bytes} bytes",
            )
        return data
    bad = _find_bad(value)
    if bad is not None:
        raise SerializationError(where, type(bad).__name__, _why(bad))
    try:
        data = dumps(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(where, type(value).__name__, str(exc)) from exc
    if len(data) > max_bytes:
        raise SerializationError(
            where, type(value).__name__, f"{len(data)} bytes is over the limit of {max_bytes} bytes"
        )
    return data


def _why(bad: Any) -> str:
    if isinstance(bad, _dt.datetime):
        return "naive datetime (give it a tzinfo)"
    return "not msgpack data (None, bool, int, float, str, bytes, list, dict, aware datetime)"


_SCALARS = (type(None), bool, int, float, str, bytes)


def _find_bad(value: Any, depth: int = 0) -> Any:
    """Return the first value msgpack would mis-handle, or None when all is well."""
    if isinstance(value, _SCALARS):
        return _bad_scalar(value)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is None else None
    if depth > 100:
        return value
    if isinstance(value, (list, tuple)):
        items: Any = value
    elif isinstance(value, dict):
        items = (x for kv in value.items() for x in kv)
    else:
        return value
    for item in items:
        bad = _find_bad(item, depth + 1)
        if bad is not None:
            return bad
    return None


def _bad_scalar(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            return value
    return None
