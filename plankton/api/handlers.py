"""How failures become HTTP error responses: the app's exception handlers (503, 404, 500)
and the 422s, in FastAPI's own shape, for checks pydantic cannot make.
"""

import json
import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from plankton.engine.connection import redact
from plankton.errors import ConnectionFailed, NotFoundError, ParamError

#: Named after the module these records came from before the split, so log filters still match.
log = logging.getLogger("plankton.api.app")

#: What 503 and 409 responses tell clients to wait before retrying (Retry-After, s).
RETRY_AFTER = 5


def add_error_handlers(app: FastAPI, url: str) -> None:
    """Answer Redis outages with 503 (and Retry-After), unknown names with 404, the rest 500."""

    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        reason = (
            redact(str(exc))
            if isinstance(exc, ConnectionFailed)
            else f"Redis at {redact(url)} is unavailable: {redact(str(exc))}"
        )
        log.warning("%s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(
            {"detail": reason}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)}
        )

    def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": "internal error; the API server's log has the details"}, status_code=500
        )

    app.add_exception_handler(redis.RedisError, unavailable)
    app.add_exception_handler(ConnectionFailed, unavailable)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(Exception, internal)


def invalid(
    loc: tuple[str | int, ...], kind: str, msg: str, value: Any = None
) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks pydantic cannot make (params, idempotency)."""
    return RequestValidationError(
        [{"type": kind, "loc": loc, "msg": msg, "input": _jsonable(value)}]
    )


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def param_error(exc: ParamError, field: str | None) -> RequestValidationError:
    """The 422 for a refused param, located at ``body.params.<field>`` when one is named."""
    loc = ("body", "params", field) if field else ("body", "params")
    return invalid(loc, "param_error", str(exc), exc.value)
