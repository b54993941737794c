"""The finishing touches on ``/openapi.json`` that FastAPI does not derive from the routes:
run links, exact integer bounds, and the bearer scheme when a token is set.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from plankton.authoring.paramtypes import INT_MAX, INT_MIN

#: What a client can do with the run_id of a 201 (OpenAPI links; also guide stateful fuzzers).
_RUN_LINKS = {
    name: {
        "operationId": op,
        "parameters": {"run_id": "$response.body#/run_id"},
        "description": text,
    }
    for name, op, text in [
        ("GetRun", "get_run", "Follow the new run."),
        ("CancelRun", "cancel_run", "Stop it."),
        ("RerunRun", "rerun_run", "Re-create it."),
    ]
}


def document(app: FastAPI, auth: bool) -> None:
    """Finish /openapi.json: run links, exact integer bounds, and the bearer scheme if any."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema["paths"].values():
                created = path.get("post", {}).get("responses", {}).get("201")
                if created is not None:
                    created["links"] = _RUN_LINKS
            if auth:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "The value of PLANKTON_API_TOKEN.",
                    }
                }
                schema["security"] = [{"bearer": []}]
                schema["paths"]["/healthz"]["get"]["security"] = []
            app.openapi_schema = _exact_bounds(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


#: FastAPI's OpenAPI model stores minimum/maximum as floats; float(2**64 - 1) is 2**64.
_INT_BOUNDS = {float(INT_MIN): INT_MIN, float(INT_MAX): INT_MAX}


def _exact_bounds(node: Any) -> Any:
    """Put back the exact msgpack integer bounds that became floats on the way."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("minimum", "maximum") and isinstance(value, float) and value in _INT_BOUNDS:
                node[key] = _INT_BOUNDS[value]
            else:
                _exact_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _exact_bounds(item)
    return node
