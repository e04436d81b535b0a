"""`POST /webhooks/stripe` in-process, fed the real signed deliveries of the Stripe stand-in
process, against the session's Temporal dev server and a real SQLite store.

The time-to-invoice workflow is not what is under test: a small listener workflow, started
under a time-to-invoice workflow id, collects the `payment` signals it gets until told to
stop and returns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from canonical import Address, Customer, Invoice, InvoiceLine, LegalEntity, Money, PaymentTerms
from connectors.stripe import PaymentDeclined, StripeBilling
from settings import Settings
from store import Store
from tests.fixtures.ports import free_port
from tests.fixtures.service import running_service
from tests.fixtures.stripe import Delivery, StripeStandin
from workflows.time_to_invoice import BILLING_METADATA_KEY, PAYMENT, PaymentEvent, workflow_id

URL = "/webhooks/stripe"
ENTITY = LegalEntity(code="DE01", name="q2c Consulting GmbH", country="DE", currency="EUR")
#: 10 h at 123.45 EUR = 1,234.50 net; 19 % tax 234.555 rounds half up to 234.56.
INVOICE_TOTAL = Decimal("1469.06")


@workflow.defn(name="PaymentListener", sandboxed=False)
class PaymentListener:
    def __init__(self) -> None:
        self.events: list[PaymentEvent] = []
        self.stopped = False

    @workflow.signal(name=PAYMENT)
    def payment(self, event: PaymentEvent) -> None:
        self.events.append(event)

    @workflow.signal
    def stop(self) -> None:
        self.stopped = True

    @workflow.run
    async def run(self) -> list[PaymentEvent]:
        await workflow.wait_condition(lambda: self.stopped)
        return self.events


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def stripe_settings(service_settings: Settings, stripe: StripeStandin) -> Settings:
    return service_settings.model_copy(
        update={"stripe_webhook_secret": SecretStr(stripe.webhook_secret)}
    )


@pytest.fixture
async def http(stripe_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(stripe_settings) as client:
        yield client


@pytest.fixture
async def service_store(stripe_settings: Settings, http: httpx.AsyncClient) -> AsyncIterator[Store]:
    """The service's own database (migrated before its start), read as a person would."""
    store = Store.from_url(stripe_settings.store_url)
    yield store
    await store.close()


@pytest.fixture
async def listener(
    temporal_client: Client, task_queue: str
) -> AsyncIterator[WorkflowHandle[Any, list[PaymentEvent]]]:
    """A running listener under a time-to-invoice workflow id, its worker polling."""
    async with Worker(temporal_client, task_queue=task_queue, workflows=[PaymentListener]):
        handle = await temporal_client.start_workflow(
            PaymentListener.run,
            id=workflow_id(f"TEST-{uuid.uuid4().hex[:10]}", "2026-11"),
            task_queue=task_queue,
        )
        try:
            yield handle
        finally:
            with contextlib.suppress(RPCError):  # already stopped by the test
                await handle.terminate(reason="test over")


async def events_of(handle: WorkflowHandle[Any, list[PaymentEvent]]) -> list[PaymentEvent]:
    """Stop the listener and take what it got (every answered delivery's signal precedes
    the stop in its history)."""
    await handle.signal(PaymentListener.stop)
    return await handle.result()


# ----------------------------------------------------------------------------- helpers


def a_customer(name: str) -> Customer:
    return Customer(
        id=f"CUST-{uuid.uuid4().hex[:8]}",
        name=name,
        legal_entity=ENTITY,
        addresses=[Address(street="Hauptstr. 1", city="Berlin", postal_code="10115", country="DE")],
        tax_id=None,
        currency="EUR",
        payment_terms=PaymentTerms(net_days=30),
        contacts=[],
    )


def key() -> str:
    return f"test:{uuid.uuid4()}"


