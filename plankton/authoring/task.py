"""``pk.Task``: the unit of work users subclass.

A task declares typed parameters as ``pk.Param`` class attributes, may have many children and
at most one parent, and implements ``run()``. While it runs (inside a worker) it emits values
to its parent's results channel and reads its children's values with ``results()``; the
runtime behind those calls is attached by the worker, so a task object itself holds only its
parameters and its place in the tree.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, dataclass_transform

from plankton.authoring.hashing import param_hash, tree_hash
from plankton.authoring.params import Param, check_known
from plankton.errors import DagError, ParamError, PlanktonError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

_logger = logging.getLogger("plankton.task")

#: While a DAG function builds its tree: how many more tasks it may create (see dag.build).
BUILD_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "plankton_build_budget", default=None
)

#: Params every task has: the run's window, filled from the run unless the task sets them.
BUILTIN_PARAMS = ("since", "to")


class TaskContext:
    """What a running task talks to (set by the worker); see ``workers.runtime``."""

    def emit(self, value: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def results(self) -> Iterator[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def log(self, level: int, message: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def processed(self) -> dict[str, int]:  # pragma: no cover - interface
        """Records emitted and consumed so far."""
        raise NotImplementedError


def attach(task: "Task", ctx: "TaskContext | None") -> None:
    """Give ``task`` the context of the attempt that runs it (``emit()``, ``results()``,
    ``log`` reach the worker through it); None detaches it. Called by the worker only."""
    task._ctx = ctx


class TaskLog:
    """``task.log``: a small logger whose lines are kept per task (``plankton logs``)."""

    def __init__(self, task: "Task") -> None:
        self._task = task

    def _write(self, level: int, message: str, *args: Any) -> None:
        text = message % args if args else str(message)
        ctx = self._task._ctx
        _logger.log(level, "%s: %s", self._task.task_name, text)
        if ctx is not None:
            ctx.log(level, text)

    def debug(self, message: str, *args: Any) -> None:
        self._write(logging.DEBUG, message, *args)

    def info(self, message: str, *args: Any) -> None:
        self._write(logging.INFO, message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self._write(logging.WARNING, message, *args)

    def error(self, message: str, *args: Any) -> None:
        self._write(logging.ERROR, message, *args)

    def exception(self, message: str, *args: Any) -> None:
        import traceback

        self._write(logging.ERROR, message + "\n" + traceback.format_exc(), *args)


@dataclass_transform(kw_only_default=True, field_specifiers=(Param,))
class Task:
    """Base class of every task. Subclass it and define ``run(self)``.

    Class attributes: ``queue`` (RQ queue name), ``timeout`` (seconds, None for no limit),
    ``retries`` (extra attempts after an exception or timeout, with exponential backoff),
    ``priority`` (higher runs first; default order is depth-first post-order),
    ``fatal_errors`` (exception types that fail the task without retries).
    """

    queue: ClassVar[str] = "default"
    timeout: ClassVar[float | None] = None
    retries: ClassVar[int] = 0
    priority: ClassVar[int | None] = None
    #: Exceptions that fail the task at once, whatever ``retries`` says (retrying cannot help).
    fatal_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    since = Param(_dt.datetime | None, default=None)
    to = Param(_dt.datetime | None, default=None)

    _params: ClassVar[dict[str, Param]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Param):
                    params[attr] = value
        cls._params = params
        if not isinstance(cls.retries, int) or cls.retries < 0:
            raise DagError(f"{cls.__qualname__}.retries must be a non-negative int", [cls.__name__])

    def __init__(self, **params: Any) -> None:
        name = type(self).__name__
        budget = BUILD_BUDGET.get()
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise DagError(
                    f"the DAG builds more than {budget[1]:,} tasks "
                    f"(PLANKTON_MAX_TASKS={budget[1]:,}); nothing was written",
                    [name],
                )
        known = type(self)._params
        check_known(name, known, params)
        values: dict[str, Any] = {}
        for key, param in known.items():
            if key in params:
                values[key] = param.validate(params[key], name)
            elif param.required:
                raise ParamError(
                    name, key, None, f"missing required parameter of type {param.type_name()}"
                )
            else:
                default = param.default  # a fresh copy
                values[key] = param.validate(default, name) if default is not None else None
        self.__dict__.update(values)
        self._values = values
        self._explicit = set(params)
        self.children: list[Task] = []
        self.parent: Task | None = None
        self._ctx: TaskContext | None = None
        self.run_id: str | None = None
        self.task_id: str | None = None
        self.attempt: int = 0
        self.log = TaskLog(self)

    # -- identity -----------------------------------------------------------------------
    @classmethod
    def family(cls) -> str:
        """The task's family: ``module:QualName``, how workers find its code."""
        return f"{cls.__module__}:{cls.__qualname__}"

    @property
    def task_name(self) -> str:
        return type(self).__name__

    @property
    def params(self) -> dict[str, Any]:
        """The task's parameter values, built-ins included."""
        return dict(self._values)

    @property
    def param_hash(self) -> str:
        """SHA-256 identity of (family, params); cached, as params are set at construction
        (the window is filled before anything reads it)."""
        cached = self.__dict__.get("_param_hash")
        if cached is None:
            cached = self.__dict__["_param_hash"] = param_hash(self.family(), self._values)
        return cached

    @property
    def tree_hash(self) -> str:
        return tree_hash(self.param_hash, [c.tree_hash for c in self.children])

    def set_window(self, since: _dt.datetime | None, to: _dt.datetime | None) -> None:
        """Fill ``since``/``to`` from the run's window where the task did not set them."""
        params = type(self)._params
        for key, value in (("since", since), ("to", to)):
            if key not in self._explicit and value is not None:
                self._values[key] = self.__dict__[key] = params[key].validate(value, self.task_name)
                self.__dict__.pop("_param_hash", None)

    # -- tree ---------------------------------------------------------------------------
    def add_children(self, *tasks: "Task") -> "Task":
        """Add children; returns ``self`` so trees read as nested expressions.

        Every check is O(1) per child (a child already placed has ``parent`` set), and a
        cycle is found here, where the tree is built, by walking this task's ancestors once
        per call: adding a task that is the root of this task's own tree closes a loop.
        """
        ancestors: list[Task] | None = None
        for child in tasks:
            if not isinstance(child, Task):
                raise DagError(
                    f"{self.task_name}.add_children: {child!r} is not a pk.Task", [self.task_name]
                )
            if child is self:
                raise DagError(f"cycle: {self.task_name} added as its own child", [self.task_name])
            if child.parent is self:
                raise DagError(
                    f"task {child.task_name} added twice to {self.task_name}",
                    [child.task_name, self.task_name],
                )
            if child.parent is not None:
                raise DagError(
                    f"task {child.task_name} has two parents: {child.parent.task_name} and "
                    f"{self.task_name}",
                    [child.task_name, child.parent.task_name, self.task_name],
                )
            if child.children:  # only a task with children can be one of our ancestors
                if ancestors is None:
                    ancestors = self._ancestors()
                if ancestors[-1] is child:  # the only parentless ancestor: our tree's root
                    path = [*reversed(ancestors), child]
                    names = [n.task_name for n in path]
                    raise DagError(f"cycle: {' -> '.join(names)}", names)
            child.parent = self
            self.children.append(child)
        return self

    def _ancestors(self) -> "list[Task]":
        """This task, its parent, its parent's parent ... up to the root (the last item)."""
        chain: list[Task] = [self]
        seen = {id(self)}
        node = self.parent
        while node is not None:
            if id(node) in seen:  # parent pointers edited by hand into a loop
                names = [n.task_name for n in chain]
                raise DagError(f"cycle: {' -> '.join(names)}", names)
            seen.add(id(node))
            chain.append(node)
            node = node.parent
        return chain

    def walk(self) -> "Iterable[Task]":
        """Every task of the subtree in depth-first post-order (children before parents)."""
        stack: list[tuple[Task, int]] = [(self, 0)]
        while stack:
            node, i = stack.pop()
            if i < len(node.children):
                stack.append((node, i + 1))
                stack.append((node.children[i], 0))
            else:
                yield node

    # -- running ------------------------------------------------------------------------
    def run(self) -> Any:
        """The task's work; its return value is the task's result."""
        raise NotImplementedError(f"{self.task_name} must define run()")

    def complete(self) -> bool:
        """True if this task's work is already done, so neither it nor its subtree must run
        (Luigi's contract). Override it; the default is False (always run).

        Called once per run, top-down, by the process that writes the run (the client of a
        script, CLI or API call, the scheduler for a cron run) before anything is enqueued,
        and never for a task below one that is complete: a complete task and its whole subtree
        end ``skipped``, emit nothing, and the parent runs on without their values. An
        exception fails the task as an exception in ``run()`` would (without retries). Keep
        it quick (one query): it runs before the run starts; params, ``since`` and ``to`` are
        set, ``emit()``/``results()`` are not available. See docs/resume.md.
        """
        return False

    def _require_ctx(self) -> TaskContext:
        if self._ctx is None:
            raise PlanktonError(
                f"{self.task_name}: emit()/results() work only while the task runs in a worker"
            )
        return self._ctx

    def emit(self, value: Any) -> None:
        """Send ``value`` to the parent's results channel (msgpack data only)."""
        self._require_ctx().emit(value)

    def results(self) -> Iterator[Any]:
        """Values emitted by all children, in arrival order, while they run.

        Ends when every child has finished; raises UpstreamFailed if one failed for good.
        """
        return self._require_ctx().results()

    @property
    def processed(self) -> dict[str, int]:
        """Records emitted and consumed so far (kept in the task's metadata)."""
        if self._ctx is None:
            return {"emitted": 0, "consumed": 0}
        return dict(self._ctx.processed)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v!r}"
            for k, v in self._values.items()
            if v is not None or k not in BUILTIN_PARAMS
        )
        return f"{self.task_name}({shown})"


