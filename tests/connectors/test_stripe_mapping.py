"""Stripe mapping and error classification, without a server."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import stripe as stripe_lib

from canonical import (
    Address,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LegalEntity,
    Money,
    PaymentTerms,
)
from connectors.errors import (
    AuthFailed,
    ConflictError,
    IdempotencyConflict,
    NotFound,
    RateLimitedError,
    TransientError,
    ValidationFailed,
)
from connectors.stripe import PaymentDeclined, WebhookRejected, classify, verify_webhook, wire
from connectors.stripe.mapping import (
    customer_params,
    invoice_from_stripe,
    invoice_item_params,
    invoice_line,
    payment_from_stripe,
    tax_percentage,
    unit_amount_decimal,
)

ENTITY = LegalEntity(code="JP01", name="q2c KK", country="JP", currency="JPY")


def test_unit_prices_go_out_exact_in_minor_units() -> None:
    assert unit_amount_decimal(Money.of("123.456", "EUR")) == "12345.6"
    assert unit_amount_decimal(Money.of("1500", "EUR")) == "150000"
    assert unit_amount_decimal(Money.of("15000", "JPY")) == "15000"
    assert unit_amount_decimal(Money.of("1.250", "KWD")) == "1250"
    assert tax_percentage(Decimal("0.19")) == Decimal(19)
    assert tax_percentage(Decimal("0.077")) == Decimal("7.7")


def test_invoice_item_params() -> None:
    line = InvoiceLine(
        id="L9",
        description="Design",
        quantity=Decimal("2.50"),
        unit_price=Money.of("99.99", "USD"),
        tax_rate=Decimal("0.08"),
    )
    params = invoice_item_params(line, customer_id="cus_1", invoice_id="in_1", tax_rate_id="txr_8")
    assert params == {
        "customer": "cus_1",
        "invoice": "in_1",
        "currency": "usd",
        "description": "Design",
        "quantity_decimal": "2.5",
        "unit_amount_decimal": "9999",
        "tax_rates": ["txr_8"],
        "metadata": {"q2c_line_id": "L9"},
    }


def test_customer_update_clears_what_q2c_no_longer_has() -> None:
    customer = Customer(
        id="C1",
        name="Tanaka",
        legal_entity=ENTITY,
        addresses=[Address(street="1-1 Chiyoda", city="Tokyo", country="jp")],
        currency="JPY",
        payment_terms=PaymentTerms(net_days=0),
    )
    created = customer_params(customer)
    assert "email" not in created
    assert created["address"] == {"line1": "1-1 Chiyoda", "city": "Tokyo", "country": "JP"}
    assert created["metadata"] == {
        "q2c_customer_id": "C1",
        "q2c_legal_entity": "JP01",
        "q2c_net_days": "0",
    }
    updated = customer_params(customer, update=True)
    assert updated["email"] == ""
    assert updated["address"]["postal_code"] == ""
    assert updated["metadata"]["q2c_tax_id"] == ""


def stripe_invoice(**overrides: object) -> wire.Invoice:
    finalized = int(datetime(2025, 3, 1, 9, tzinfo=UTC).timestamp())
    body: dict[str, object] = {
        "id": "in_1",
        "object": "invoice",
        "customer": "cus_1",
        "currency": "jpy",
        "status": "paid",
        "number": "ABCD1234-0007",
        "created": finalized - 60,
        "due_date": finalized + 14 * 86400,
        "amount_due": 110000,
        "amount_paid": 110000,
        "amount_remaining": 0,
        "subtotal": 100000,
        "total": 110000,
        "status_transitions": {"finalized_at": finalized, "paid_at": finalized + 3600},
        "lines": {"object": "list", "data": [], "has_more": False},
        "metadata": {"q2c_invoice_id": "INV-7", "q2c_customer_id": "C1"},
        "some_future_field": {"ignored": True},
    }
    body.update(overrides)
    return wire.Invoice.model_validate_json(json.dumps(body))


def test_invoice_comes_back_canonical_with_exact_amounts() -> None:
    line = wire.LineItem.model_validate_json(
        """{"id": "il_1", "object": "line_item", "amount": 100000, "currency": "jpy",
            "description": "Workshop", "quantity": 1, "quantity_decimal": "8",
            "pricing": {"unit_amount_decimal": "12500"},
            "taxes": [{"amount": 10000, "tax_behavior": "exclusive",
                       "tax_rate_details": {"tax_rate": "txr_10"}, "taxable_amount": 100000}],
            "metadata": {}}"""
    )
    invoice = invoice_from_stripe(stripe_invoice(), [line], {"txr_10": Decimal("10.0")})
    assert invoice.id == "INV-7"
    assert invoice.customer_id == "C1"
    assert invoice.currency == "JPY"
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.issued_at == datetime(2025, 3, 1, 9, tzinfo=UTC)
    assert invoice.due_date == date(2025, 3, 15)
    assert invoice.lines == [
        InvoiceLine(
            id="il_1",
            description="Workshop",
            quantity=Decimal(8),
            unit_price=Money.of("12500", "JPY"),
            tax_rate=Decimal("0.1"),
        )
    ]
    assert invoice.total == Money.of("110000", "JPY")
    assert invoice.external_ids == {"stripe": "in_1", "stripe_customer": "cus_1"}

    payment = payment_from_stripe(stripe_invoice())
    assert payment is not None
    assert payment.amount == Money.of("110000", "JPY")
    assert payment.received_at == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert payment.invoice_id == "INV-7"
    assert payment_from_stripe(stripe_invoice(status="open", amount_paid=0)) is None


def test_invoice_made_outside_q2c_keeps_stripe_ids() -> None:
    draft = stripe_invoice(status="draft", number=None, status_transitions={}, metadata={})
    invoice = invoice_from_stripe(draft, [], {})
    assert isinstance(invoice, Invoice)
    assert (invoice.id, invoice.customer_id, invoice.number) == ("in_1", "cus_1", None)


def test_amount_only_line_gets_its_unit_price_from_the_amount() -> None:
    line = wire.LineItem.model_validate(
        {"id": "il_2", "amount": -2500, "currency": "eur", "quantity": 1, "description": None}
    )
    mapped = invoice_line(line, {})
    assert mapped.unit_price == Money.of("-25.00", "EUR")
    assert mapped.description == "(no description)"
    assert mapped.tax_rate == 0


def error(
    cls: type[stripe_lib.StripeError],
    status: int | None,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    json_body: dict[str, object] | None = None,
) -> stripe_lib.StripeError:
    if cls in (stripe_lib.InvalidRequestError, stripe_lib.CardError):
        return cls("msg", param, code, http_status=status, json_body=json_body, headers=headers)
    return cls("msg", http_status=status, json_body=json_body, headers=headers, code=code)


@pytest.mark.parametrize(
    ("exc", "expected", "retryable"),
    [
        (error(stripe_lib.APIError, 409, code="lock_timeout"), ConflictError, True),
        # Another request with the same key is in flight: retry it later.
        (error(stripe_lib.APIError, 409, code="idempotency_key_in_use"), ConflictError, True),
        (error(stripe_lib.APIError, 503), TransientError, True),
        (error(stripe_lib.APIError, None), TransientError, True),
        (error(stripe_lib.APIConnectionError, None), TransientError, True),
        (error(stripe_lib.AuthenticationError, 401), AuthFailed, False),
        (error(stripe_lib.PermissionError, 403), AuthFailed, False),
        (error(stripe_lib.IdempotencyError, 400), IdempotencyConflict, False),
        (error(stripe_lib.InvalidRequestError, 404, param="id"), NotFound, False),
        (error(stripe_lib.InvalidRequestError, 400, param="currency"), ValidationFailed, False),
    ],
)
def test_classification(
    exc: stripe_lib.StripeError, expected: type[Exception], retryable: bool
) -> None:
    classified = classify(exc)
    assert type(classified) is expected
    assert classified.retryable is retryable
    assert classified.system == "stripe"


def test_classification_keeps_field_delay_and_decline() -> None:
    refused = classify(error(stripe_lib.InvalidRequestError, 400, param="currency"))
    assert refused.field == "currency"
    limited = classify(error(stripe_lib.RateLimitError, 429, headers={"retry-after": "12"}))
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == timedelta(seconds=12)
    declined = classify(
        error(
            stripe_lib.CardError,
            402,
            code="card_declined",
            json_body={"error": {"decline_code": "insufficient_funds"}},
        )
    )
    assert isinstance(declined, PaymentDeclined)
    assert declined.decline_code == "insufficient_funds"
    assert declined.error_type == "PaymentDeclined"


def test_webhook_body_must_be_a_signed_event() -> None:
    secret = "whsec_unit"
    event = b'{"id": "evt_1", "object": "event", "data": {"object": {"percentage": 7.7}}}'
    header = stripe_lib.WebhookSignature.generate_signature_header(event.decode(), secret)
    parsed = verify_webhook(event, header, secret)
    assert parsed["data"]["object"]["percentage"] == Decimal("7.7")

    other = b'{"id": "ch_1", "object": "charge"}'
    signed = stripe_lib.WebhookSignature.generate_signature_header(other.decode(), secret)
    with pytest.raises(WebhookRejected, match="not a Stripe event"):
        verify_webhook(other, signed, secret)
    future = stripe_lib.WebhookSignature.generate_signature_header(
        event.decode(), secret, timestamp=int(time.time()) + 30
    )
    assert verify_webhook(event, future, secret)["id"] == "evt_1"
    with pytest.raises(WebhookRejected):
        verify_webhook(event, "t=abc,v1=zzz", secret)


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("invoice.paid", "paid"),
        ("invoice.payment_failed", "payment_failed"),
        ("invoice.voided", "voided"),
        ("invoice.marked_uncollectible", "uncollectible"),
        # Not acted on: `invoice.paid` follows a success; the rest move no payment.
        ("invoice.payment_succeeded", None),
        ("invoice.finalized", None),
        ("invoice.updated", None),
        ("customer.created", None),
        ("", None),
        (None, None),
        (["invoice.paid"], None),
    ],
)
def test_invoice_events_map_to_payment_kinds(event_type: object, kind: str | None) -> None:
    from connectors.stripe import payment_kind

    assert payment_kind(event_type) == kind
