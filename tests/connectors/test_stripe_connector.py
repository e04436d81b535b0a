"""The Stripe connector against the Stripe stand-in running as its own process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import stripe as stripe_lib

from canonical import (
    Address,
    Contact,
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
    IdempotencyConflict,
    NotFound,
    RateLimitedError,
    TransientError,
    ValidationFailed,
)
from connectors.stripe import (
    PaymentDeclined,
    StripeBilling,
    WebhookRejected,
    payment_from_stripe,
    verify_webhook,
    wire,
)
from tests.fixtures.ports import free_port
from tests.fixtures.stripe import StripeStandin

ENTITY = LegalEntity(code="DE01", name="q2c Consulting GmbH", country="DE", currency="EUR")


def a_customer(name: str = "Acme GmbH") -> Customer:
    return Customer(
        id=f"CUST-{uuid.uuid4().hex[:8]}",
        name=name,
        legal_entity=ENTITY,
        addresses=[Address(street="Hauptstr. 1", city="Berlin", postal_code="10115", country="DE")],
        tax_id="DE123456789",
        currency="EUR",
        payment_terms=PaymentTerms(net_days=30),
        contacts=[Contact(name="Ada", email="ada@acme.example", role="billing")],
    )


def an_invoice(customer: Customer) -> Invoice:
    return Invoice(
        id=f"INV-{uuid.uuid4().hex[:8]}",
        customer_id=customer.id,
        currency="EUR",
        po_number="PO-77",
        lines=[
            InvoiceLine(
                id="L1",
                description="Senior consultant",
                quantity=Decimal("7.5"),
                unit_price=Money.of("123.45", "EUR"),
                tax_rate=Decimal("0.19"),
            ),
            InvoiceLine(
                id="L2",
                description="Workshop (fixed fee)",
                quantity=Decimal(1),
                unit_price=Money.of("1500.00", "EUR"),
                tax_rate=Decimal("0.19"),
            ),
            InvoiceLine(
                description="Travel, untaxed",
                quantity=Decimal(3),
                unit_price=Money.of("33.333", "EUR"),
                tax_rate=Decimal(0),
            ),
        ],
    )


def key() -> str:
    return f"test:{uuid.uuid4()}"


async def new_open_invoice(
    billing: StripeBilling, customer: Customer | None = None
) -> tuple[str, Invoice]:
    customer = customer or a_customer()
    customer_id = await billing.create_customer(customer, idempotency_key=key())
    invoice = an_invoice(customer)
    invoice_id = await billing.create_invoice(
        invoice, customer_id=customer_id, idempotency_key=key(), days_until_due=30
    )
    await billing.finalize_invoice(invoice_id, idempotency_key=key())
    return invoice_id, invoice


async def test_invoice_created_finalized_and_paid(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    customer = a_customer()
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    assert customer_id.startswith("cus_")
    on_stripe = await stripe_billing.get_customer(customer_id)
    assert on_stripe.name == "Acme GmbH"
    assert on_stripe.email == "ada@acme.example"
    assert on_stripe.address is not None and on_stripe.address.city == "Berlin"
    assert on_stripe.metadata["q2c_customer_id"] == customer.id

    invoice = an_invoice(customer)
    invoice_id = await stripe_billing.create_invoice(
        invoice, customer_id=customer_id, idempotency_key=key(), days_until_due=30
    )
    draft = await stripe_billing.get_invoice(invoice_id)
    assert draft.status is InvoiceStatus.DRAFT
    assert draft.id == invoice.id
    assert draft.customer_id == customer.id
    assert draft.external_ids == {"stripe": invoice_id, "stripe_customer": customer_id}
    assert [ln.model_dump(exclude={"id"}) for ln in draft.lines] == [
        ln.model_dump(exclude={"id"}) for ln in invoice.lines
    ]
    assert [ln.id for ln in draft.lines[:2]] == ["L1", "L2"]
    assert draft.total == invoice.total  # same cents on both sides, tax per line

    finalized = await stripe_billing.finalize_invoice(invoice_id, idempotency_key=key())
    assert finalized.status is InvoiceStatus.OPEN
    assert finalized.number is not None and finalized.number.endswith("-0001")
    assert finalized.issued_at is not None
    assert finalized.due_date == (finalized.issued_at + timedelta(days=30)).date()

    paid = await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())
    assert paid.status is InvoiceStatus.PAID
    raw = await stripe_billing.get_stripe_invoice(invoice_id)
    assert Money.from_minor(raw.amount_paid, "EUR") == invoice.total
    payment = await stripe_billing.get_payment(invoice_id)
    assert payment is not None
    assert payment.amount == invoice.total
    assert payment.invoice_id == invoice.id


async def test_same_idempotency_key_twice_gives_one_object(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    customer = a_customer("Once Only Ltd")
    customer_key = key()
    first = await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    second = await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    assert first == second
    named = stripe.api("GET", "/v1/customers", params={"limit": 100}).json()["data"]
    assert [c["id"] for c in named if c["name"] == "Once Only Ltd"] == [first]

    invoice = an_invoice(customer)
    invoice_key = key()
    one = await stripe_billing.create_invoice(
        invoice, customer_id=first, idempotency_key=invoice_key, days_until_due=14
    )
    two = await stripe_billing.create_invoice(
        invoice, customer_id=first, idempotency_key=invoice_key, days_until_due=14
    )
    assert one == two
    assert len((await stripe_billing.get_invoice(one)).lines) == len(invoice.lines)
    invoices = stripe.api("GET", "/v1/invoices", params={"customer": first}).json()["data"]
    assert [i["id"] for i in invoices] == [one]


async def test_rate_limit_becomes_retryable_error_with_delay(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    stripe.inject_fault(kind="429", path="/v1/customers", method="POST", retry_after=7)
    customer = a_customer()
    customer_key = key()
    with pytest.raises(RateLimitedError) as limited:
        await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    assert limited.value.retryable is True
    assert limited.value.retry_after == timedelta(seconds=7)
    assert limited.value.status == 429
    # Temporal's next attempt, same key: it goes through, once.
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    assert (await stripe_billing.get_customer(customer_id)).metadata["q2c_customer_id"] == (
        customer.id
    )


async def test_server_error_is_transient_and_the_retry_creates_one_object(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    stripe.inject_fault(kind="500", path="/v1/invoiceitems", method="POST")
    customer = a_customer("Flaky Items AG")
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    invoice = an_invoice(customer)
    invoice_key = key()
    with pytest.raises(TransientError) as failed:
        await stripe_billing.create_invoice(
            invoice, customer_id=customer_id, idempotency_key=invoice_key, days_until_due=30
        )
    assert failed.value.retryable is True
    assert failed.value.status == 500
    invoice_id = await stripe_billing.create_invoice(
        invoice, customer_id=customer_id, idempotency_key=invoice_key, days_until_due=30
    )
    assert (await stripe_billing.get_invoice(invoice_id)).total == invoice.total
    invoices = stripe.api("GET", "/v1/invoices", params={"customer": customer_id}).json()
    assert len(invoices["data"]) == 1


async def test_unreachable_stripe_is_transient() -> None:
    async with StripeBilling("sk_test_x", base_url=f"http://127.0.0.1:{free_port()}") as billing:
        with pytest.raises(TransientError) as unreachable:
            await billing.get_invoice("in_1")
    assert unreachable.value.retryable is True


async def test_wrong_api_key_is_an_auth_failure(stripe: StripeStandin) -> None:
    async with StripeBilling("sk_live_not_here", base_url=stripe.url) as billing:
        with pytest.raises(AuthFailed) as denied:
            await billing.get_invoice("in_1")
    assert denied.value.retryable is False
    assert denied.value.status == 401


async def test_key_reused_with_other_params_is_a_conflict(
    stripe_billing: StripeBilling,
) -> None:
    shared = key()
    await stripe_billing.create_customer(a_customer("First"), idempotency_key=shared)
    with pytest.raises(IdempotencyConflict) as conflict:
        await stripe_billing.create_customer(a_customer("Second"), idempotency_key=shared)
    assert conflict.value.retryable is False


async def test_refused_parameter_is_named(stripe_billing: StripeBilling) -> None:
    customer = a_customer()
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    with pytest.raises(ValidationFailed) as refused:
        await stripe_billing.create_invoice(
            an_invoice(customer), customer_id=customer_id, idempotency_key=key(), days_until_due=-1
        )
    assert refused.value.field == "days_until_due"
    assert refused.value.retryable is False

    with pytest.raises(NotFound) as missing:
        await stripe_billing.create_invoice(
            an_invoice(customer), customer_id="cus_nobody", idempotency_key=key(), days_until_due=1
        )
    assert missing.value.field == "customer"


async def test_void_from_open_and_invalid_transition_refused(
    stripe_billing: StripeBilling,
) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    voided = await stripe_billing.void_invoice(invoice_id, idempotency_key=key())
    assert voided.status is InvoiceStatus.VOID
    with pytest.raises(ValidationFailed) as refused:
        await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())
    assert refused.value.code == "invoice_not_editable"
    assert (await stripe_billing.get_invoice(invoice_id)).status is InvoiceStatus.VOID


async def test_state_change_already_done_counts_as_done(stripe_billing: StripeBilling) -> None:
    """A retry that arrives with a fresh key (past Stripe's 24 h window) still converges."""
    invoice_id, _ = await new_open_invoice(stripe_billing)
    again = await stripe_billing.finalize_invoice(invoice_id, idempotency_key=key())
    assert again.status is InvoiceStatus.OPEN
    await stripe_billing.pay_invoice(invoice_id, idempotency_key=key(), paid_out_of_band=True)
    paid_again = await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())
    assert paid_again.status is InvoiceStatus.PAID