def place(root: Task, since: _dt.datetime | None, to: _dt.datetime | None) -> list[Task]:
    """Validate ``root``'s tree, fill the run window into every task that did not set its
    own, and return the tasks in depth-first post-order."""
    order = validate_tree(root)
    for node in order:
        node.set_window(since, to)
    return order


def validate_tree(root: Task) -> list[Task]:
    """Check ``root``'s tree and return its tasks in depth-first post-order.

    A cycle or a task reachable twice raises DagError naming the tasks; nothing is written.
    """
    if not isinstance(root, Task):
        raise DagError(f"a DAG must return a pk.Task, got {type(root).__name__}")
    order: list[Task] = []
    seen: set[int] = set()
    on_path: set[int] = set()
    path: list[Task] = [root]
    stack: list[tuple[Task, int]] = [(root, 0)]
    seen.add(id(root))
    on_path.add(id(root))
    while stack:  # iterative depth-first walk: O(n), no recursion limit for deep chains
        node, i = stack[-1]
        children = node.children
        if i < len(children):
            stack[-1] = (node, i + 1)
            child = children[i]
            key = id(child)
            if key in on_path:
                start = next(j for j, n in enumerate(path) if n is child)
                names = [n.task_name for n in [*path[start:], child]]
                raise DagError(f"cycle: {' -> '.join(names)}", names)
            if key in seen:
                raise DagError(
                    f"task {child.task_name} appears twice in the tree", [child.task_name]
                )
            seen.add(key)
            on_path.add(key)
            path.append(child)
            stack.append((child, 0))
        else:
            stack.pop()
            path.pop()
            on_path.discard(id(node))
            order.append(node)
    if root.parent is not None:
        raise DagError(f"task {root.task_name} has a parent and cannot be a root", [root.task_name])
    return order
