"""``python -m workers ...``: the supervised worker (what ``plankton worker`` runs)."""

import sys

from .supervisor import supervise

sys.exit(supervise(sys.argv[1:]))