async def test_paid_webhook_is_signed_and_verifiable(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    invoice_id, invoice = await new_open_invoice(stripe_billing)
    await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())

    delivery = stripe.wait_for_event("invoice.paid", invoice_id)
    assert delivery.signature is not None
    event = verify_webhook(delivery.body, delivery.signature, stripe.webhook_secret)
    assert event["type"] == "invoice.paid"
    assert event["data"]["object"]["status"] == "paid"
    assert event["data"]["object"]["metadata"]["q2c_invoice_id"] == invoice.id
    assert event["livemode"] is False
    payment = payment_from_stripe(wire.Invoice.model_validate(event["data"]["object"]))
    assert payment is not None
    assert payment.amount == invoice.total
    assert payment.invoice_id == invoice.id
    # The same event is kept by the stand-in, as Stripe keeps events.
    assert stripe.api("GET", f"/v1/events/{event['id']}").json()["type"] == "invoice.paid"

    tampered = delivery.body.replace(b'"paid"', b'"void"', 1)
    with pytest.raises(WebhookRejected):
        verify_webhook(tampered, delivery.signature, stripe.webhook_secret)
    with pytest.raises(WebhookRejected):
        verify_webhook(delivery.body, delivery.signature, "whsec_wrong")
    with pytest.raises(WebhookRejected):
        verify_webhook(delivery.body, None, stripe.webhook_secret)
    stale = stripe_lib.WebhookSignature.generate_signature_header(
        delivery.body.decode(), stripe.webhook_secret, timestamp=int(time.time()) - 600
    )
    with pytest.raises(WebhookRejected, match="tolerance"):
        verify_webhook(delivery.body, stale, stripe.webhook_secret)


