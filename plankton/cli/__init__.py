"""The ``plankton`` command line: a thin layer over library calls (click + rich)."""

from __future__ import annotations

import sys

from plankton.cli import history, processes
from plankton.cli.common import handle_error
from plankton.cli.main import cli

# Every command module defines its commands on its own; the group gathers them here (as
# rq/cli/__init__.py does), so no command module imports the group's module or another one.
for _command in (
    history.rerun_cmd,
    history.backfill_cmd,
    processes.worker_cmd,
    processes.scheduler_cmd,
    processes.api_cmd,
    processes.up_cmd,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (testable in-process)."""
    import os

    # Like ``python -m``, let --import find modules of the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cli.main(args=argv, prog_name="plankton", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        return handle_error(exc)
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
