"""Command line entry shared by the stand-ins: `python -m standins.<vendor> --port N ...`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp


def serve(
    build_app: Callable[[argparse.Namespace], ASGIApp],
    *,
    description: str,
    default_port: int,
) -> None:
    """Parse the common options and run the app on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--db", required=True, help="SQLite file that keeps the state")
    parser.add_argument("--webhook-url", default=None, help="where to post webhooks")
    args = parser.parse_args()
    uvicorn.run(build_app(args), host=args.host, port=args.port, log_level="warning")
