"""The HTTP API: create and follow DAG runs over HTTP (``plankton api``).

Why FastAPI (on Starlette, served by uvicorn): the contract promises an OpenAPI document and
422 errors that name the field. FastAPI derives both from the pydantic models of
:mod:`plankton.api.models` that also validate the requests, so the document cannot drift from
the code, and its ``detail[].loc`` error shape is one clients and tools already read. Starlette
alone would leave the schema and the validation to be written, and kept in step, by hand.
Routes are plain ``def`` functions, run in FastAPI's thread pool, so they use the same
blocking redis-py client as the rest of Plankton.

A request passes, outermost first: the token check (:class:`~.console.TokenAuth`, when a
token is set: the bearer header, or the console's cookie), the cross-site check
(:class:`~.console.OriginCheck`), the body-size limit (:class:`~.middleware.BodyLimit`), FastAPI's
validation, then the route, which validates params and the tree before it writes anything. So
no 4xx writes to Redis. This module builds the app and its routes; errors become responses in
:mod:`.handlers`, Idempotency-Key records live in :mod:`.idempotency`, and :mod:`.openapi`
finishes the document.
"""

import json
from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from plankton import __version__
from plankton.api import models
from plankton.api.console import OriginCheck, TokenAuth, add_console
from plankton.api.handlers import add_error_handlers, invalid, param_error
from plankton.api.idempotency import Idempotency, IdempotencyKey
from plankton.api.middleware import MAX_BODY_BYTES, BodyLimit
from plankton.api.openapi import document
from plankton.authoring.dag import Dag
from plankton.client import Client
from plankton.engine.connection import connect
from plankton.engine.transitions import Transitions
from plankton.errors import DagError, NotFoundError, ParamError, ResumeError, SerializationError
from plankton.operations import metrics
from plankton.settings import Settings, load
from plankton.states import RunStatus
from plankton.views import reading
from plankton.views.catalog import describe_dags

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

RunId = Annotated[str, Path(min_length=1, max_length=200)]


def create_app(
    settings: Settings | str | None = None, imports: Iterable[str] = (), token: str | None = None
) -> FastAPI:
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

    app = FastAPI(
        title="Plankton",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        description=_DESCRIPTION,
    )
    app.state.client = client
    add_error_handlers(app, settings.url)
    Routes(app, client, auth=bool(token)).add()
    add_metrics(app, client)
    add_console(app, client, token)
    document(app, bool(token))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(OriginCheck)
    if token:  # the bearer header, or the console's session cookie
        app.add_middleware(TokenAuth, token=token)  # added last: runs first
    return app


_DESCRIPTION = (
    "Create and follow Plankton DAG runs. Each DAG found in the server's imports has its own "
    "typed `POST /dags/<name>/runs`; `POST /dags/{dag}/runs` is the same for any name. "
    'Errors are `{"detail": "..."}`, or for 422 a list of `{loc, msg, type}` naming the '
    "field."
)


def add_metrics(app: FastAPI, client: Client) -> None:
    """``GET /metrics``: Prometheus text, read from Redis on each scrape
    (plankton.operations.metrics). Behind the bearer token like every route but /healthz; not
    in the OpenAPI document (it is not JSON)."""
    registry = metrics.registry_for(
        client.conn, client.registry.dags.values(), client.settings.heartbeat
    )

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.scrape(registry), media_type=metrics.CONTENT_TYPE)


