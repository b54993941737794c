"""Who may use the console: the token cookie, and the origin check on every action.

With ``PLANKTON_API_TOKEN`` set, a browser cannot send ``Authorization: Bearer``, so the
login page (:mod:`.pages`) asks for the token once and sets a cookie holding an HMAC of it
(not the token itself): HttpOnly, so page scripts cannot read it, and SameSite=Strict, so no
other site's page can make the browser send it. :class:`TokenAuth` accepts that cookie or the
bearer header; a console page without either redirects to the login page, every other route
answers 401 as before. A request that changes something (any method but GET/HEAD/OPTIONS)
authenticated by the cookie must also carry an ``Origin`` (or ``Referer``) naming this
server. Without a token the API binds only to loopback (``serve``), and
:class:`OriginCheck` still refuses a cross-site action: a page on another site could
otherwise post a form to ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi.responses import JSONResponse, RedirectResponse

from plankton.api.middleware import BearerAuth

#: The console's session cookie.
COOKIE = "plankton_session"
#: Methods that change nothing (no origin check).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths open without a token: the health probe, the login page, the console's assets.
OPEN_PATHS = frozenset({"/healthz", "/ui/login"})
OPEN_PREFIXES = ("/ui/static/",)


def session_value(token: str) -> str:
    """The cookie's value: an HMAC of the token, so a leaked cookie does not leak the token
    (a bearer header still needs the token itself)."""
    return hmac.new(token.encode(), b"plankton console session v1", hashlib.sha256).hexdigest()


def is_console_page(path: str) -> bool:
    """Paths of HTML pages (redirected to the login page rather than answered 401)."""
    return path == "/" or path.startswith("/ui/")


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _cookie(scope: dict[str, Any], name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def same_origin(scope: Mapping[str, Any], required: bool) -> bool:
    """True iff the request's Origin (else Referer) names the host it was sent to; with no
    such header, ``not required`` (scripts and curl send none; browsers always do on POST)."""
    given = _header(scope, b"origin") or _header(scope, b"referer")
    if given is None or given == b"null":
        return not required and given is None
    host = _header(scope, b"host")
    origin = urlsplit(given.decode("latin-1"))
    return (
        host is not None
        and origin.netloc == host.decode("latin-1")
        and origin.scheme in ("http", "https")
    )


async def _refuse_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await JSONResponse(
        {
            "detail": "refused: this request changes something and came from "
            "another site (its Origin is not this server)"
        },
        status_code=403,
    )(scope, receive, send)


class OriginCheck:
    """ASGI middleware: 403 for an action whose Origin/Referer names another site."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and not same_origin(scope, required=False)
        ):
            await _refuse_origin(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenAuth(BearerAuth):
    """ASGI middleware: the bearer header or the console's session cookie (see module doc)."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app, token)
        self.session = session_value(token).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if self.has_session(scope):
            if scope["method"] not in SAFE_METHODS and not same_origin(scope, required=True):
                await _refuse_origin(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if is_console_page(path) and scope["method"] in SAFE_METHODS:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + ("?" + query if query else "")
            await RedirectResponse("/ui/login?next=" + quote(target, safe=""), status_code=303)(
                scope, receive, send
            )
            return
        await super().__call__(scope, receive, send)

    def has_session(self, scope: dict[str, Any]) -> bool:
        given = _cookie(scope, COOKIE)
        return given is not None and hmac.compare_digest(given.encode(), self.session)
