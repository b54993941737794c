"""``python -m plankton.api --import M [--host H] [--port P] [--url URL]``: serve the API.

What ``plankton up`` starts, and what a container runs; ``plankton api`` is the same.
"""

from __future__ import annotations

import argparse

from plankton.api.serve import DEFAULT_HOST, DEFAULT_PORT, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plankton.api", description="Serve the Plankton HTTP API."
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module with task and DAG code (repeatable; env PLANKTON_IMPORTS)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}); any other than a "
        "loopback address needs PLANKTON_API_TOKEN",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--url",
        default=None,
        help="Redis URL (default: env PLANKTON_REDIS_URL, else redis://localhost:6379/0)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0..65535")
    return serve(args.host, args.port, args.url, tuple(args.imports))


if __name__ == "__main__":
    raise SystemExit(main())
