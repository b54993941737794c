"""The registry of task families and DAGs a process may run: only what its imports define.

Workers resolve a job's task family here and nowhere else; a name from Redis is never passed
to importlib (the trap measured in RQ: a forged job naming ``os.system`` ran). Only
``pk.Task`` subclasses defined in the ``--import`` modules (or their submodules) count.
"""

from __future__ import annotations

import importlib
import sys
from typing import Iterable

from plankton.authoring.dag import Dag
from plankton.authoring.task import Task
from plankton.errors import ConfigError, NotFoundError


class Registry:
    """Task classes by family and DAGs by name, collected from a list of modules."""

    def __init__(self, modules: Iterable[str] = ()) -> None:
        self.modules: list[str] = []
        self.tasks: dict[str, type[Task]] = {}
        self.dags: dict[str, Dag] = {}
        for name in modules:
            self.add_module(name)

    def add_module(self, name: str) -> None:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                "--import / PLANKTON_IMPORTS",
                name,
                f"cannot import it: {exc}",
                f"cannot import {name!r} (from --import / PLANKTON_IMPORTS): {exc}",
            ) from exc
        self.modules.append(name)
        for value in list(vars(module).values()):
            if isinstance(value, Dag):
                self.dags.setdefault(value.name, value)
            elif isinstance(value, type) and issubclass(value, Task) and value is not Task:
                if value.__module__ == name or value.__module__.startswith(name + "."):
                    self.tasks[value.family()] = value
        self._add_defined_tasks(name)

    def _add_defined_tasks(self, name: str) -> None:
        """Also register Task subclasses defined in the module but not bound at top level."""
        for cls in _all_subclasses(Task):
            mod = cls.__module__
            if (mod == name or mod.startswith(name + ".")) and mod in sys.modules:
                self.tasks.setdefault(cls.family(), cls)

    def task_class(self, family: str) -> type[Task]:
        """The class of ``family``; NotFoundError naming it and the imports otherwise."""
        cls = self.tasks.get(family)
        if cls is None:
            raise NotFoundError(
                "task family", family, [f"imports: {', '.join(self.modules) or 'none'}"]
            )
        return cls

    def dag(self, name: str) -> Dag:
        found = self.dags.get(name)
        if found is None:
            raise NotFoundError("DAG", name, list(self.dags))
        return found


def _all_subclasses(cls: type[Task]) -> list[type[Task]]:
    out: list[type[Task]] = []
    stack: list[type[Task]] = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            out.append(sub)
            stack.append(sub)
    return out