async def open_invoice(
    billing: StripeBilling,
    stripe: StripeStandin,
    run: str | None,
    *,
    customer_name: str = "Acme GmbH",
    card_declines: bool = False,
) -> str:
    """A finalized invoice whose metadata names `run` (or no run), as time-to-invoice makes."""
    customer = a_customer(customer_name)
    customer_id = await billing.create_customer(customer, idempotency_key=key())
    if card_declines:  # the stand-in's test hook, as a test card would be at Stripe
        stripe.api(
            "POST", f"/v1/customers/{customer_id}", data={"metadata[standin_payment]": "fail"}
        ).raise_for_status()
    invoice = Invoice(
        id=f"INV-{uuid.uuid4().hex[:8]}",
        customer_id=customer.id,
        currency="EUR",
        lines=[
            InvoiceLine(
                description="Senior consultant",
                quantity=Decimal(10),
                unit_price=Money.of("123.45", "EUR"),
                tax_rate=Decimal("0.19"),
            )
        ],
    )
    invoice_id = await billing.create_invoice(
        invoice,
        customer_id=customer_id,
        idempotency_key=key(),
        days_until_due=30,
        metadata={BILLING_METADATA_KEY: run} if run else None,
    )
    await billing.finalize_invoice(invoice_id, idempotency_key=key())
    return invoice_id


async def paid_delivery(billing: StripeBilling, stripe: StripeStandin, run: str | None) -> Delivery:
    invoice_id = await open_invoice(billing, stripe, run)
    await billing.pay_invoice(invoice_id, idempotency_key=key())
    return await delivery_of(stripe, "invoice.paid", invoice_id)


async def delivery_of(stripe: StripeStandin, event_type: str, object_id: str) -> Delivery:
    """The stand-in's signed delivery as it reached its webhook receiver."""
    return await asyncio.to_thread(stripe.wait_for_event, event_type, object_id)


async def post(
    http: httpx.AsyncClient, delivery: Delivery, *, signature: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    header = signature if signature is not None else delivery.signature
    if header:
        headers["Stripe-Signature"] = header
    return await http.post(URL, content=delivery.body, headers=headers)


def signalled(run: str) -> dict[str, Any]:
    """The answer to a delivery that signalled `run` for the first time."""
    return {"workflow_id": run, "signalled": "payment", "duplicate": False}


def invoice_id_of(delivery: Delivery) -> str:
    value: str = delivery.event["data"]["object"]["id"]
    return value


# ------------------------------------------------------------------------------- tests


async def test_a_paid_invoice_signals_its_run(
    caplog: pytest.LogCaptureFixture,
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, listener.id)
    event = delivery.event

    with caplog.at_level(logging.INFO, logger="q2c.service.webhooks"):
        answer = await post(http, delivery)

    assert answer.status_code == 200
    assert answer.json() == signalled(listener.id)
    [got] = await events_of(listener)
    assert got.event_id == event["id"]
    assert got.kind == "paid"
    assert got.billing_invoice_id == invoice_id_of(delivery)
    assert isinstance(got.amount, Decimal)
    assert got.amount == INVOICE_TOTAL
    assert str(got.amount) == "1469.06"  # major units, exact to the cent
    assert got.occurred_at == datetime.fromtimestamp(event["created"], UTC)
    assert got.occurred_at.tzinfo is not None
    assert got.reason is None
    recorded = await service_store.inbound_event("stripe", event["id"])
    assert recorded is not None and recorded.workflow_id == listener.id
    assert await service_store.exceptions() == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "q2c.service.webhooks"]
    for part in (
        "source=stripe",
        f"event_id={event['id']}",
        "type=invoice.paid",
        f"invoice_id={got.billing_invoice_id}",
        f"workflow_id={listener.id}",
        "outcome=signalled",
        "status=200",
    ):
        assert part in line
    assert stripe.webhook_secret not in line and str(delivery.signature) not in line


async def test_the_same_delivery_ten_times_at_once_signals_once(
    http: httpx.AsyncClient,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, listener.id)

    answers = await asyncio.gather(*(post(http, delivery) for _ in range(10)))
    later = await post(http, delivery)  # Stripe's retry, after the event was recorded

    assert [a.status_code for a in answers] == [200] * 10
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 9
    assert {a.json()["workflow_id"] for a in answers} == {listener.id}
    assert later.status_code == 200
    assert later.json() == {"workflow_id": listener.id, "duplicate": True}
    events = await events_of(listener)
    assert [e.event_id for e in events] == [delivery.event["id"]]


