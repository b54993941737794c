"""Redis Cluster hash slots: the slot of a key, and one short hash tag per slot.

Why: the per-run Lua scripts count metrics (``metrics``) in the same call as the transition
they count. On one Redis the counters are global keys; on a Redis Cluster a script may only
touch keys of one slot, its run's. So there a run's counters go to keys tagged with a short
string that hashes to the run's own slot (as BullMQ tags its queues' keys): one copy of the
counters per slot in use, summed at scrape time. The tag of a slot is the first string of
one to three characters of ``[0-9a-zA-Z]`` (shortest first) whose CRC16 lands on that slot;
every slot has one. The run records its tag in its hash (``mtag``) when it is created on a
Cluster, and the scripts read it there: a run created on one Redis has none and counts into
the global keys, exactly as before.
"""

from __future__ import annotations

import itertools
import string
from binascii import crc_hqx
from typing import Any

from plankton import keys

#: Hash slots of a Redis Cluster.
SLOTS = 16384

_ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase
_TAGS: list[str] = []


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key`` (CRC16-XMODEM of its hash tag, as Redis Cluster computes it)."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start > -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc_hqx(raw, 0) % SLOTS


def tag_of_slot(slot: int) -> str:
    """The short hash tag that lands on ``slot`` (the table is built once, ~0.1 s)."""
    if not _TAGS:
        table: list[str | None] = [None] * SLOTS
        left = SLOTS
        for size in (1, 2, 3):
            for chars in itertools.product(_ALPHABET, repeat=size):
                tag = "".join(chars)
                s = crc_hqx(tag.encode(), 0) % SLOTS
                if table[s] is None:
                    table[s] = tag
                    left -= 1
            if not left:
                break
        if left:  # pragma: no cover - 238,328 three-character tags cover every slot
            raise RuntimeError(f"{left} hash slots have no tag of 3 characters")
        _TAGS.extend(t for t in table if t is not None)
    return _TAGS[slot]


def run_tag(run_id: str) -> str:
    """The tag of the slot of run ``run_id``'s keys: its metric keys carry it on a Cluster."""
    return tag_of_slot(key_slot(keys.run(run_id)))


def is_cluster(conn: Any) -> bool:
    """True if ``conn`` is a Redis Cluster client (redis-py's ``RedisCluster``)."""
    from redis.cluster import RedisCluster

    return isinstance(conn, RedisCluster)
