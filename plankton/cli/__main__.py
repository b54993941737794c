"""``python -m plankton.cli``: the same as the ``plankton`` command."""

from . import entry

entry()