async def test_unverifiable_deliveries_are_refused_and_signal_nothing(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, listener.id)
    assert delivery.signature is not None
    timestamp, _, digest = delivery.signature.partition(",v1=")
    forged = f"{timestamp},v1={'0' * len(digest)}"
    wrong_secret = sign(delivery.body, "whsec_not_the_secret", time.time())
    stale = sign(delivery.body, stripe.webhook_secret, time.time() - 600)
    tampered = Delivery(delivery.body.replace(b'"paid"', b'"open"', 1), delivery.signature)
    assert tampered.body != delivery.body

    answers = [
        await post(http, delivery, signature=forged),
        await post(http, delivery, signature=wrong_secret),
        await post(http, delivery, signature=stale),
        await post(http, delivery, signature=""),  # no header at all
        await post(http, tampered),
    ]

    for answer in answers:
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert "signature" in error
        assert stripe.webhook_secret not in error and digest not in error
    assert "tolerance" in answers[2].json()["error"]
    assert await service_store.inbound_event("stripe", delivery.event["id"]) is None
    # Nothing was recorded, so the genuine delivery still gets through, once.
    genuine = await post(http, delivery)
    assert genuine.json() == signalled(listener.id)
    assert [e.event_id for e in await events_of(listener)] == [delivery.event["id"]]


def sign(body: bytes, secret: str, at: float) -> str:
    timestamp = int(at)
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


