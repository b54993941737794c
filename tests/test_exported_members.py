"""The public API is exactly the contract's names, and importing plankton does nothing else."""

import subprocess
import sys

import plankton as pk

#: The public names, pinned: adding or dropping one is a contract change made here on purpose.
PUBLIC = [
    "Task",
    "Param",
    "Secret",
    "dag",
    "Dag",
    "Client",
    "dags_equal",
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


def test_all_lists_exactly_the_public_names():
    public = {name for name in dir(pk) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(pk, name)).__name__ == "module"}
    assert public - modules == set(pk.__all__)
    assert sorted(pk.__all__) == sorted(PUBLIC)


def test_every_exported_error_is_a_plankton_error():
    for name in PUBLIC:
        obj = getattr(pk, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, pk.PlanktonError), name


def test_import_has_no_side_effects():
    code = (
        "import sys, logging; before = set(sys.modules); import plankton; "
        "assert not logging.getLogger().handlers; "
        "assert 'workers' not in sys.modules and 'scheduler' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
