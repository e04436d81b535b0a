"""Checking and reading the webhooks the org posts, Closed Won and change order approved
(scheme: `standins.salesforce`). Both come to one endpoint: `eventType` tells them apart.

    X-Salesforce-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

The HMAC is computed over the raw bytes as received (never a re-serialised body), compared
in constant time, and a timestamp outside the tolerance is refused so a captured delivery
cannot be replayed later. Several `v1` entries may appear while a secret is being rotated;
one match is enough.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from canonical import field_path
from connectors import webhook_json
from connectors.salesforce.wire import ChangeOrderApprovedEvent, ClosedWonEvent
from connectors.signing import (
    DEFAULT_TOLERANCE,
    InvalidSignature,
    StaleSignature,
    WebhookError,
    verify_signature,
)

__all__ = [
    "CHANGE_ORDER_APPROVED_EVENT",
    "CLOSED_WON_EVENT",
    "SIGNATURE_HEADER",
    "InvalidEvent",
    "InvalidSignature",
    "StaleSignature",
    "WebhookError",
    "change_order_approved_event",
    "closed_won_event",
    "parse_change_order_approved_event",
    "parse_closed_won_event",
    "verify_webhook_signature",
]

SIGNATURE_HEADER = "X-Salesforce-Signature"
CLOSED_WON_EVENT = "opportunity.closed_won"
CHANGE_ORDER_APPROVED_EVENT = "change_order.approved"


class InvalidEvent(WebhookError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def verify_webhook_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> None:
    """Return quietly when `body` was signed with `secret` recently enough; raise otherwise."""
    verify_signature(
        body, header, secret, header_name=SIGNATURE_HEADER, tolerance=tolerance, now=now
    )


def parse_closed_won_event(body: bytes | str) -> ClosedWonEvent:
    """The event, or `InvalidEvent` naming the first missing or invalid field."""
    try:
        data = webhook_json.parse(body)
    except webhook_json.InvalidJson as exc:
        raise InvalidEvent(str(exc), field=exc.field) from None
    return closed_won_event(data)


def closed_won_event(data: Any) -> ClosedWonEvent:
    """The event from a body already read by `webhook_json.parse`; `InvalidEvent` otherwise."""
    try:
        return ClosedWonEvent.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        where = field_path(tuple(problems[0]["loc"])) or None
        detail = "; ".join(f"{field_path(tuple(p['loc'])) or 'body'}: {p['msg']}" for p in problems)
        raise InvalidEvent(f"not a Closed Won event: {detail}", field=where) from None


def parse_change_order_approved_event(body: bytes | str) -> ChangeOrderApprovedEvent:
    """The event, or `InvalidEvent` naming the first missing or invalid field."""
    try:
        data = webhook_json.parse(body)
    except webhook_json.InvalidJson as exc:
        raise InvalidEvent(str(exc), field=exc.field) from None
    return change_order_approved_event(data)


def change_order_approved_event(data: Any) -> ChangeOrderApprovedEvent:
    """The event from a body already read by `webhook_json.parse`; `InvalidEvent` otherwise."""
    try:
        return ChangeOrderApprovedEvent.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        where = field_path(tuple(problems[0]["loc"])) or None
        detail = "; ".join(f"{field_path(tuple(p['loc'])) or 'body'}: {p['msg']}" for p in problems)
        raise InvalidEvent(f"not a change-order approval: {detail}", field=where) from None
