"""The q2c service: webhook intake and a health endpoint for the dev stack."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.billing_webhooks import stripe_webhook
from service.psa_events import milestone_completed
from service.state import ServiceState
from service.webhooks import salesforce_webhook
from settings import Settings
from store import StoreNotMigrated

log = logging.getLogger("q2c.service")


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
        client = await state.temporal()
        checks["temporal"] = "ok" if await client.service_client.check_health() else "down"
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
        # Replicas never migrate (`q2c store migrate` does, once); they refuse an old schema.
        try:
            await state.store.require_migrated()
        except StoreNotMigrated as exc:
            log.error("not starting: %s", exc)
            await state.store.close()
            raise
        try:
            await state.temporal()
        except Exception as exc:
            # Not fatal: deliveries get 503 and are retried by their senders meanwhile.
            log.warning(
                "Temporal at %s unreachable at startup (%s); will retry on demand",
                settings.temporal_target,
                type(exc).__name__,
            )
        yield
        await state.store.close()

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/webhooks/salesforce", salesforce_webhook, methods=["POST"]),
            Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
            Route("/events/psa/milestone-completed", milestone_completed, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.q2c = state
    return app
