"""What the service's handlers share: settings, the store, and the one Temporal client."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from settings import Settings
from store import Store
from workflows.client import connect

#: A Temporal that does not answer within this long is treated as down (503, sender retries).
CONNECT_TIMEOUT_S = 5.0


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.from_url(settings.store_url)
        self._temporal: Client | None = None
        self._connecting = asyncio.Lock()

    async def temporal(self) -> Client:
        """The Temporal client, connected on first use.

        The service starts even when Temporal is down (health then says so and webhooks
        answer 503); a failed attempt is simply tried again by the next caller. Once
        connected, the SDK reconnects the channel by itself.
        """
        if self._temporal is not None:
            return self._temporal
        async with self._connecting:
            if self._temporal is None:
                self._temporal = await asyncio.wait_for(
                    connect(self.settings), timeout=CONNECT_TIMEOUT_S
                )
            return self._temporal
