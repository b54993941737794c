"""Scheduler leadership: a lease in Redis plus a fencing epoch.

Several schedulers may run; one leads at a time. The lease (``SET leader token NX PX``,
renewed by compare-and-``PEXPIRE``) keeps the others idle, but a lease alone cannot make writes
safe: a leader that pauses (GC, SIGSTOP, a slow network) past its lease still believes it
leads when it wakes. So each new leadership also ``INCR``\\s an epoch in the same script, and
every scheduler write script first checks that the epoch it was given is still the current one
(``scripts.FENCE_CHECK``). Redis runs scripts one at a time, so once a new leader has its epoch no
write carrying an older epoch can land. The lease is an efficiency measure; the fence gives
correctness (RELIABILITY.md section 4).

Lease times are Redis server time (``PX``), never the local clock. Tokens must be unique per
scheduler process (a uuid4, for example): two processes with the same token would share the
lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

from plankton.engine import scripts
from plankton.errors import Fenced
from plankton.keys import LEADER, LEADER_EPOCH

#: Default lease of the leader key (ms); the leader should renew several times per lease.
LEASE_MS = 5_000


class Leadership:
    """One scheduler's claim to lead, identified by ``token``.

    Call ``acquire_or_renew`` every fraction of ``lease_ms`` (a third is usual). While it
    returns an epoch, this process leads and passes that epoch to every write script; when it
    returns None (or raises), stop leading at once. ``epoch`` mirrors the last answer.
    """

    def __init__(self, conn: redis.Redis, token: str, lease_ms: int = LEASE_MS) -> None:
        if not token:
            raise ValueError("a leadership token must be a non-empty string")
        if lease_ms <= 0:
            raise ValueError(f"lease_ms must be positive, got {lease_ms}")
        self.conn, self.token, self.lease_ms = conn, token, lease_ms
        self.epoch: int | None = None
        self._acquire = conn.register_script(scripts.LEADER_ACQUIRE_OR_RENEW)
        self._release = conn.register_script(scripts.LEADER_RELEASE)

    def __repr__(self) -> str:
        return f"Leadership(token={self.token!r}, epoch={self.epoch})"

    def acquire_or_renew(self) -> int | None:
        """The fencing epoch if this token now leads, else None.

        A new epoch means a new term (this token had lost the lease, even if nobody else
        took it): work begun under the old epoch is fenced and must be restarted.
        """
        self.epoch = None  # if the call raises, we must not believe we still lead
        answer = self._acquire(keys=[LEADER, LEADER_EPOCH], args=[self.token, self.lease_ms])
        self.epoch = None if answer is None else int(answer)
        return self.epoch

    def release(self) -> None:
        """Give up the lease if this token holds it, so a standby can take over at once."""
        self.epoch = None
        self._release(keys=[LEADER], args=[self.token])


#: Scripts built by ``fenced_call``, by body: registered once, run on any connection.
_FENCED_SCRIPTS: dict[str, Script] = {}


def fenced_call(
    conn: redis.Redis, epoch: int, script_body: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run the Lua ``script_body`` only if ``epoch`` is still the leader epoch; return its reply.

    The check and the body run in one script, so no new leader can appear between them.
    The body sees its own ``keys`` and ``args`` as KEYS and ARGV. Raises ``Fenced`` if the
    epoch moved on.
    """
    script = _FENCED_SCRIPTS.get(script_body)
    if script is None:
        script = _FENCED_SCRIPTS[script_body] = conn.register_script(
            scripts.FENCED_PRELUDE + script_body
        )
    try:
        return script(keys=[LEADER_EPOCH, *keys], args=[epoch, *args], client=conn)
    except redis.ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise Fenced(f"scheduler at leader epoch {epoch}", str(exc)) from exc
        raise
