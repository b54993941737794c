"""Many writes on one connection, Redis running one chunk while Python builds the next.

Why: a big submit (100,000 task hashes) wrote chunks through redis-py pipelines: build a
chunk, send it, wait while Redis runs it, read the replies, build the next. Redis's share of
that wait (~0.7 s of 3.6 s for 100,000 tasks, the socket's ``recv_into`` in cProfile) was
spent by Python doing nothing. Here a chunk's replies are read only after the next chunk is
sent, so the two overlap; and commands are packed by hiredis as tuples, not through
redis-py's per-command pipeline methods (``hset(mapping=)`` builds its argument list in
Python) and its ``pack_commands`` loop: another ~0.3 s per 100,000.

Not a transaction: what needs one (the run hash that makes a run visible) is written after,
in a MULTI/EXEC of its own (``writing.write_run``).
"""

from __future__ import annotations

from typing import Any

import redis

from plankton.engine.resp import pack_many


class BulkWriter:
    """Send commands in chunks of ``chunk`` on a connection of ``conn``'s pool; ``close()``
    reads what is left and gives the connection back. An error reply raises (the rest of
    its chunk is not read: the connection is dropped, not reused)."""

    def __init__(self, conn: redis.Redis, chunk: int = 2000) -> None:
        self.pool = conn.connection_pool
        self.connection: Any = self.pool.get_connection()
        self.chunk = chunk
        self.commands: list[tuple[Any, ...]] = []
        #: Replies of the chunk sent last, not yet read.
        self.unread = 0

    def __enter__(self) -> "BulkWriter":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def add(self, *args: Any) -> None:
        """Queue one command (``"HSET", key, field, value, ...``)."""
        self.commands.append(args)
        if len(self.commands) >= self.chunk:
            self.send()

    def send(self) -> None:
        """Send what is queued, then read the replies of the chunk sent before it."""
        if not self.commands:
            return
        connection = self.connection
        blob = pack_many(self.commands)
        connection.send_packed_command(
            [blob] if blob is not None else connection.pack_commands(self.commands)
        )
        sent, self.commands = len(self.commands), []
        self._read(self.unread)
        self.unread = sent

    def close(self) -> None:
        """Send the rest, read every reply, give the connection back."""
        try:
            self.send()
            self._read(self.unread)
            self.unread = 0
        except BaseException:
            self.abandon()
            raise
        self.pool.release(self.connection)

    def abandon(self) -> None:
        """Drop the connection (replies may be left unread on it)."""
        self.connection.disconnect()
        self.pool.release(self.connection)

    def _read(self, n: int) -> None:
        connection = self.connection
        for _ in range(n):
            reply = connection.read_response()
            if isinstance(reply, redis.ResponseError):
                raise reply
