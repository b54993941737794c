"""ASGI middleware of the HTTP API: the bearer-token check and the request-body size limit.

Both run before routing and body parsing (``create_app`` adds them, bearer check outermost),
so a refused request reaches no route code and writes nothing to Redis.
"""

import hmac
from typing import Any

from fastapi.responses import JSONResponse

#: Largest request body (bytes): 1 MiB. A larger one gets 413 before anything parses it.
MAX_BODY_BYTES = 1024 * 1024


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` (constant-time compare).

    Runs before routing and body parsing, so an unauthenticated caller learns nothing about
    the routes or its input, and no route code runs. ``/healthz`` stays open for probes.
    """

    OPEN_PATHS = frozenset({"/healthz"})

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        reply = JSONResponse(
            {
                "detail": "missing or wrong bearer token: send the header "
                "'Authorization: Bearer <PLANKTON_API_TOKEN>'"
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await reply(scope, receive, send)

    def allowed(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self.token
                )
        return False


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by Content-Length or as it streams.

    The body is read here (at most ``max_bytes``) and handed on whole, so a chunked upload
    without Content-Length cannot grow past the limit either.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.refuse(scope, receive, send, 413 if declared.isdigit() else 400)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self.refuse(scope, receive, send, 413)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(scope, _replay(body, receive), send)

    async def refuse(self, scope: dict[str, Any], receive: Any, send: Any, status: int) -> None:
        detail = (
            f"request body is over the limit of {self.max_bytes} bytes (1 MiB)"
            if status == 413
            else "bad Content-Length header"
        )
        await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(
            scope, receive, send
        )


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()  # after the body: wait for the disconnect
        return message

    return replayed
