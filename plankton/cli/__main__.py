"""``python -m plankton.cli``: the same as the ``plankton`` command."""

from plankton.cli import entry

entry()
