"""Signed deliveries (a deal won, a change order approved), sent in the background and
retried with backoff.

The scheme is described in the package docstring (`standins.salesforce`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from standins.salesforce.store import Store

SIGNATURE_HEADER = "X-Salesforce-Signature"
EVENT_TYPE = "opportunity.closed_won"
CHANGE_ORDER_APPROVED_EVENT = "change_order.approved"
#: Pauses between attempts: the first delivery, then a retry after each pause.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
DELIVERY_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 2.0

_EVENT_FIELDS = (
    "Id",
    "Name",
    "AccountId",
    "StageName",
    "Amount",
    "CurrencyIsoCode",
    "CloseDate",
    "LastModifiedDate",
)

_CHANGE_ORDER_FIELDS = (
    "Id",
    "Name",
    "Opportunity__c",
    "Status__c",
    "Amount_Delta__c",
    "CurrencyIsoCode",
    "Effective_Date__c",
    "Approved_At__c",
    "LastModifiedDate",
)


def sign(secret: str, body: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class WebhookSender:
    def __init__(self, store: Store, url: str | None, secret: str | None, org_id: str) -> None:
        if url and not secret:
            raise ValueError("a webhook URL needs a signing secret (STANDIN_SF_WEBHOOK_SECRET)")
        self.store = store
        self.url = url
        self.secret = secret or ""
        self.org_id = org_id
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def closed_won(self, opportunity: dict[str, Any]) -> None:
        self._emit(EVENT_TYPE, opportunity, _EVENT_FIELDS)

    def change_order_approved(self, change_order: dict[str, Any]) -> None:
        """The change order (with its opportunity, `Opportunity__c`) as it was approved."""
        self._emit(CHANGE_ORDER_APPROVED_EVENT, change_order, _CHANGE_ORDER_FIELDS)

    def _emit(self, event_type: str, record: dict[str, Any], fields: tuple[str, ...]) -> None:
        """A new event (a new `eventId`), kept as the record's last one for replays."""
        event = {
            "eventId": str(uuid.uuid4()),
            "eventType": event_type,
            "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "organizationId": self.org_id,
            "sobject": {name: record.get(name) for name in fields},
        }
        body = json.dumps(event, separators=(",", ":"))
        self.store.save_event(record["Id"], body)
        self._schedule(body)

    def replay(self, record_id: str) -> dict[str, Any] | None:
        """Send the record's last event again, unchanged: a duplicate delivery."""
        body = self.store.last_event(record_id)
        if body is None:
            return None
        self._schedule(body)
        event: dict[str, Any] = json.loads(body)
        return event

    def _schedule(self, body: str) -> None:
        if not self.url:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(self.url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: str) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S)
        for delay in (0.0, *RETRY_DELAYS_S):
            await asyncio.sleep(delay)
            # Each attempt is signed afresh, so a receiver's freshness check holds on retries.
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
            }
            try:
                response = await self._client.post(url, content=body.encode(), headers=headers)
            except httpx.HTTPError:
                continue
            if response.is_success:
                return

    async def aclose(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
