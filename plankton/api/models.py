"""Request and response bodies of the HTTP API, as pydantic models.

FastAPI builds ``/openapi.json`` from these, so they are the API's written contract: every
response the routes return is validated against its model on the way out. Response models
allow extra fields, so that a field the engine adds to ``plankton show --json`` reaches API
clients without a change here (and the schema says so, ``additionalProperties``).

Run creation has one typed request model per DAG (:func:`run_request_model`), built from the
DAG's signature, so the document tells a client exactly which params each DAG takes.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from plankton.authoring.dag import Dag
from plankton.authoring.paramtypes import INT_MAX, INT_MIN
from plankton.states import RunStatus

#: RFC 3339 date-time with a mandatory offset: what the schema's ``format: date-time`` promises.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    # pydantic alone also takes unix times ("1700000000") and numbers: the schema says RFC 3339.
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_format",
            "expected an RFC 3339 date-time with an offset, like 2024-01-31T00:00:00Z",
        )
    return value


def _utc_representable(value: _dt.datetime) -> _dt.datetime:
    try:
        value.astimezone(_dt.timezone.utc)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "out of range once converted to UTC (year 1 to 9999)"
        ) from None
    return value


#: A window bound: an RFC 3339 date-time that carries its offset.
WindowBound = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_utc_representable),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 date-time with an offset, e.g. 2024-01-31T00:00:00Z",
        }
    ),
]


# -- requests -------------------------------------------------------------------------------
class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: WindowBound | None = Field(
        default=None,
        description="Start of the run's window; every task that does not set "
        "`since` itself gets it.",
    )
    to: WindowBound | None = Field(default=None, description="End of the run's window (>= since).")

    @field_validator("to")
    @classmethod
    def _not_before_since(cls, to: Any, info: ValidationInfo) -> Any:
        since = info.data.get("since")
        if to is not None and since is not None and to < since:
            raise PydanticCustomError(
                "window_order",
                "`to` ({to}) is before `since` ({since})",
                {"to": to.isoformat(), "since": since.isoformat()},
            )
        return to


class RunRequest(_Window):
    """Body of ``POST /dags/{dag}/runs`` for any DAG: params are checked against its signature."""

    params: dict[str, Any] = Field(
        default_factory=dict, description="DAG params by name, as JSON values."
    )


class RerunRequest(BaseModel):
    """Body of ``POST /runs/{run_id}/rerun``: param overrides keyed ``Task.param``."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides keyed "TASK.PARAM" (TASK: a task name or id), as JSON values; '
        "every task of that name gets the new value.",
        examples=[{"Multiplier.n": 3}],
    )
    from_failure: bool = Field(
        default=False,
        description="Resume: run only the tasks that failed, were cancelled or never finished, "
        "their ancestors and tasks whose subtree changed; reuse the others' values "
        "(docs/resume.md). 409 if the run succeeded, is live, or its values expired.",
    )


# -- per-DAG request models -----------------------------------------------------------------
def param_schema(dag: Dag, name: str) -> dict[str, Any]:
    """The JSON schema of one DAG param, with msgpack's integer range made explicit."""
    return _bound_integers(dag.params[name].json_schema())


def _bound_integers(schema: dict[str, Any]) -> dict[str, Any]:
    # A JSON integer outside msgpack's range is refused by the param check; say so up front.
    out = dict(schema)
    if out.get("type") == "integer":
        out.setdefault("minimum", INT_MIN)
        out.setdefault("maximum", INT_MAX)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _bound_integers(out[key])
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [_bound_integers(s) for s in out["anyOf"]]
    return out