async def test_webhook_retried_when_receiver_fails(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    stripe.refuse_webhooks(2, event_type="customer.created")
    customer_id = await stripe_billing.create_customer(a_customer(), idempotency_key=key())
    delivery = stripe.wait_for_event("customer.created", customer_id)
    event = verify_webhook(delivery.body, delivery.signature, stripe.webhook_secret)
    refused = [e for e in stripe.refused_events() if e["data"]["object"]["id"] == customer_id]
    assert [e["id"] for e in refused] == [event["id"], event["id"]]  # same event, third try
    # The stand-in marks the event delivered once the receiver's 200 is in.
    deadline = time.monotonic() + 5
    while stripe.api("GET", f"/v1/events/{event['id']}").json()["pending_webhooks"]:
        assert time.monotonic() < deadline, "event still pending after delivery"
        await asyncio.sleep(0.05)


async def test_declined_payment(stripe: StripeStandin, stripe_billing: StripeBilling) -> None:
    customer = a_customer("Declined Corp")
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    # The stand-in's test hook, as a test card would be at Stripe.
    stripe.api(
        "POST", f"/v1/customers/{customer_id}", data={"metadata[standin_payment]": "fail"}
    ).raise_for_status()
    invoice_id, _ = await new_open_invoice_for(stripe_billing, customer, customer_id)

    with pytest.raises(PaymentDeclined) as declined:
        await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())
    assert declined.value.retryable is False
    assert declined.value.code == "card_declined"
    assert declined.value.decline_code == "generic_decline"
    assert declined.value.status == 402
    assert (await stripe_billing.get_invoice(invoice_id)).status is InvoiceStatus.OPEN
    failed = stripe.wait_for_event("invoice.payment_failed", invoice_id)
    assert json.loads(failed.body)["data"]["object"]["attempt_count"] == 1

    paid = await stripe_billing.pay_invoice(
        invoice_id, idempotency_key=key(), paid_out_of_band=True
    )
    assert paid.status is InvoiceStatus.PAID


