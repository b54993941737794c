"""Idempotency keys: a retried run-creating request with the same key starts no second run.

The ``Idempotency-Key`` request header, and the Redis records that remember each key's run.
"""

import json
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import redis
from fastapi import Header, HTTPException

from plankton import codec, keys
from plankton.api.handlers import invalid

#: How long an Idempotency-Key replays its run (s): 24 h.
IDEMPOTENCY_TTL = 24 * 3600
#: How long a key is held while its run is being created (s); a crash mid-way frees it.
IDEMPOTENCY_PENDING_TTL = 60

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any printable ASCII string (a UUID is a good choice). A retried request with "
        "the same key and body returns the same run_id for 24 h and starts no second run.",
    ),
]


class Idempotency:
    """Idempotency-Key records: ``keys.idempotency(K)`` -> msgpack [run id or None, fingerprint].

    A key is claimed with SET NX for a short while, then holds the run id for 24 h. The
    fingerprint (of the request) tells a retry from a different request reusing the key.
    """

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def once(
        self, key: str | None, request: dict[str, Any], submit: Callable[[], str]
    ) -> tuple[str, bool]:
        """Call ``submit`` at most once per key; returns (run id, whether it was a replay)."""
        if key is None:
            return submit(), False
        fingerprint = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        found = self.lookup(key, fingerprint)
        if found is not None:
            return found, True
        name = keys.idempotency(key)
        if not self.conn.set(
            name, codec.dumps([None, fingerprint]), nx=True, ex=IDEMPOTENCY_PENDING_TTL
        ):
            return self.lookup(key, fingerprint) or self._busy(), True
        try:
            run_id = submit()
        except BaseException:
            self._release(name)
            raise
        self.conn.set(name, codec.dumps([run_id, fingerprint]), ex=IDEMPOTENCY_TTL)
        return run_id, False

    def lookup(self, key: str, fingerprint: str) -> str | None:
        raw = self.conn.get(keys.idempotency(key))
        if raw is None:
            return None
        run_id: str | None
        run_id, stored = codec.loads(raw)
        if stored != fingerprint:
            raise invalid(
                ("header", "Idempotency-Key"),
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request in the last "
                "24 h; send a new key for a new request",
                key,
            )
        if not run_id or not self.conn.exists(keys.run(run_id)):
            self._busy()
        return run_id

    @staticmethod
    def _busy() -> NoReturn:
        raise HTTPException(
            409,
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )

    def _release(self, name: str) -> None:
        try:
            self.conn.delete(name)
        except redis.RedisError:  # the pending claim expires by itself
            pass
