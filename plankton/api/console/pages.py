"""The console's routes: the HTML pages (runs, run, DAGs, workers, login) and the two small
JSON reads the pages need beside the API (a log tail, a backfill).

Pages are rendered on the server from the same records the API returns; a run page then
follows the run with the API's own delta read (``GET /runs/{id}?since=CURSOR``) from
``static/run.js``. Actions (trigger, cancel, rerun) are posted by the pages' scripts to the
API's own routes, so they run the same code and give the same errors. A page that cannot be
built (Redis down, unknown run) renders a short message with the right status, never a
traceback.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import inspect
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import redis
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from plankton import __version__
from plankton.api import models
from plankton.api.console import views
from plankton.api.console.auth import COOKIE, same_origin, session_value
from plankton.client import Client
from plankton.engine.connection import redact as redact_url
from plankton.errors import ConnectionFailed, NotFoundError, PlanktonError
from plankton.states import RUN_ENDED, TASK_FINAL, RunStatus
from plankton.views import reading, redact
from plankton.views.catalog import describe_dags

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Runs per page of the runs table.
PAGE_SIZE = 25
STATUSES = [s.value for s in RunStatus]


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters["duration"] = views.human_duration
    env.filters["clock"] = _clock
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    env.globals["version"] = __version__
    # the one list of ended states (plankton.states), handed to run.js as data attributes
    env.globals["run_ended"] = sorted(RUN_ENDED)
    env.globals["task_final"] = sorted(TASK_FINAL)
    return templates


def _clock(iso: str | None) -> str:
    """``2026-12-05 08:01:02`` (UTC) from an ISO time; '' for None."""
    if not iso:
        return ""
    at = _dt.datetime.fromisoformat(iso).astimezone(_dt.timezone.utc)
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _local_path(target: str | None) -> str:
    """Where a login may send the browser back to: a path on this server, else ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class Console:
    """Adds the console's routes to the API app (see the module doc)."""

    def __init__(self, app: FastAPI, client: Client, token: str | None) -> None:
        self.app, self.client, self.token = app, client, token
        self.templates = _templates()

    # -- plumbing -------------------------------------------------------------------------
    def add(self) -> None:
        app = self.app
        app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static")
        for path, route in (
            ("/", self.runs_page),
            ("/ui/runs/{run_id}", self.run_page),
            ("/ui/dags", self.dags_page),
            ("/ui/workers", self.workers_page),
            ("/ui/login", self.login_page),
        ):
            app.get(path, include_in_schema=False, response_class=HTMLResponse)(route)
        app.post("/ui/login", include_in_schema=False)(self.login)
        app.post("/ui/logout", include_in_schema=False)(self.logout)
        app.get("/ui/runs/{run_id}/logs", include_in_schema=False)(self.logs)
        app.post("/ui/dags/{dag}/backfill", include_in_schema=False)(self.backfill)

    def render(self, request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("auth", self.token is not None)
        context.setdefault("nav", "")
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    def page(
        self, request: Request, name: str, build: Callable[[], dict[str, Any]], nav: str = ""
    ) -> HTMLResponse:
        """Render ``name`` with what ``build`` reads; a Redis outage or unknown name renders
        the error page instead (503 / 404), with a message and no traceback."""
        try:
            context = build()
        except (redis.RedisError, ConnectionFailed) as exc:
            reason = redact_url(str(exc))
            log.warning("console %s: Redis unavailable: %s", request.url.path, reason)
            return self.render(
                request,
                "error.html",
                503,
                nav=nav,
                title="Redis is unavailable",
                message=f"Redis at {redact_url(self.client.settings.url)} cannot "
                f"be reached ({reason}). The page will work again once Redis "
                "is back; reload it then.",
            )
        except NotFoundError as exc:
            return self.render(
                request, "error.html", 404, nav=nav, title="Not found", message=str(exc)
            )
        return self.render(request, name, nav=nav, **context)

    # -- pages ----------------------------------------------------------------------------
    def runs_page(
        self,
        request: Request,
        dag: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[str | None, Query(max_length=20)] = None,
        cursor: Annotated[str | None, Query(max_length=300, pattern=r"^[0-9]{1,16}:.+$")] = None,
    ) -> HTMLResponse:
        dag = dag or None
        status = status if status in STATUSES else None

        def build() -> dict[str, Any]:
            found, next_cursor = reading.page_runs(self.client.conn, dag, status, PAGE_SIZE, cursor)
            names = sorted(self.client.registry.dags)
            strips = views.history(self.client.conn, [dag] if dag else names)
            return {
                "runs": [views.run_row(r) for r in found],
                "next_cursor": next_cursor,
                "dag": dag,
                "status": status,
                "dags": names,
                "statuses": STATUSES,
                "strips": strips,
                "first_page": cursor is None,
                "live": any(r["status"] not in RUN_ENDED for r in found),
            }

        return self.page(request, "runs.html", build, nav="runs")

    def run_page(self, request: Request, run_id: str) -> HTMLResponse:
        def build() -> dict[str, Any]:
            run = reading.read_run(self.client.conn, run_id)
            if run is None:
                raise NotFoundError("run", run_id)
            return {
                "run": views.run_row(run),
                "ended": run["status"] in RUN_ENDED,
                "rerun_of": run.get("rerun_of"),
                "can_resume": self.can_resume(),
            }

        return self.page(request, "run.html", build, nav="runs")

    def can_resume(self) -> bool:
        """Whether this Plankton can resume a run from its failure (issue 15)."""
        return "from_failure" in inspect.signature(self.client.rerun).parameters

    def dags_page(self, request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            found = describe_dags(self.client)
            for info in found:
                dag = self.client.registry.dags[info["name"]]
                for name, param in info["params"].items():
                    param["json_schema"] = models.param_schema(dag, name)
                    param["shown_default"] = _form_text(param.get("default"))
                    param["form_kind"] = _form_kind(param["json_schema"])
            strips = views.history(self.client.conn, [d["name"] for d in found], 15)
            return {"dags": found, "strips": strips}

        return self.page(request, "dags.html", build, nav="dags")

    def workers_page(self, request: Request) -> HTMLResponse:
        def build() -> dict[str, Any]:
            return views.workers(self.client.conn, self.client.settings.heartbeat)

        return self.page(request, "workers.html", build, nav="workers")

    # -- login ----------------------------------------------------------------------------
    def login_page(
        self, request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        if self.token is None:
            return RedirectResponse(_local_path(next), status_code=303)
        return self.render(request, "login.html", next=_local_path(next), error=None)

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        target = _local_path((form.get("next") or ["/"])[0])
        if not same_origin(request.scope, required=True):
            return self.render(
                request,
                "login.html",
                403,
                next=target,
                error="refused: the form was not sent from this server's page",
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return self.render(
                request,
                "login.html",
                401,
                next=target,
                error="wrong token: give the value of PLANKTON_API_TOKEN that "
                "the API server was started with",
            )
        reply = RedirectResponse(target, status_code=303)
        reply.set_cookie(
            COOKIE,
            session_value(self.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return reply

    def logout(self) -> Response:
        reply = RedirectResponse("/ui/login" if self.token else "/", status_code=303)
        reply.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return reply

    # -- JSON the pages read beside the API -----------------------------------------------
    def logs(
        self,
        run_id: str,
        task: Annotated[str | None, Query(max_length=20)] = None,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        status = self.client.run_status(run_id)  # 404 for an unknown run
        found = views.tail_logs(self.client.conn, run_id, task or None, after)
        return {**found, "ended": status in RUN_ENDED}

    def backfill(self, dag: str, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        """Start ``Client.backfill`` (what ``plankton backfill`` runs) in the background: it
        waits for the DAG's ``max_active_runs`` between submissions. Answers 202 with the
        number of intervals, or 422 naming the field."""
        found = self.client.registry.dags.get(dag)
        if found is None:
            raise NotFoundError("DAG", dag, list(self.client.registry.dags))
        if found.schedule is None:
            return _field_error("dag", f"DAG {dag} has no schedule to backfill")
        window = {}
        for field in ("since", "to"):
            text = str(body.get(field) or "").strip()
            try:
                at = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return _field_error(
                    field, f"{field}: expected an ISO date or date-time, got {text!r}"
                )
            window[field] = at if at.tzinfo else at.replace(tzinfo=_dt.timezone.utc)
        if window["since"] > window["to"]:
            return _field_error("to", "to: is before since")
        n = sum(1 for _ in found.schedule.backfill_windows(window["since"], window["to"]))
        force = bool(body.get("force"))

        def work() -> None:
            try:
                self.client.backfill(dag, window["since"], window["to"], force=force)
            except (PlanktonError, redis.RedisError) as exc:
                log.warning("backfill of %s failed: %s", dag, redact_url(str(exc)))

        threading.Thread(target=work, name=f"backfill-{dag}", daemon=True).start()
        return JSONResponse({"dag": dag, "intervals": n}, status_code=202)


def _field_error(field: str, msg: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"type": "value_error", "loc": ["body", field], "msg": msg}]}, status_code=422
    )


def _form_kind(schema: dict[str, Any]) -> str:
    """How the page sends a field: ``text`` as typed (a string param, or one that may be a
    string), else ``json`` (parsed as JSON when it parses: 3, true, [1, 2])."""
    kinds = [schema, *schema.get("anyOf", [])]
    return "text" if any(k.get("type") == "string" for k in kinds) else "json"


def _form_text(value: Any) -> str:
    """A default as the text a form field shows (strings as they are, the rest as JSON)."""
    if value is None:
        return ""
    value = redact.value(value)
    return value if isinstance(value, str) else json.dumps(value)


def add_console(app: FastAPI, client: Client, token: str | None) -> None:
    """Serve the console at ``/`` (pages under ``/ui/``) on the API ``app``."""
    Console(app, client, token).add()
