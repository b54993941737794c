"""Collision-free identity hashes of tasks (``param_hash``) and task trees (``tree_hash``).

Why this exists: a run's metadata names each task by what it computes, and a rerun compares
hashes to tell which tasks changed. The old project hashed a string concatenation with FNV,
so ``x="a_Y:STR:b", y="c"`` and ``x="a", y="b_Y:STR:c"`` gave the same bytes, hence the same
id. Here every value is written with a one-byte type tag and every variable-length part with
its length first, so :func:`canonical` is injective: two values that differ in type or value
never give the same bytes (and ``1``, ``1.0``, ``True`` and ``"1"`` all differ). SHA-256 over
those bytes is then collision-free in practice.

The byte format is a stable contract: docs/hashing.md specifies it precisely enough to
re-implement, and tests/golden_hashes.json pins it. Changing it changes every stored hash,
so a change needs a new domain tag (``...v2``), never an edit in place.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import re
import struct
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["canonical", "param_hash", "tree_hash"]

#: Domain tags, hashed first so a param hash can never equal a tree hash or any other
#: SHA-256 Plankton computes over the same bytes.
PARAM_DOMAIN = b"plankton.param_hash.v1\x00"
TREE_DOMAIN = b"plankton.tree_hash.v1\x00"

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MICROSECOND = _dt.timedelta(microseconds=1)
#: The one bit pattern every NaN is written as (the quiet NaN Python itself produces).
_NAN_BITS = struct.pack(">Q", 0x7FF8000000000000)
_U64 = struct.Struct(">Q")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

_Out = bytearray
_Encoder = Callable[[Any, _Out], None]


def canonical(value: Any) -> bytes:
    """Return the canonical, type-tagged, length-prefixed encoding of ``value``.

    Supported: None, bool, int (any size), float, str, bytes, datetime.date, aware
    datetime.datetime, enum members, list/tuple (both as a list) and dict. Anything else
    raises TypeError; a naive datetime or a str that is not valid Unicode raises ValueError.
    """
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def param_hash(family: str, params: dict[str, Any]) -> str:
    """Hex SHA-256 identity of a task: its family (class name) and its typed params."""
    if not isinstance(family, str):
        raise TypeError(f"family must be a str, not {type(family).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    digest = hashlib.sha256(PARAM_DOMAIN)
    digest.update(_key(family))
    digest.update(canonical(params))
    return digest.hexdigest()


def tree_hash(param_hash: str, child_tree_hashes: Iterable[str]) -> str:
    """Hex SHA-256 Merkle hash of a task and its children's tree hashes.

    Children run concurrently, so they are an unordered multiset: their digests are sorted
    before hashing, and the same children in any order give the same tree hash.
    """
    return tree_digest(
        _digest_bytes(param_hash), [_digest_bytes(child) for child in child_tree_hashes]
    ).hex()


def tree_digest(param_digest: bytes, child_digests: list[bytes]) -> bytes:
    """:func:`tree_hash` on raw 32-byte digests already checked (``planning.tree_hashes`` hashes
    a whole tree bottom-up without re-validating the hex of every child at every level)."""
    digest = hashlib.sha256(TREE_DOMAIN)
    digest.update(param_digest)
    digest.update(_U64.pack(len(child_digests)))
    for child in sorted(child_digests):
        digest.update(child)
    return digest.digest()


def _digest_bytes(hex_digest: str) -> bytes:
    if not isinstance(hex_digest, str) or not _HEX_DIGEST.fullmatch(hex_digest):
        raise ValueError(f"expected a 64-digit hex SHA-256 digest, got {hex_digest!r}")
    return bytes.fromhex(hex_digest)


def _encode(value: Any, out: _Out) -> None:
    encoder = _BY_TYPE.get(type(value))
    if encoder is None:
        encoder = _encoder_for_subclass(value)
    encoder(value, out)


def _encoder_for_subclass(value: Any) -> _Encoder:
    # Enum first: an IntEnum member is an int, but it must not hash like one.
    if isinstance(value, enum.Enum):
        return _enum
    for base, encoder in _BY_BASE:
        if isinstance(value, base):
            return encoder
    raise TypeError(
        f"cannot hash a value of type {type(value).__name__}: expected None, bool, int, "
        "float, str, bytes, date, aware datetime, Enum, list, tuple or dict"
    )


def _none(value: None, out: _Out) -> None:
    out += b"N"


def _bool(value: bool, out: _Out) -> None:
    out += b"T" if value else b"F"


def _int(value: int, out: _Out) -> None:
    size = value.bit_length() // 8 + 1  # always room for the sign bit
    out += b"I"
    out += _U64.pack(size)
    out += int(value).to_bytes(size, "big", signed=True)


def _float(value: float, out: _Out) -> None:
    out += b"D"
    out += _NAN_BITS if value != value else struct.pack(">d", value)


def _str(value: str, out: _Out) -> None:
    data = value.encode("utf-8")
    out += b"S"
    out += _U64.pack(len(data))
    out += data


def _bytes(value: bytes, out: _Out) -> None:
    out += b"B"
    out += _U64.pack(len(value))
    out += value


def _date(value: _dt.date, out: _Out) -> None:
    out += b"d"
    out += struct.pack(">HBB", value.year, value.month, value.day)


def _datetime(value: _dt.datetime, out: _Out) -> None:
    if value.utcoffset() is None:
        raise ValueError(f"cannot hash a naive datetime ({value.isoformat()}): give it a tzinfo")
    # Aware subtraction compares instants: the same moment in any time zone is equal.
    out += b"t"
    out += struct.pack(">q", (value - _EPOCH) // _MICROSECOND)


def _enum(value: enum.Enum, out: _Out) -> None:
    out += b"E"
    _str(type(value).__qualname__, out)
    _str(value.name, out)


def _list(value: list[Any] | tuple[Any, ...], out: _Out) -> None:
    out += b"L"
    out += _U64.pack(len(value))
    for item in value:
        _encode(item, out)


#: Encodings of str dict keys (param names, mostly: the same few for every task of a tree),
#: bounded so that dict-valued params with ever-new keys cannot grow it without end.
_KEYS: dict[str, bytes] = {}
_KEYS_MAX = 4096


def _key(key: Any) -> bytes:
    if type(key) is str:
        data = _KEYS.get(key)
        if data is None:
            data = canonical(key)
            if len(_KEYS) < _KEYS_MAX:
                _KEYS[key] = data
        return data
    return canonical(key)


def _dict(value: dict[Any, Any], out: _Out) -> None:
    # hashing a 10,000-task tree is 10,000 of these: encode keys once (``_key``) and None,
    # the usual value of the unset built-ins since/to, without a call
    entries = sorted(
        _key(key) + (b"N" if item is None else canonical(item)) for key, item in value.items()
    )
    out += b"M"
    out += _U64.pack(len(entries))
    for entry in entries:
        out += entry


_BY_TYPE: dict[type, _Encoder] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
    bytes: _bytes,
    _dt.date: _date,
    _dt.datetime: _datetime,
    list: _list,
    tuple: _list,
    dict: _dict,
}

# Subclasses (other than enums) hash as their base type; datetime is checked before date.
_BY_BASE: tuple[tuple[type | tuple[type, ...], _Encoder], ...] = (
    (int, _int),
    (float, _float),
    (str, _str),
    (bytes, _bytes),
    (_dt.datetime, _datetime),
    (_dt.date, _date),
    ((list, tuple), _list),
    (dict, _dict),
)
