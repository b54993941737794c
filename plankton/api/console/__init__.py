"""The web console: pages served by the API at ``/`` (see docs/console.md).

:func:`add_console` adds its routes to the API app; :mod:`.auth` holds the token cookie and
origin checks; :mod:`.views` reads what the pages show; templates and static assets ship in
this package, so the console needs nothing from another host.
"""

from plankton.api.console.auth import OriginCheck, TokenAuth
from plankton.api.console.pages import add_console

__all__ = ["OriginCheck", "TokenAuth", "add_console"]
