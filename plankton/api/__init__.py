"""The HTTP API (``plankton api``): FastAPI routes to create, list, follow, re-run and cancel runs.

``create_app`` builds the ASGI app (tests drive it in-process); ``serve`` runs it with uvicorn
and enforces the start-up rules (no token, no public bind).
"""

from plankton.api.app import create_app
from plankton.api.serve import serve

__all__ = ["create_app", "serve"]