async def test_a_declined_payment_signals_payment_failed_with_a_reason(
    http: httpx.AsyncClient,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    invoice_id = await open_invoice(stripe_billing, stripe, listener.id, card_declines=True)
    with pytest.raises(PaymentDeclined):
        await stripe_billing.pay_invoice(invoice_id, idempotency_key=key())
    delivery = await delivery_of(stripe, "invoice.payment_failed", invoice_id)

    answer = await post(http, delivery)

    assert answer.status_code == 200
    assert answer.json()["signalled"] == "payment"
    [got] = await events_of(listener)
    assert got.kind == "payment_failed"
    assert got.event_id == delivery.event["id"]
    assert got.billing_invoice_id == invoice_id
    assert got.amount is None
    assert got.reason  # the stand-in's event carries no decline message: the attempt is named
    assert "attempt 1" in got.reason


async def test_an_invoice_naming_no_run_is_recorded_as_an_exception(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, None)
    invoice_id = invoice_id_of(delivery)

    answer = await post(http, delivery)
    again = await post(http, delivery)

    assert answer.status_code == 200
    assert answer.json() == {
        "exception": "unknown_billing_invoice",
        "invoice_id": invoice_id,
        "duplicate": False,
    }
    assert again.status_code == 200 and again.json()["duplicate"] is True
    [exception] = await service_store.exceptions()
    assert exception.kind == "unknown_billing_invoice"
    assert exception.correlation_id == invoice_id
    assert invoice_id in exception.message
    assert "1469.06 EUR" in exception.message
    assert "Acme GmbH" in exception.message
    assert "no q2c_workflow_id" in exception.message
    assert exception.detail["event_id"] == delivery.event["id"]
    assert exception.detail["amount"] == "1469.06"


async def test_an_invoice_naming_a_run_that_does_not_exist_is_an_exception(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
) -> None:
    ghost = workflow_id(f"GHOST-{uuid.uuid4().hex[:10]}", "2026-11")
    delivery = await paid_delivery(stripe_billing, stripe, ghost)

    answer = await post(http, delivery)

    assert answer.status_code == 200
    assert answer.json()["exception"] == "unknown_billing_invoice"
    [exception] = await service_store.exceptions()
    assert exception.workflow_id == ghost
    assert ghost in exception.message and "does not exist or has closed" in exception.message
    assert invoice_id_of(delivery) in exception.message


async def test_a_closed_run_is_an_exception_too(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    assert await events_of(listener) == []  # the run is over before billing reports
    delivery = await paid_delivery(stripe_billing, stripe, listener.id)

    answer = await post(http, delivery)

    assert answer.status_code == 200
    assert answer.json()["exception"] == "unknown_billing_invoice"
    [exception] = await service_store.exceptions()
    assert exception.workflow_id == listener.id


async def test_other_event_types_are_ignored(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    invoice_id = await open_invoice(stripe_billing, stripe, listener.id)
    finalized = await delivery_of(stripe, "invoice.finalized", invoice_id)
    customer_id = finalized.event["data"]["object"]["customer"]
    created = await delivery_of(stripe, "customer.created", customer_id)

    answers = [await post(http, d) for d in (finalized, created)]

    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json() for a in answers] == [
        {"ignored": "invoice.finalized"},
        {"ignored": "customer.created"},
    ]
    assert await events_of(listener) == []
    assert await service_store.exceptions() == []


@pytest.mark.parametrize(
    ("action", "event_type", "kind"),
    [
        ("void_invoice", "invoice.voided", "voided"),
        ("mark_uncollectible", "invoice.marked_uncollectible", "uncollectible"),
    ],
)
async def test_an_invoice_ended_unpaid_signals_its_run(
    http: httpx.AsyncClient,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
    action: str,
    event_type: str,
    kind: str,
) -> None:
    invoice_id = await open_invoice(stripe_billing, stripe, listener.id)
    await getattr(stripe_billing, action)(invoice_id, idempotency_key=key())
    delivery = await delivery_of(stripe, event_type, invoice_id)

    first, again = await post(http, delivery), await post(http, delivery)

    assert first.json() == signalled(listener.id)
    assert again.json() == {"workflow_id": listener.id, "duplicate": True}
    [event] = await events_of(listener)
    assert (event.kind, event.billing_invoice_id, event.amount) == (kind, invoice_id, None)
    assert event.event_id == delivery.event["id"] and event.reason


async def test_a_void_after_its_run_ended_is_no_exception(
    http: httpx.AsyncClient,
    service_store: Store,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    """A run that fails voids its own invoice on the way out; the void's event finds the run
    closed. A paid event for a closed run, by contrast, is still an exception."""
    invoice_id = await open_invoice(stripe_billing, stripe, listener.id)
    assert await events_of(listener) == []  # the run has ended
    await stripe_billing.void_invoice(invoice_id, idempotency_key=key())
    voided = await delivery_of(stripe, "invoice.voided", invoice_id)

    answer = await post(http, voided)

    assert answer.status_code == 200
    assert answer.json() == {"workflow_id": listener.id, "duplicate": False}
    assert (await post(http, voided)).json() == {"workflow_id": listener.id, "duplicate": True}
    assert await service_store.exceptions() == []
    paid = await paid_delivery(stripe_billing, stripe, listener.id)
    assert (await post(http, paid)).json()["exception"] == "unknown_billing_invoice"


async def test_temporal_down_answers_503_and_the_retry_signals(
    stripe_settings: Settings,
    stripe: StripeStandin,
    stripe_billing: StripeBilling,
    listener: WorkflowHandle[Any, list[PaymentEvent]],
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, listener.id)
    nowhere = stripe_settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})

    async with running_service(nowhere) as down:
        refused = await post(down, delivery)

    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert "Temporal unavailable" in refused.json()["error"]
    # Stripe retries once Temporal is back: the event was not recorded, so it signals now.
    async with running_service(stripe_settings) as up:
        retried = await post(up, delivery)
    assert retried.json() == signalled(listener.id)
    assert [e.event_id for e in await events_of(listener)] == [delivery.event["id"]]


async def test_no_secret_configured_answers_503(
    stripe_settings: Settings, stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    delivery = await paid_delivery(stripe_billing, stripe, None)
    unset = stripe_settings.model_copy(update={"stripe_webhook_secret": SecretStr("")})
    async with running_service(unset) as http:
        answer = await post(http, delivery)
    assert answer.status_code == 503
    assert answer.json() == {"error": "webhook secret not configured"}
