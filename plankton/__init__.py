"""Plankton: a simple, fast ETL framework. DAGs of streaming tasks on Redis and RQ.

Only the contract's public names live here; importing plankton has no side effects.
"""

from plankton.authoring.dag import Dag, dag
from plankton.authoring.params import Param
from plankton.authoring.secret import Secret
from plankton.authoring.task import Task
from plankton.client import Client
from plankton.errors import (
    ConfigError,
    ConnectionFailed,
    DagError,
    NotFoundError,
    ParamError,
    PlanktonError,
    ResumeError,
    RunTimeout,
    SecretError,
    SerializationError,
    UpstreamFailed,
)

__version__ = "0.1.0"


def dags_equal(a: Task, b: Task) -> bool:
    """True iff two task trees are equal: same families, params and shape (tree hashes)."""
    return a.tree_hash == b.tree_hash


__all__ = [
    # authoring
    "Task",
    "Param",
    "Secret",
    "dag",
    "Dag",
    # running
    "Client",
    "dags_equal",
    # errors a user catches (plankton.errors holds the whole tree)
    "PlanktonError",
    "ParamError",
    "DagError",
    "SecretError",
    "SerializationError",
    "UpstreamFailed",
    "NotFoundError",
    "RunTimeout",
    "ConnectionFailed",
    "ConfigError",
    "ResumeError",
]
