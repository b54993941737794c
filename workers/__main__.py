"""``python -m workers ...``: the supervised worker (what ``plankton worker`` runs)."""

import signal
import sys

# A stop may come while the imports below still run (a deploy that starts and stops at
# once): note it here, before anything slow, so the supervisor then exits 0 at once instead
# of dying of the signal halfway through.
_early: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: _early.append(signum))
signal.signal(signal.SIGINT, lambda signum, frame: _early.append(signum))

from workers.supervisor import supervise  # noqa: E402

sys.exit(supervise(sys.argv[1:], stopped_early=_early))
