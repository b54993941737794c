"""A faster command packer for redis-py: one C call per command instead of one Python call
per argument.

Why: redis-py encodes every argument through ``Encoder.encode`` (a chain of ``isinstance``
checks in Python) before handing them to hiredis, even when hiredis is installed. Writing a
10,000-task run is ~470,000 arguments (a task record is an HSET of 23 fields), and that
per-argument encoding was half the time of ``submit`` (pyinstrument, 2026-12-05).
``hiredis.pack_command`` encodes ``str``, ``bytes``, ``int`` and ``float`` itself, exactly as
redis-py does (``repr`` of a float, UTF-8 of a str), so the fast path hands it the arguments
as they are and falls back to redis-py's own serializer for anything else (``bool`` and
unknown types then raise redis-py's ``DataError``; ``memoryview``/``bytearray`` are packed).

Plugged in by :func:`plankton.engine.connection.connect` through redis-py's ``command_packer``
connection option; without hiredis (it is a dependency, but a stripped install may lack it)
redis-py's default packer is used and nothing changes but speed.
"""

from __future__ import annotations

from typing import Any, Callable

from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack_command = None

#: redis-py's default size above which its Python packer sends a value as its own chunk.
_BUFFER_CUTOFF = 6000


class FastPacker:
    """``pack(*args) -> [bytes]`` with hiredis, redis-py's Python serializer as the fallback."""

    def __init__(self) -> None:
        encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        self._fallback: Callable[..., list[bytes]] = PythonRespSerializer(
            _BUFFER_CUTOFF, encoder.encode
        ).pack
        assert _pack_command is not None
        self._pack: Callable[[tuple[Any, ...]], bytes] = _pack_command

    def pack(self, *args: Any) -> list[bytes]:
        first = args[0]
        # "CONFIG GET" and the like: redis-py splits a command name with spaces; so does the
        # fallback
        if (b" " if isinstance(first, bytes) else " ") in first:
            return list(self._fallback(*args))
        try:
            return [self._pack(args)]
        except TypeError:  # bool, bytearray, memoryview, another type: redis-py decides
            return list(self._fallback(*args))


def pack_many(commands: list[tuple[Any, ...]]) -> bytes | None:
    """Many commands (tuples, as ``pack`` takes them) in one buffer, one hiredis call each;
    None when one of them is not hiredis's to pack (or hiredis is absent): the caller then
    uses the connection's own ``pack_commands``, which decides per command."""
    if _pack_command is None:
        return None
    try:
        return b"".join(map(_pack_command, commands))
    except TypeError:
        return None


def packer() -> FastPacker | None:
    """A packer for ``command_packer=``, or None (redis-py's default) without hiredis."""
    return FastPacker() if _pack_command is not None else None
