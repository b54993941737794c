"""The one NOSCRIPT recovery: Redis forgets its scripts when it restarts, and a replica
promoted by a failover never had them (SCRIPT LOAD is not replicated).

A script called on its own goes through its registered ``Script`` object, which redis-py
loads again when Redis answers NOSCRIPT. A script sent in a pipeline (by its SHA, to save a
round trip) goes through :func:`execute`: on NOSCRIPT it loads the pipeline's scripts and
runs the pipeline once more. That is safe only for a pipeline whose other commands may run
twice (reads, de-duplicated writes); a transaction that wrote before its NOSCRIPT (the
client's submit) cannot be repeated: it calls :func:`load` and finishes its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.commands.core import Script


def load(conn: redis.Redis, *scripts: Script) -> None:
    """Load ``scripts`` into ``conn``'s Redis (the SHA stays the same: it is the body's)."""
    for script in scripts:
        script.sha = conn.script_load(script.script)


def execute(conn: redis.Redis, fill: Callable[[Any], None], *scripts: Script) -> list[Any]:
    """Run a non-transactional pipeline on ``conn`` that ``fill`` builds (EVALSHA of
    ``scripts`` among other commands); after a NOSCRIPT, load them and run it again once."""
    pipe = conn.pipeline(transaction=False)
    fill(pipe)
    try:
        replies: list[Any] = pipe.execute()
    except redis.exceptions.NoScriptError:
        load(conn, *scripts)
        pipe = conn.pipeline(transaction=False)
        fill(pipe)
        replies = pipe.execute()
    return replies