def _client(settings: Settings) -> Client:
    """A client whose Redis calls give up after about a second (then the API answers 503).

    A CLI command may retry for several seconds; an HTTP caller has its own timeout and a
    Retry-After header to go by, so failing fast is the kinder answer.
    """
    client = Client(settings=settings, check_connection=False)
    client.conn.close()
    client.conn = connect(
        settings.url,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    )
    client.transitions = Transitions(client.conn)
    return client


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
        app.get(
            "/healthz",
            response_model=models.Health,
            tags=["health"],
            responses=self.errors(),
            operation_id="healthz",
            summary="Is Redis reachable? (never needs auth)",
        )(self.healthz)
        app.get(
            "/dags",
            response_model=list[models.DagInfo],
            tags=["dags"],
            responses=self.errors(),
            operation_id="list_dags",
            summary="The DAGs this server can run",
        )(self.dags)
        for dag in sorted(self.client.registry.dags.values(), key=lambda d: d.name):
            if set(dag.name) <= _PATH_SAFE:
                self.add_typed_create(dag)
        app.post(
            "/dags/{dag}/runs",
            status_code=201,
            response_model=models.RunCreated,
            tags=["runs"],
            responses=self.errors(400, 404, 409, 413),
            operation_id="create_run",
            summary="Start a run of any DAG by name",
        )(self.create_any)
        app.get(
            "/runs",
            response_model=models.RunPage,
            tags=["runs"],
            responses=self.errors(),
            operation_id="list_runs",
            summary="Recent runs, newest first",
        )(self.list_runs)
        app.get(
            "/runs/{run_id}",
            response_model=models.RunDetail,
            tags=["runs"],
            response_model_exclude_unset=True,  # `cursor`, `full`: only with `since`
            responses=self.errors(404),
            operation_id="get_run",
            summary="A run and its task tree (as `plankton show --json`), or with "
            "`since` only what changed",
        )(self.show)
        app.post(
            "/runs/{run_id}/rerun",
            status_code=201,
            response_model=models.RunCreated,
            tags=["runs"],
            operation_id="rerun_run",
            summary="Re-create a past run, optionally changing params",
            responses={
                **self.errors(400, 404, 409, 413),
                200: {"model": models.RerunPlan, "description": "dry_run=true: what would change"},
            },
        )(self.rerun)
        app.post(
            "/runs/{run_id}/cancel",
            response_model=models.CancelResult,
            tags=["runs"],
            responses=self.errors(400, 404, 413),
            operation_id="cancel_run",
            summary="Stop a run",
        )(self.cancel)

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

            def create(
                response: Response,
                body: Annotated[model, Body()],  # type: ignore[valid-type]
                idempotency_key: IdempotencyKey = None,
            ) -> dict[str, str]:
                return self.create(dag, body, idempotency_key, response)
        else:

            def create(  # type: ignore[misc]
                response: Response,
                body: Annotated[model | None, Body()] = None,  # type: ignore[valid-type]
                idempotency_key: IdempotencyKey = None,
            ) -> dict[str, str]:
                return self.create(dag, body or model(), idempotency_key, response)

        self.app.post(
            f"/dags/{dag.name}/runs",
            status_code=201,
            response_model=models.RunCreated,
            tags=["runs"],
            responses=self.errors(400, 409, 413),
            operation_id=f"create_run_{dag.name}",
            summary=f"Start a run of {dag.name}",
            description=dag.doc or None,
        )(create)

    def create_any(
        self,
        response: Response,
        dag: Annotated[str, Path(min_length=1, max_length=200)],
        body: Annotated[models.RunRequest | None, Body()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, str]:
        found = self.client.registry.dags.get(dag)
        if found is None:
            raise NotFoundError("DAG", dag, list(self.client.registry.dags))
        return self.create(found, body or models.RunRequest(), idempotency_key, response)

    def create(
        self, dag: Dag, body: models.RunRequest, key: str | None, response: Response
    ) -> dict[str, str]:
        given = models.given_params(dag, body)
        try:
            typed = dag.json_params(given)
        except ParamError as exc:
            raise param_error(exc, exc.param if exc.task == dag.name else None) from None

        def submit() -> str:
            try:
                return self.client.submit(dag, typed, body.since, body.to)
            except ParamError as exc:  # a task of the tree refused a value the DAG passed on
                raise param_error(exc, None) from None
            except (DagError, SerializationError) as exc:
                raise invalid(("body", "params"), "dag_error", str(exc), given) from None

        request = {"dag": dag.name, "params": given, "since": body.since, "to": body.to}
        run_id, replayed = self.idem.once(key, request, submit)
        return _created(response, run_id, replayed)

    # -- runs ---------------------------------------------------------------------------
    def list_runs(
        self,
        dag: Annotated[str | None, Query(max_length=200, description="Only this DAG.")] = None,
        status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 20,
        cursor: Annotated[
            str | None,
            Query(
                max_length=300,
                pattern=r"^[0-9]{1,16}:.+$",
                description="`next_cursor` of the previous page.",
            ),
        ] = None,
    ) -> dict[str, Any]:
        found, next_cursor = reading.page_runs(
            self.client.conn, dag, status.value if status else None, limit, cursor
        )
        return {"runs": found, "next_cursor": next_cursor}

    def show(
        self,
        run_id: RunId,
        since: Annotated[
            int | None,
            Query(
                ge=0,
                le=2**53,
                description="`cursor` of a previous read: return only the tasks "
                "changed since, and a new `cursor` (a delta read; 0: every task, and the cursor to "
                "follow from; see docs/api.md).",
            ),
        ] = None,
    ) -> Response:
        """Sent as it is read: the views are JSON-ready already, and checking a 10,000-task
        answer against the response model on the way out cost a third of the read. The
        schema stays declared; tests/api/test_schema.py checks answers against it."""
        if since is None:
            body = self.client.status(run_id)
        else:
            found = self.client.changes(run_id, since)
            body = {
                **found["run"],
                "cursor": found["cursor"],
                "full": found["full"],
                "tasks": found["tasks"],
            }
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    def cancel(self, run_id: RunId) -> dict[str, str]:
        return {"run_id": run_id, "status": self.client.cancel(run_id)}

    def rerun(
        self,
        response: Response,
        run_id: RunId,
        body: Annotated[models.RerunRequest | None, Body()] = None,
        dry_run: Annotated[
            bool, Query(description="Only say which tasks would change; submit nothing.")
        ] = False,
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        self.client.run_status(run_id)  # 404 before anything else
        req = body or models.RerunRequest()
        overrides, resume = req.params, req.from_failure
        texts = {name: _as_text(value) for name, value in overrides.items()}
        if dry_run:
            return JSONResponse(self._rerun(run_id, texts, True, resume), status_code=200)

        def submit() -> str:
            new_id: str = self._rerun(run_id, texts, False, resume)
            return new_id

        request = {"rerun_of": run_id, "params": overrides, "from_failure": resume}
        new_id, replayed = self.idem.once(idempotency_key, request, submit)
        return _created(response, new_id, replayed)

    def _rerun(
        self, run_id: str, texts: dict[str, str], dry_run: bool, from_failure: bool = False
    ) -> Any:
        try:
            return self.client.rerun(run_id, texts, dry_run=dry_run, from_failure=from_failure)
        except ResumeError as exc:  # succeeded, live, or values expired: the run's state
            raise HTTPException(409, str(exc)) from None
        except ParamError as exc:
            named = [f for f in (f"{exc.task}.{exc.param}", exc.param) if f in texts]
            raise param_error(exc, named[0] if named else None) from None
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
