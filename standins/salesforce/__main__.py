"""`python -m standins.salesforce --port N --db FILE [--webhook-url URL]`."""

from __future__ import annotations

import argparse

from starlette.types import ASGIApp

from standins.salesforce.app import create_app_from_env
from standins.server import serve


def _build(args: argparse.Namespace) -> ASGIApp:
    return create_app_from_env(args.db, args.webhook_url)


if __name__ == "__main__":
    serve(_build, description="Salesforce REST API stand-in", default_port=8101)
