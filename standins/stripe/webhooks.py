"""Webhook delivery as Stripe does it: signed, in the background, retried, unordered.

Each event is posted on its own task, so a slow receiver never delays an API answer
and deliveries can arrive out of order. A failed delivery is retried with growing
pauses; events still pending when the process stops are sent again at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from standins.stripe.store import Store

log = logging.getLogger("standins.stripe.webhooks")

DELIVERY_TIMEOUT_S = 10.0
#: Pause before each retry; Stripe itself retries for days, a stand-in for seconds.
RETRY_PAUSES_S = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Pending events older than this are not re-sent after a restart.
REDELIVER_WINDOW_S = 3 * 24 * 3600


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSender:
    def __init__(self, store: Store, url: str | None, secret: str | None) -> None:
        if url and not secret:
            raise ValueError("a webhook URL needs a signing secret")
        self.store = store
        self.url = url
        self.secret = secret or ""
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def send(self, event_ids: list[str]) -> None:
        if not self.enabled:
            return
        for event_id in event_ids:
            task = asyncio.get_running_loop().create_task(self._deliver(event_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def resend_pending(self) -> None:
        """After a restart, send again what was not delivered before the stop."""
        since = time.time() - REDELIVER_WINDOW_S
        pending = [
            e["id"]
            for e in self.store.find("event", newest_first=False)
            if e.get("pending_webhooks") and e["created"] >= since
        ]
        self.send(pending)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, event_id: str) -> None:
        assert self.url is not None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S)
        for attempt, pause in enumerate((0.0, *RETRY_PAUSES_S)):
            await asyncio.sleep(pause)
            event = self.store.get(event_id, "event")
            if event is None or not event.get("pending_webhooks"):
                return
            payload = json.dumps(event, indent=2).encode()
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature_header(payload, self.secret, int(time.time())),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            try:
                response = await self._client.post(self.url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("webhook %s attempt %d failed: %s", event_id, attempt + 1, exc)
                continue
            if 200 <= response.status_code < 300:
                self._mark_delivered(event_id)
                return
            log.warning(
                "webhook %s attempt %d answered %d", event_id, attempt + 1, response.status_code
            )
        log.error("webhook %s not delivered after %d attempts", event_id, len(RETRY_PAUSES_S) + 1)

    def _mark_delivered(self, event_id: str) -> None:
        self.store.begin()
        try:
            event: dict[str, Any] | None = self.store.get(event_id, "event")
            if event is not None:
                event["pending_webhooks"] = 0
                self.store.save(event)
            self.store.commit()
        except BaseException:
            self.store.rollback()
            raise
