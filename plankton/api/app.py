"""The HTTP API: create and follow DAG runs over HTTP (``plankton api``).

Why FastAPI (on Starlette, served by uvicorn): the contract promises an OpenAPI document and
422 errors that name the field. FastAPI derives both from the pydantic models of
:mod:`plankton.api.models` that also validate the requests, so the document cannot drift from
the code, and its ``detail[].loc`` error shape is one clients and tools already read. Starlette
alone would leave the schema and the validation to be written, and kept in step, by hand.
Routes are plain ``def`` functions, run in FastAPI's thread pool, so they use the same
blocking redis-py client as the rest of Plankton.

A request passes, outermost first: the bearer-token check (:class:`BearerAuth`, when a token
is set), the body-size limit (:class:`BodyLimit`), FastAPI's validation, then the route, which
validates params and the tree before it writes anything. So no 4xx writes to Redis.
"""

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn

import redis
from fastapi import Body, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .. import __version__, codec, keys, runs
from ..client import Client
from ..connection import connect, redact
from ..cron_info import describe_dags
from ..dag import Dag
from ..engine import Engine
from ..errors import ConnectionFailed, DagError, NotFoundError, ParamError, SerializationError
from ..params import INT_MAX, INT_MIN
from ..settings import Settings, load
from . import models
from .models import RunStatus

log = logging.getLogger(__name__)

#: Largest request body (bytes): 1 MiB. A larger one gets 413 before anything parses it.
MAX_BODY_BYTES = 1024 * 1024
#: How long an Idempotency-Key replays its run (s): 24 h.
IDEMPOTENCY_TTL = 24 * 3600
#: How long a key is held while its run is being created (s); a crash mid-way frees it.
IDEMPOTENCY_PENDING_TTL = 60
#: What 503 and 409 responses tell clients to wait before retrying (Retry-After, s).
RETRY_AFTER = 5
#: Path segments a DAG name may use to get its own typed route (others use the generic one).
_PATH_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

_ERRORS = {
    400: "The body cannot be read (not UTF-8, or a bad Content-Length).",
    401: "Missing or wrong bearer token (only when PLANKTON_API_TOKEN is set).",
    404: "Unknown DAG or run.",
    409: "The Idempotency-Key's request is still being processed (retry shortly), or the "
         "run cannot be re-created with today's code.",
    413: "Request body over 1 MiB.",
    503: "Redis is unreachable.",
}

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Any printable ASCII string (a UUID is a good choice). A retried request with "
                "the same key and body returns the same run_id for 24 h and starts no second run.",
)]
RunId = Annotated[str, Path(min_length=1, max_length=200)]


def create_app(settings: Settings | str | None = None, imports: Iterable[str] = (),
               token: str | None = None) -> FastAPI:
    """The API app for a Redis URL (or Settings) and the DAG modules to serve.

    ``token``: when set, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
    Nothing here reads the environment: ``serve`` resolves the token and settings.
    """
    if not isinstance(settings, Settings):
        settings = load(url=settings, imports=tuple(imports))
    elif imports:
        settings = settings.with_(imports=tuple(imports))
    client = _client(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        client.close()

    app = FastAPI(title="Plankton", version=__version__, lifespan=lifespan,
                  redirect_slashes=False, description=_DESCRIPTION)
    app.state.client = client
    _add_error_handlers(app, settings.url)
    Routes(app, client, auth=bool(token)).add()
    _document(app, bool(token))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if token:
        app.add_middleware(BearerAuth, token=token)  # added last: runs first
    return app


_DESCRIPTION = (
    "Create and follow Plankton DAG runs. Each DAG found in the server's imports has its own "
    "typed `POST /dags/<name>/runs`; `POST /dags/{dag}/runs` is the same for any name. "
    "Errors are `{\"detail\": \"...\"}`, or for 422 a list of `{loc, msg, type}` naming the "
    "field."
)


def _client(settings: Settings) -> Client:
    """A client whose Redis calls give up after about a second (then the API answers 503).

    A CLI command may retry for several seconds; an HTTP caller has its own timeout and a
    Retry-After header to go by, so failing fast is the kinder answer.
    """
    client = Client(settings=settings, check_connection=False)
    client.conn.close()
    client.conn = connect(settings.url, socket_connect_timeout=2, socket_timeout=10,
                          retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2))
    client.engine = Engine(client.conn)
    return client