async def new_open_invoice_for(
    billing: StripeBilling, customer: Customer, customer_id: str
) -> tuple[str, Invoice]:
    invoice = an_invoice(customer)
    invoice_id = await billing.create_invoice(
        invoice, customer_id=customer_id, idempotency_key=key(), days_until_due=30
    )
    await billing.finalize_invoice(invoice_id, idempotency_key=key())
    return invoice_id, invoice


async def test_customers_are_paged(stripe_billing: StripeBilling) -> None:
    created = [
        await stripe_billing.create_customer(a_customer(f"Paged {n}"), idempotency_key=key())
        for n in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while len(seen) < 5:
        page = await stripe_billing.list_customers(limit=2, starting_after=cursor)
        assert len(page.data) <= 2
        seen += [c.id for c in page.data]
        assert page.has_more
        cursor = page.data[-1].id
    assert seen[:5] == list(reversed(created))


async def test_many_lines_come_back_in_order(stripe_billing: StripeBilling) -> None:
    customer = a_customer()
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    lines = [
        InvoiceLine(
            id=f"T{n}",
            description=f"Timesheet week {n}",
            quantity=Decimal("37.5"),
            unit_price=Money.of("95", "EUR"),
            tax_rate=Decimal("0.07") if n % 2 else Decimal("0.19"),
        )
        for n in range(14)
    ]
    invoice = Invoice(id="INV-MANY", customer_id=customer.id, currency="EUR", lines=lines)
    invoice_id = await stripe_billing.create_invoice(
        invoice, customer_id=customer_id, idempotency_key=key(), days_until_due=30
    )
    back = await stripe_billing.get_invoice(invoice_id)
    assert back.lines == lines
    assert back.total == invoice.total


async def test_state_survives_a_restart(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    customer = a_customer("Persistent KG")
    customer_key = key()
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    invoice_id, _ = await new_open_invoice_for(stripe_billing, customer, customer_id)

    stripe.restart()

    assert (await stripe_billing.get_customer(customer_id)).name == "Persistent KG"
    assert (await stripe_billing.get_invoice(invoice_id)).status is InvoiceStatus.OPEN
    again = await stripe_billing.create_customer(customer, idempotency_key=customer_key)
    assert again == customer_id


async def test_undelivered_webhooks_are_sent_after_a_restart(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    stripe.refuse_webhooks(1000, event_type="customer.created")
    customer_id = await stripe_billing.create_customer(a_customer(), idempotency_key=key())
    deadline = time.monotonic() + 10
    while not any(e["data"]["object"]["id"] == customer_id for e in stripe.refused_events()):
        assert time.monotonic() < deadline, "the stand-in never tried to deliver"
        await asyncio.sleep(0.05)

    stripe.stop()  # while the receiver still refuses: only the next process can deliver
    stripe.refuse_webhooks(0)
    stripe.start()

    delivery = stripe.wait_for_event("customer.created", customer_id)
    assert verify_webhook(delivery.body, delivery.signature, stripe.webhook_secret)


async def test_events_are_listed_by_type_since_a_time_and_paged(
    stripe_billing: StripeBilling,
) -> None:
    paid_id, _ = await new_open_invoice(stripe_billing)
    voided_id, _ = await new_open_invoice(stripe_billing)
    await stripe_billing.pay_invoice(paid_id, idempotency_key=key())
    await stripe_billing.void_invoice(voided_id, idempotency_key=key())
    paid = await stripe_billing.get_stripe_invoice(paid_id)
    since = paid.created

    found, after = [], None
    while True:
        page = await stripe_billing.list_events(
            ["invoice.paid", "invoice.voided"], created_gte=since, limit=1, starting_after=after
        )
        found += [(e.type, e.data.object["id"]) for e in page.data]
        assert all(e.created >= since for e in page.data)
        if not page.has_more:
            break
        after = page.data[-1].id
    assert ("invoice.paid", paid_id) in found and ("invoice.voided", voided_id) in found
    assert {t for t, _ in found} <= {"invoice.paid", "invoice.voided"}
