"""The q2c service: webhook intake (next issues) and a health endpoint for the dev stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client

from settings import Settings
from store import Store
from workflows.client import connect


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.from_url(settings.store_url)
        self.temporal: Client | None = None


async def health(request: Request) -> JSONResponse:
    """200 when the store answers and Temporal is reachable; 503 naming what is not."""
    state: ServiceState = request.app.state.q2c
    checks: dict[str, str] = {}
    try:
        await state.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # a health check reports, it does not raise
        checks["store"] = f"error: {type(exc).__name__}"
    try:
        if state.temporal is None:
            state.temporal = await connect(state.settings)
        checks["temporal"] = "ok" if await state.temporal.service_client.check_health() else "down"
    except Exception as exc:
        checks["temporal"] = f"error: {type(exc).__name__}"
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )


def create_app(settings: Settings) -> Starlette:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.store.migrate()
        yield
        await state.store.close()

    app = Starlette(routes=[Route("/health", health)], lifespan=lifespan)
    app.state.q2c = state
    return app