# -- errors ---------------------------------------------------------------------------------
def _add_error_handlers(app: FastAPI, url: str) -> None:
    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        reason = redact(str(exc)) if isinstance(exc, ConnectionFailed) else \
            f"Redis at {redact(url)} is unavailable: {redact(str(exc))}"
        log.warning("%s %s: %s", request.method, request.url.path, reason)
        return JSONResponse({"detail": reason}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER)})

    def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; the API server's log has the details"},
                            status_code=500)

    app.add_exception_handler(redis.RedisError, unavailable)
    app.add_exception_handler(ConnectionFailed, unavailable)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(Exception, internal)


def invalid(loc: tuple[str | int, ...], kind: str, msg: str, value: Any = None
            ) -> RequestValidationError:
    """A 422 in FastAPI's own shape, for checks pydantic cannot make (params, idempotency)."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg,
                                    "input": _jsonable(value)}])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _param_error(exc: ParamError, field: str | None) -> RequestValidationError:
    loc = ("body", "params", field) if field else ("body", "params")
    return invalid(loc, "param_error", str(exc), exc.value)


# -- idempotency ----------------------------------------------------------------------------
class Idempotency:
    """Idempotency-Key records: ``keys.idempotency(K)`` -> msgpack [run id or None, fingerprint].

    A key is claimed with SET NX for a short while, then holds the run id for 24 h. The
    fingerprint (of the request) tells a retry from a different request reusing the key.
    """

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    def once(self, key: str | None, request: dict[str, Any], submit: Callable[[], str]
             ) -> tuple[str, bool]:
        """Call ``submit`` at most once per key; returns (run id, whether it was a replay)."""
        if key is None:
            return submit(), False
        fingerprint = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        found = self.lookup(key, fingerprint)
        if found is not None:
            return found, True
        name = keys.idempotency(key)
        if not self.conn.set(name, codec.dumps([None, fingerprint]), nx=True,
                             ex=IDEMPOTENCY_PENDING_TTL):
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
        run_id, stored = codec.loads(raw)
        if stored != fingerprint:
            raise invalid(("header", "Idempotency-Key"), "idempotency_key_reused",
                          "this Idempotency-Key was used for a different request in the last "
                          "24 h; send a new key for a new request", key)
        if not run_id or not self.conn.exists(keys.run(run_id)):
            self._busy()
        return run_id

    @staticmethod
    def _busy() -> NoReturn:
        raise HTTPException(409, "a request with this Idempotency-Key is still being "
                            "processed; retry shortly", headers={"Retry-After": "1"})

    def _release(self, name: str) -> None:
        try:
            self.conn.delete(name)
        except redis.RedisError:  # the pending claim expires by itself
            pass


# -- routes ---------------------------------------------------------------------------------
class Routes:
    """Adds the API's routes to an app; one method per route."""

    def __init__(self, app: FastAPI, client: Client, auth: bool) -> None:
        self.app, self.client, self.auth = app, client, auth
        self.idem = Idempotency(client.conn)

    def errors(self, *codes: int) -> dict[int | str, dict[str, Any]]:
        wanted = [*codes, 503] + ([401] if self.auth else [])
        return {c: {"model": models.ErrorMessage, "description": _ERRORS[c]} for c in wanted}

    def add(self) -> None:
        app = self.app
        app.get("/healthz", response_model=models.Health, tags=["health"],
                responses=self.errors(), operation_id="healthz",
                summary="Is Redis reachable? (never needs auth)")(
            self.healthz)
        app.get("/dags", response_model=list[models.DagInfo], tags=["dags"],
                responses=self.errors(), operation_id="list_dags",
                summary="The DAGs this server can run")(self.dags)
        for dag in sorted(self.client.registry.dags.values(), key=lambda d: d.name):
            if set(dag.name) <= _PATH_SAFE:
                self.add_typed_create(dag)
        app.post("/dags/{dag}/runs", status_code=201, response_model=models.RunCreated,
                 tags=["runs"], responses=self.errors(400, 404, 409, 413),
                 operation_id="create_run", summary="Start a run of any DAG by name")(
            self.create_any)
        app.get("/runs", response_model=models.RunPage, tags=["runs"],
                responses=self.errors(), operation_id="list_runs",
                summary="Recent runs, newest first")(self.list_runs)
        app.get("/runs/{run_id}", response_model=models.RunDetail, tags=["runs"],
                responses=self.errors(404), operation_id="get_run",
                summary="A run and its task tree (as `plankton show --json`)")(self.show)
        app.post("/runs/{run_id}/rerun", status_code=201, response_model=models.RunCreated,
                 tags=["runs"], operation_id="rerun_run",
                 summary="Re-create a past run, optionally changing params",
                 responses={**self.errors(400, 404, 409, 413),
                            200: {"model": models.RerunPlan,
                                  "description": "dry_run=true: what would change"}})(
            self.rerun)
        app.post("/runs/{run_id}/cancel", response_model=models.CancelResult, tags=["runs"],
                 responses=self.errors(400, 404, 413), operation_id="cancel_run",
                 summary="Stop a run")(self.cancel)

    def healthz(self) -> dict[str, str]:
        self.client.conn.ping()
        return {"status": "ok", "redis": "ok"}

    def dags(self) -> list[dict[str, Any]]:
        out = describe_dags(self.client)
        for info in out:
            dag = self.client.registry.dags[info["name"]]
            for name, param in info["params"].items():
                param["json_schema"] = models.param_schema(dag, name)
        return out

    # -- run creation -------------------------------------------------------------------
    def add_typed_create(self, dag: Dag) -> None:
        """``POST /dags/<name>/runs`` with a body model listing exactly this DAG's params."""
        model = models.run_request_model(dag)

        if any(p.required for p in dag.params.values()):
            def create(response: Response, body: Annotated[model, Body()],
                       idempotency_key: IdempotencyKey = None) -> dict[str, str]:
                return self.create(dag, body, idempotency_key, response)
        else:
            def create(response: Response,  # type: ignore[misc]
                       body: Annotated[model | None, Body()] = None,
                       idempotency_key: IdempotencyKey = None) -> dict[str, str]:
                return self.create(dag, body or model(), idempotency_key, response)

        self.app.post(f"/dags/{dag.name}/runs", status_code=201,
                      response_model=models.RunCreated, tags=["runs"],
                      responses=self.errors(400, 409, 413), operation_id=f"create_run_{dag.name}",
                      summary=f"Start a run of {dag.name}", description=dag.doc or None)(create)

    def create_any(self, response: Response,
                   dag: Annotated[str, Path(min_length=1, max_length=200)],
                   body: Annotated[models.RunRequest | None, Body()] = None,
                   idempotency_key: IdempotencyKey = None) -> dict[str, str]:
        found = self.client.registry.dags.get(dag)
        if found is None:
            raise NotFoundError("DAG", dag, list(self.client.registry.dags))
        return self.create(found, body or models.RunRequest(), idempotency_key, response)

    def create(self, dag: Dag, body: models.RunRequest, key: str | None,
               response: Response) -> dict[str, str]:
        given = models.given_params(dag, body)
        try:
            typed = dag.json_params(given)
        except ParamError as exc:
            raise _param_error(exc, exc.param if exc.task == dag.name else None) from None

        def submit() -> str:
            try:
                return self.client.submit(dag, typed, body.since, body.to)
            except ParamError as exc:  # a task of the tree refused a value the DAG passed on
                raise _param_error(exc, None) from None
            except (DagError, SerializationError) as exc:
                raise invalid(("body", "params"), "dag_error", str(exc), given) from None

        request = {"dag": dag.name, "params": given, "since": body.since, "to": body.to}
        run_id, replayed = self.idem.once(key, request, submit)
        return _created(response, run_id, replayed)

    # -- runs ---------------------------------------------------------------------------
    def list_runs(
        self,
        dag: Annotated[str | None, Query(max_length=200, description="Only this DAG.")] = None,
        status: Annotated[RunStatus | None, Query(description="Only runs in this status.")]
        = None,
        limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 20,
        cursor: Annotated[str | None, Query(
            max_length=300, pattern=r"^[0-9]{1,16}:.+$",
            description="`next_cursor` of the previous page.")] = None,
    ) -> dict[str, Any]:
        found, next_cursor = page_runs(self.client.conn, dag, status.value if status else None,
                                       limit, cursor)
        return {"runs": found, "next_cursor": next_cursor}

    def show(self, run_id: RunId) -> dict[str, Any]:
        return self.client.status(run_id)

    def cancel(self, run_id: RunId) -> dict[str, str]:
        return {"run_id": run_id, "status": self.client.cancel(run_id)}

    def rerun(self, response: Response, run_id: RunId,
              body: Annotated[models.RerunRequest | None, Body()] = None,
              dry_run: Annotated[bool, Query(description="Only say which tasks would change; "
                                             "submit nothing.")] = False,
              idempotency_key: IdempotencyKey = None) -> Any:
        self.client.run_status(run_id)  # 404 before anything else
        overrides = (body or models.RerunRequest()).params
        texts = {name: _as_text(value) for name, value in overrides.items()}
        if dry_run:
            return JSONResponse(self._rerun(run_id, texts, True), status_code=200)

        def submit() -> str:
            return self._rerun(run_id, texts, False)

        request = {"rerun_of": run_id, "params": overrides}
        new_id, replayed = self.idem.once(idempotency_key, request, submit)
        return _created(response, new_id, replayed)

    def _rerun(self, run_id: str, texts: dict[str, str], dry_run: bool) -> Any:
        try:
            return self.client.rerun(run_id, texts, dry_run=dry_run)
        except ParamError as exc:
            named = [f for f in (f"{exc.task}.{exc.param}", exc.param) if f in texts]
            raise _param_error(exc, named[0] if named else None) from None
        except NotFoundError as exc:
            if exc.kind == "run":
                raise
            if exc.kind == "task family":  # the recorded code is gone: not the body's fault
                raise HTTPException(409, f"cannot re-create run {run_id}: {exc}") from None
            raise invalid(("body", "params"), "not_found", str(exc), exc.name) from None
        except (DagError, SerializationError) as exc:
            raise invalid(("body", "params"), "dag_error", str(exc)) from None


