"""What a billing event tells its run (`workflows.starters.payment_event`), without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from connectors.stripe import wire
from workflows.starters import payment_event

CREATED = 1764547200  # 2025-12-01T00:00:00Z


def invoice(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "in_123",
        "object": "invoice",
        "customer": "cus_1",
        "currency": "gbp",
        "status": "paid",
        "created": CREATED - 86400,
        "amount_due": 120050,
        "amount_paid": 120050,
        "amount_remaining": 0,
        "subtotal": 100042,
        "total": 120050,
        "lines": {"object": "list", "data": [], "has_more": False},
        "metadata": {"q2c_workflow_id": "time-to-invoice:7:2026-11"},
    }
    body.update(changes)
    return body


def event(event_type: str, obj: dict[str, Any]) -> wire.Event:
    return wire.Event.model_validate(
        {
            "id": "evt_1",
            "object": "event",
            "type": event_type,
            "created": CREATED,
            "livemode": False,
            "data": {"object": obj},
        }
    )


def test_paid_carries_the_amount_paid_in_major_units() -> None:
    obj = invoice()
    signal = payment_event("paid", event("invoice.paid", obj), wire.Invoice.model_validate(obj))
    assert (signal.kind, signal.amount, signal.reason) == ("paid", Decimal("1200.50"), None)
    assert signal.event_id == "evt_1" and signal.billing_invoice_id == "in_123"
    assert signal.occurred_at == datetime(2025, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event_type", "kind", "status", "reason"),
    [
        ("invoice.voided", "voided", "void", "voided"),
        ("invoice.marked_uncollectible", "uncollectible", "uncollectible", "uncollectible"),
        ("invoice.payment_failed", "payment_failed", "open", "payment attempt 2 failed"),
    ],
)
def test_an_unpaid_end_carries_no_amount_and_says_why(
    event_type: str, kind: str, status: str, reason: str
) -> None:
    obj = invoice(status=status, amount_paid=0, attempt_count=2)
    signal = payment_event(kind, event(event_type, obj), wire.Invoice.model_validate(obj))
    assert (signal.kind, signal.amount) == (kind, None)
    assert signal.reason is not None and reason in signal.reason


def test_a_decline_message_is_the_reason_when_stripe_gives_one() -> None:
    obj = invoice(
        status="open",
        amount_paid=0,
        payment_intent={"last_payment_error": {"message": "Your card was declined."}},
    )
    signal = payment_event(
        "payment_failed", event("invoice.payment_failed", obj), wire.Invoice.model_validate(obj)
    )
    assert signal.reason == "Your card was declined."
