"""The public API is exactly the contract's names, and importing plankton does nothing else."""

import subprocess
import sys

import plankton as pk


def test_all_lists_exactly_the_public_names():
    public = {name for name in dir(pk) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(pk, name)).__name__ == "module"}
    assert public - modules == set(pk.__all__)
    for name in (
        "Task",
        "Param",
        "dag",
        "Client",
        "dags_equal",
        "PlanktonError",
        "ParamError",
        "DagError",
        "SerializationError",
        "UpstreamFailed",
    ):
        assert name in pk.__all__


def test_import_has_no_side_effects():
    code = (
        "import sys, logging; before = set(sys.modules); import plankton; "
        "assert not logging.getLogger().handlers; "
        "assert 'workers' not in sys.modules and 'scheduler' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