def _created(response: Response, run_id: str, replayed: bool) -> dict[str, str]:
    response.headers["Location"] = f"/runs/{run_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return {"run_id": run_id}


def _as_text(value: Any) -> str:
    """A JSON override as the text ``--param TASK.PARAM=V`` would give (strings as they are)."""
    if isinstance(value, float) and value.is_integer():  # JSON's 3.0 is 3: an int param takes it
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value)


def page_runs(conn: redis.Redis, dag: str | None, status: str | None, limit: int,
              cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of runs, newest first, and the cursor of the next page (None on the last).

    The cursor is ``<submitted ms>:<run id>`` of the page's last run: runs submitted in the
    same millisecond are ordered by id, so none is skipped or repeated at a page boundary,
    and runs submitted meanwhile do not shift later pages.
    """
    index = keys.dag_runs(dag) if dag else keys.RUNS
    top: str | int = "+inf"
    after = None
    if cursor is not None:
        ms, after = cursor.split(":", 1)
        top = int(ms)
    found: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    offset = 0
    while len(found) <= limit:
        rows = conn.zrevrangebyscore(index, top, "-inf", start=offset, num=max(limit * 2, 50),
                                     withscores=True)
        if not rows:
            break
        offset += len(rows)
        for member, score in rows:
            run_id = member.decode()
            if run_id in seen or (after is not None and int(score) == top and run_id >= after):
                continue
            seen.add(run_id)
            run = runs.read_run(conn, run_id)
            if run is not None and (status is None or run["status"] == status):
                found.append((int(score), run))
                if len(found) > limit:
                    break
    page = found[:limit]
    more = len(found) > limit
    return [run for _, run in page], (f"{page[-1][0]}:{page[-1][1]['run_id']}" if more else None)


# -- middleware -----------------------------------------------------------------------------
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
        reply = JSONResponse({"detail": "missing or wrong bearer token: send the header "
                              "'Authorization: Bearer <PLANKTON_API_TOKEN>'"},
                             status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await reply(scope, receive, send)

    def allowed(self, scope: dict[str, Any]) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(),
                                                                           self.token)
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
        detail = (f"request body is over the limit of {self.max_bytes} bytes (1 MiB)"
                  if status == 413 else "bad Content-Length header")
        await JSONResponse({"detail": detail}, status_code=status,
                           headers={"Connection": "close"})(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect

    return replayed


# -- OpenAPI --------------------------------------------------------------------------------
#: What a client can do with the run_id of a 201 (OpenAPI links; also guide stateful fuzzers).
_RUN_LINKS = {
    name: {"operationId": op, "parameters": {"run_id": "$response.body#/run_id"},
           "description": text}
    for name, op, text in [("GetRun", "get_run", "Follow the new run."),
                           ("CancelRun", "cancel_run", "Stop it."),
                           ("RerunRun", "rerun_run", "Re-create it.")]
}


def _document(app: FastAPI, auth: bool) -> None:
    """Finish /openapi.json: run links, exact integer bounds, and the bearer scheme if any."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for path in schema["paths"].values():
                created = path.get("post", {}).get("responses", {}).get("201")
                if created is not None:
                    created["links"] = _RUN_LINKS
            if auth:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer",
                               "description": "The value of PLANKTON_API_TOKEN."}}
                schema["security"] = [{"bearer": []}]
                schema["paths"]["/healthz"]["get"]["security"] = []
            app.openapi_schema = _exact_bounds(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


#: FastAPI's OpenAPI model stores minimum/maximum as floats; float(2**64 - 1) is 2**64.
_INT_BOUNDS = {float(INT_MIN): INT_MIN, float(INT_MAX): INT_MAX}


def _exact_bounds(node: Any) -> Any:
    """Put back the exact msgpack integer bounds that became floats on the way."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("minimum", "maximum") and isinstance(value, float) \
                    and value in _INT_BOUNDS:
                node[key] = _INT_BOUNDS[value]
            else:
                _exact_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _exact_bounds(item)
    return node
