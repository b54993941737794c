"""``@pk.dag``: a named, typed, optionally scheduled function that builds a task tree.

The decorated function's annotated parameters become the DAG's params (``pk.Param`` with the
annotation as type and the default as default); calling ``Dag.build`` validates them, calls the
function, fills every task's ``since``/``to`` from the run window and validates the tree.
"""

from __future__ import annotations

import datetime as _dt
import inspect
from typing import Any, Callable, Mapping

from plankton.authoring.params import MISSING, Param, check_known
from plankton.authoring.task import BUILD_BUDGET, Task, place
from plankton.errors import DagError, ParamError


class Dag:
    """A DAG definition: name, typed params, optional cron schedule, and the tree builder."""

    def __init__(
        self,
        fn: Callable[..., Task],
        name: str | None = None,
        schedule: str | None = None,
        timezone: str = "UTC",
        catchup: bool = True,
        max_active_runs: int = 1,
        on_failure: Any = None,
        on_success: Any = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.module = fn.__module__
        self.doc = inspect.getdoc(fn) or ""
        self.params = _signature_params(fn, self.name)
        self.timezone = timezone
        self.catchup = catchup
        if not isinstance(max_active_runs, int) or max_active_runs < 1:
            raise DagError(f"DAG {self.name}: max_active_runs must be a positive int", [self.name])
        self.max_active_runs = max_active_runs
        #: Alert destinations (webhook URLs or callables) for a failed / succeeded run.
        self.on_failure = hooks(on_failure, self.name, "on_failure")
        self.on_success = hooks(on_success, self.name, "on_success")
        self.schedule = None
        if schedule is not None:
            from plankton.authoring.schedule import Schedule

            self.schedule = Schedule(schedule, timezone=timezone, dag=self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Task:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Dag {self.name}>"

    def validate_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Typed params from already-typed values; ParamError names DAG, param and value."""
        check_known(self.name, self.params, values)
        out: dict[str, Any] = {}
        for key, param in self.params.items():
            if key in values:
                out[key] = param.validate(values[key], self.name)
            elif param.required:
                raise ParamError(
                    self.name, key, None, f"missing required parameter of type {param.type_name()}"
                )
            else:
                out[key] = param.validate(param.default, self.name)
        return out

    def parse_params(self, texts: Mapping[str, str]) -> dict[str, Any]:
        """Typed params from CLI strings (``--param n=3``)."""
        check_known(self.name, self.params, texts)
        typed: dict[str, Any] = {}
        for key, text in texts.items():
            typed[key] = self.params[key].parse(text, self.name)
        return self.validate_params(typed)

    def json_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Typed params from decoded JSON (the HTTP API)."""
        check_known(self.name, self.params, values)
        typed: dict[str, Any] = {}
        for key, value in values.items():
            typed[key] = self.params[key].coerce_json(value, self.name)
        return self.validate_params(typed)

    def build(
        self,
        params: Mapping[str, Any],
        since: _dt.datetime | None = None,
        to: _dt.datetime | None = None,
        max_tasks: int = 1_000_000,
    ) -> Task:
        """Call the function with typed params and return its validated root task."""
        return self.plan(params, since, to, max_tasks)[1]

    def plan(
        self,
        params: Mapping[str, Any],
        since: _dt.datetime | None = None,
        to: _dt.datetime | None = None,
        max_tasks: int = 1_000_000,
    ) -> tuple[dict[str, Any], Task, list[Task]]:
        """Typed params, the validated root task and its tasks in post-order, each computed
        once. A function that creates more than ``max_tasks`` tasks is stopped with DagError
        (a bad param must not make a server build tasks until it runs out of memory)."""
        typed = self.validate_params(params)
        token = BUILD_BUDGET.set([max_tasks, max_tasks])
        try:
            root = self.fn(**typed)
        finally:
            BUILD_BUDGET.reset(token)
        if not isinstance(root, Task):
            raise DagError(
                f"DAG {self.name} returned {type(root).__name__}, not a pk.Task", [self.name]
            )
        return typed, root, place(root, since, to)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (``plankton dags --json``, ``GET /dags``)."""
        return {
            "name": self.name,
            "module": self.module,
            "doc": self.doc,
            "params": {
                k: {
                    "type": p.type_name(),
                    "required": p.required,
                    "default": None if p.required else p.to_json(p.default),
                }
                for k, p in self.params.items()
            },
            "schedule": self.schedule.expr if self.schedule else None,
            "timezone": self.timezone,
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
        }


def _signature_params(fn: Callable[..., Any], dag_name: str) -> dict[str, Param]:
    params: dict[str, Param] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DagError(f"DAG {dag_name}: *args/**kwargs are not typed params", [dag_name])
        if p.annotation is inspect.Parameter.empty:
            raise DagError(
                f"DAG {dag_name}: parameter {p.name!r} needs a type annotation", [dag_name]
            )
        annotation = p.annotation
        if isinstance(annotation, str):
            annotation = eval(annotation, fn.__globals__)
        default = MISSING if p.default is inspect.Parameter.empty else p.default
        try:
            param = Param(annotation, default=default)
        except TypeError as exc:
            raise DagError(f"DAG {dag_name}: parameter {p.name!r}: {exc}", [dag_name]) from None
        param.set_name(p.name)
        params[p.name] = param
    return params


def hooks(value: Any, dag_name: str, what: str) -> tuple[str | Callable[..., Any], ...]:
    """``on_failure``/``on_success`` as a tuple of http(s) URLs and callables; DagError names
    the DAG and the bad entry."""
    items = () if value is None else value if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        if callable(item):
            continue
        if not (isinstance(item, str) and item.startswith(("http://", "https://"))):
            raise DagError(
                f"DAG {dag_name}: {what} takes http(s) URLs or callables, got {item!r}", [dag_name]
            )
    return tuple(items)


def dag(
    fn: Callable[..., Task] | None = None,
    *,
    name: str | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    catchup: bool = True,
    max_active_runs: int = 1,
    on_failure: Any = None,
    on_success: Any = None,
) -> Any:
    """Declare a DAG: ``@pk.dag`` or ``@pk.dag(schedule="*/5 * * * *", ...)``.

    ``on_failure`` / ``on_success``: a webhook URL, a callable, or a list of those, told when
    a run ends failed / succeeded (see docs/operations.md). Callables run in the scheduler.
    """

    def wrap(f: Callable[..., Task]) -> Dag:
        return Dag(
            f,
            name=name,
            schedule=schedule,
            timezone=timezone,
            catchup=catchup,
            max_active_runs=max_active_runs,
            on_failure=on_failure,
            on_success=on_success,
        )

    return wrap(fn) if fn is not None else wrap