def integral_numbers(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with each float that has no fraction made an int where ``schema`` says integer.

    JSON has one number type, and JSON Schema's ``integer`` includes ``3.0``; Python's json
    module reads ``3.0`` as a float, which an ``int`` param refuses. Stopgap until
    ``params`` reads JSON numbers this way itself (asked for in issue 8's report).
    """
    kinds = [schema, *schema.get("anyOf", [])]
    if (
        isinstance(value, float)
        and value.is_integer()
        and any(k.get("type") == "integer" for k in kinds)
    ):
        return int(value)
    for kind in kinds:
        if isinstance(value, list) and isinstance(kind.get("items"), dict):
            return [integral_numbers(kind["items"], v) for v in value]
        if isinstance(value, dict) and isinstance(kind.get("additionalProperties"), dict):
            return {k: integral_numbers(kind["additionalProperties"], v) for k, v in value.items()}
    return value


def run_request_model(dag: Dag) -> type[RunRequest]:
    """A ``RunRequest`` whose ``params`` lists exactly this DAG's params and their schemas.

    pydantic checks names (unknown, missing); the values' types are checked afterwards by
    ``Dag.json_params``, the same code every other entry point uses. Fields are aliased
    because a param may be named like a BaseModel attribute (``json``, ``copy``).
    """
    fields: dict[str, Any] = {}
    for i, (name, param) in enumerate(dag.params.items()):
        kind = Annotated[Any, WithJsonSchema(param_schema(dag, name))]
        default = ... if param.required else param.to_json(param.default)
        fields[f"p{i}"] = (kind, Field(default, alias=name))
    params_model = create_model(
        f"{dag.name}_params",
        __config__=ConfigDict(extra="forbid", title=f"{dag.name} params"),
        **fields,
    )
    required = any(p.required for p in dag.params.values())
    params_field = Field(... if required else params_model(), description=f"Params of {dag.name}.")
    return create_model(
        f"{dag.name}_run_request",
        __base__=RunRequest,
        __doc__=f"Body of POST /dags/{dag.name}/runs.",
        params=(params_model, params_field),
    )


def given_params(dag: Dag, body: RunRequest) -> dict[str, Any]:
    """The params the client actually sent, by their real names (no defaults filled in)."""
    params = body.params
    if isinstance(params, BaseModel):
        params = params.model_dump(by_alias=True, exclude_unset=True)
    return {
        name: integral_numbers(param_schema(dag, name), value) if name in dag.params else value
        for name, value in params.items()
    }


# -- responses ------------------------------------------------------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorMessage(BaseModel):
    """Every error but 422: one sentence saying what was wrong."""

    detail: str


class Health(BaseModel):
    status: str = Field(description='"ok"')
    redis: str = Field(description='"ok": Redis answered PING')


class DagParam(_Open):
    type: str = Field(description="The declared type, as written in Python: int, list[str]...")
    required: bool
    default: Any = None
    json_schema: dict[str, Any] = Field(description="JSON schema of the param's JSON value.")


class LastRun(_Open):
    run_id: str
    status: RunStatus
    submitted_at: str | None = None


class DagInfo(_Open):
    """One DAG, as ``plankton dags --json`` shows it."""

    name: str
    module: str
    doc: str = ""
    params: dict[str, DagParam]
    schedule: str | None = None
    timezone: str | None = None
    catchup: bool | None = None
    max_active_runs: int | None = None
    next_fire: str | None = None
    last_run: LastRun | None = None


class RunCreated(BaseModel):
    run_id: str = Field(description="Follow it at GET /runs/{run_id} (also the Location header).")


class Processed(_Open):
    emitted: int
    consumed: int


class TaskView(_Open):
    """One task of a run, as in ``plankton show --json``."""

    id: str
    name: str
    family: str | None = None
    parent: str | None = None
    children: list[str] = []
    params: dict[str, Any] | None = None
    param_hash: str
    tree_hash: str | None = None
    state: str
    attempts: int
    worker: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    processed: Processed
    result: Any = None
    error: str | None = None
    reused_from: str | None = Field(
        default=None,
        description="Set on a task a resume "
        "reused: the run whose values it hands on (it did not run).",
    )


class RunSummary(_Open):
    """A run without its tasks, as in ``plankton runs --json``."""

    run_id: str
    dag: str
    status: RunStatus
    params: dict[str, Any] | None = None
    since: str | None = None
    to: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    version: str | None = None
    rerun_of: str | None = None
    tree_hash: str | None = None
    result: Any = None
    error: str | None = None


class RunDetail(RunSummary):
    """A run and its task tree: the same object as ``plankton show RUN --json``, or with
    ``?since=CURSOR`` a delta read: ``tasks`` holds only the tasks changed since that cursor
    (``full`` false; with ``since=0`` every task, ``full`` true), and ``cursor`` is the next."""

    tasks: list[TaskView]
    cursor: int | None = Field(
        default=None, description="Pass as `since` to get only what changed after this read."
    )
    full: bool | None = Field(
        default=None,
        description="True when `tasks` is every task (no `since`, or a cursor the run never had).",
    )


class RunPage(BaseModel):
    runs: list[RunSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class CancelResult(BaseModel):
    run_id: str
    status: RunStatus = Field(
        description="The run's status after the cancel (a run that had "
        "already ended keeps its status)."
    )


class RerunPlan(_Open):
    """What a rerun would change (``dry_run=true``); nothing is submitted. With
    ``from_failure``: ``tasks`` (each ``id``, ``name``, ``action`` run | reuse, ``reason``) and
    the counts ``run`` and ``reuse`` instead of ``changed``/``unchanged``."""

    run_id: str
    changed: list[dict[str, Any]] | None = None
    unchanged: int | None = None
    tasks: list[dict[str, Any]] | None = None
