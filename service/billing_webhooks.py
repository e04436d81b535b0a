"""`POST /webhooks/stripe`: billing's payment events signal the time-to-invoice run they name.

The billing invoice carries the run's workflow id in its metadata (`q2c_workflow_id`, set
when the run created it). The checks run cheapest and most suspicious first:

    secret configured?        no  -> 503 (an operator must set Q2C_STRIPE_WEBHOOK_SECRET)
    body small enough?        no  -> 413
    Stripe-Signature          missing, wrong, stale or future -> 401 {"error"}  (never echoes it)
    body a JSON Stripe event? no  -> 400 {"error", "field"?}
    paid or payment_failed?   no  -> 200 {"ignored": type}
    event and invoice valid?  no  -> 400 {"error", "field"}
    event id seen before?     yes -> 200 {"duplicate": true, ...}, nothing signalled
    a run named?              no  -> exception recorded, 200 {"exception": ...}
    signal `payment`          run gone -> exception recorded, 200; Temporal down -> 503
    record the event id       store down -> 503; the retry's signal is dropped by Temporal

Answers: 200 `{"workflow_id", "signalled": "payment", "duplicate": false}`.

Why 401 for a bad signature, as the other intakes answer (Stripe's examples say 400):
Stripe treats every non-2xx alike, retrying for days, so a genuine event refused because
the secret was rotated is delivered again once the operator fixes the setting; a forged
one is dropped unprocessed. The HMAC is checked over the raw bytes before anything decodes
them (`service.intake.check_signature`; `stripe.WebhookSignature` decodes first).

Why an unknown invoice is answered 200: Stripe sends every invoice of the account, also
those q2c did not create, and retrying could never make the run appear. The store keeps an
`unknown_billing_invoice` exception for a person instead.

Duplicates: Stripe delivers at least once, and retries carry the same event id. An event
id already recorded starts nothing. Deliveries racing each other before the record exists
all signal with one Temporal request id derived from the event id, and Temporal keeps one
of those signals per run (the SDK's `handle.signal` draws a random request id, so the
signal is sent with the raw request here). The run may still see an event twice after a
continue-as-new, so it also ignores an event id it already has.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import SignalWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from canonical import Money
from connectors.stripe import SIGNATURE_HEADER, WEBHOOK_TOLERANCE_S, wire
from connectors.stripe.mapping import from_minor
from service.intake import (
    TRANSIENT_RPC,
    Refused,
    answer,
    check_signature,
    invalid,
    log,
    parse_json,
    read_body,
    store_down,
    temporal_down,
)
from service.state import ServiceState
from workflows.time_to_invoice import BILLING_METADATA_KEY, LIFECYCLE, PAYMENT, PaymentEvent

SOURCE = "stripe"
#: Event types that move a run; their `PaymentEvent.kind`.
PAYMENT_KINDS = {"invoice.paid": "paid", "invoice.payment_failed": "payment_failed"}
UNKNOWN_INVOICE = "unknown_billing_invoice"
#: An invoice event embeds the invoice's first lines: tens of KB, never this much.
MAX_BODY_BYTES = 1024 * 1024
#: What the store keeps of an event id (`inbound_event.event_id`).
MAX_EVENT_ID = 255
#: Stripe's event types are short ("invoice.payment_failed").
MAX_EVENT_TYPE = 100
#: Longer than this and Stripe's own delivery timeout may fire first; it will retry anyway.
SIGNAL_TIMEOUT_S = 5.0
#: Namespace of the signal request ids, so one event id always gives the same request id.
_SIGNAL_REQUESTS = uuid.uuid5(uuid.NAMESPACE_URL, "q2c:webhooks/stripe")


async def stripe_webhook(request: Request) -> JSONResponse:
    return await answer(_intake, request, SOURCE)


async def _intake(state: ServiceState, request: Request, fields: dict[str, Any]) -> JSONResponse:
    secret = state.settings.stripe_webhook_secret.get_secret_value()
    if not secret:
        raise Refused(503, "webhook secret not configured", outcome="misconfigured")

    body = await read_body(request, MAX_BODY_BYTES)
    check_signature(
        body,
        request.headers.get(SIGNATURE_HEADER),
        secret,
        header_name=SIGNATURE_HEADER,
        tolerance=timedelta(seconds=WEBHOOK_TOLERANCE_S),
    )
    payload = _envelope(parse_json(body))

    event_type = payload["type"]
    fields.update(event_id=payload["id"], type=event_type)
    kind = PAYMENT_KINDS.get(event_type)
    if kind is None:
        fields["outcome"] = "ignored"
        return JSONResponse({"ignored": event_type}, status_code=200)
    event, invoice = _parse(payload)
    workflow_id = invoice.metadata.get(BILLING_METADATA_KEY) or None
    fields.update(invoice_id=invoice.id, workflow_id=workflow_id)

    try:
        seen = await state.store.inbound_event(SOURCE, event.id)
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    if seen is not None:
        fields["outcome"] = "duplicate"
        return _answer(seen.workflow_id or None, signalled=None, duplicate=True)

    unknown_because: str | None = None
    if workflow_id is None:
        unknown_because = f"its metadata has no {BILLING_METADATA_KEY}"
    elif not workflow_id.startswith(f"{LIFECYCLE}:"):
        unknown_because = f"its metadata names {workflow_id!r}, not a {LIFECYCLE} run"
    elif not await _signal(state, workflow_id, _payment_event(kind, event, invoice)):
        unknown_because = f"the run {workflow_id} it names does not exist or has closed"
    if unknown_because is not None:
        await _record_unknown(state, event, invoice, unknown_because)
    reached = workflow_id if unknown_because is None else None

    try:
        _, created = await state.store.record_inbound_event(
            source=SOURCE,
            event_id=event.id,
            # The column is required; "" says the event reached no run (see the exception).
            workflow_id=reached or "",
            correlation_id=invoice.id,
        )
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    if unknown_because is not None:
        fields.update(outcome=UNKNOWN_INVOICE if created else "duplicate", reason=unknown_because)
        return JSONResponse(
            {"exception": UNKNOWN_INVOICE, "invoice_id": invoice.id, "duplicate": not created},
            status_code=200,
        )
    fields["outcome"] = "signalled" if created else "duplicate"
    return _answer(reached, signalled=PAYMENT, duplicate=not created)


def _envelope(payload: Any) -> dict[str, Any]:
    """A Stripe event whose `id` and `type` are short text, safe to log and answer with."""
    if not isinstance(payload, dict) or payload.get("object") != "event":
        raise Refused(400, "object: not a Stripe event", outcome="invalid", field="object")
    for name, limit in (("id", MAX_EVENT_ID), ("type", MAX_EVENT_TYPE)):
        value = payload.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= limit:
            error = f"{name}: must be text of 1 to {limit} characters"
            raise Refused(400, error, outcome="invalid", field=name)
    return payload


def _parse(payload: dict[str, Any]) -> tuple[wire.Event, wire.Invoice]:
    try:
        event = wire.Event.model_validate(payload)
    except ValidationError as exc:
        raise invalid(exc) from None
    try:
        invoice = wire.Invoice.model_validate(event.data.object)
        Money.from_minor(invoice.amount_paid, invoice.currency.upper())
    except ValidationError as exc:
        raise invalid(exc, prefix="data.object.") from None
    except ValueError as exc:  # a currency canonical does not know
        error = f"data.object.currency: {exc}"
        raise Refused(400, error, outcome="invalid", field="data.object.currency") from None
    return event, invoice


def _payment_event(kind: str, event: wire.Event, invoice: wire.Invoice) -> PaymentEvent:
    paid = kind == "paid"
    return PaymentEvent(
        event_id=event.id,
        kind=kind,
        billing_invoice_id=invoice.id,
        amount=from_minor(invoice.amount_paid, invoice.currency).amount if paid else None,
        occurred_at=datetime.fromtimestamp(event.created, UTC),
        reason=None if paid else _failure_reason(event.data.object),
    )


def _failure_reason(invoice: dict[str, Any]) -> str:
    """Why the payment failed, as far as the event tells.

    Stripe keeps the decline message on the payment attempt (`last_payment_error` of the
    PaymentIntent), which an invoice event embeds only when expanded; otherwise the
    attempt count is all there is.
    """
    intent = invoice.get("payment_intent")
    for holder in (invoice, intent if isinstance(intent, dict) else {}):
        error = holder.get("last_payment_error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    attempts = invoice.get("attempt_count") or 1
    return f"payment attempt {attempts} failed; billing gave no reason"


async def _signal(state: ServiceState, workflow_id: str, event: PaymentEvent) -> bool:
    """Deliver `event` to the run; False when there is no open run of that id."""
    try:
        client = await state.temporal()
        await asyncio.wait_for(_send_signal(client, workflow_id, event), SIGNAL_TIMEOUT_S)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        if exc.status in TRANSIENT_RPC:
            raise temporal_down(exc) from None
        log.error("Temporal refused the payment signal to %s: %s", workflow_id, exc.status.name)
        raise Refused(500, "could not signal the run", outcome="signal_refused") from None
    except (TimeoutError, RuntimeError, OSError) as exc:
        # RuntimeError: the SDK's "Failed client connect".
        raise temporal_down(exc) from None
    return True


async def _send_signal(client: Client, workflow_id: str, event: PaymentEvent) -> None:
    """`handle.signal(PAYMENT, event)`, with a request id Temporal deduplicates on."""
    request = SignalWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id),
        signal_name=PAYMENT,
        identity=client.identity,
        request_id=str(uuid.uuid5(_SIGNAL_REQUESTS, event.event_id)),
    )
    request.input.payloads.extend(await client.data_converter.encode([event]))
    # Retrying inside the SDK is safe: every attempt carries the same request id.
    await client.workflow_service.signal_workflow_execution(request, retry=True)


async def _record_unknown(
    state: ServiceState,
    event: wire.Event,
    invoice: wire.Invoice,
    because: str,
) -> None:
    paid = event.type == "invoice.paid"
    amount = from_minor(invoice.amount_paid if paid else invoice.amount_due, invoice.currency)
    customer_name = invoice.customer_name
    customer = f"{customer_name} ({invoice.customer})" if customer_name else invoice.customer
    happened = "was paid" if paid else "had a payment fail"
    what = invoice.number or invoice.id
    message = (
        f"Stripe invoice {what} [{invoice.id}] for {amount} (customer {customer}) {happened},"
        f" but no q2c run follows it: {because}"
    )
    workflow_id = invoice.metadata.get(BILLING_METADATA_KEY) or None
    try:
        await state.store.record_exception(
            dedupe_key=f"{SOURCE}-event:{event.id}",
            kind=UNKNOWN_INVOICE,
            message=message,
            workflow_id=workflow_id,
            correlation_id=invoice.id,
            lifecycle=LIFECYCLE,
            detail={
                "event_id": event.id,
                "event_type": event.type,
                "invoice_id": invoice.id,
                "invoice_number": invoice.number,
                "customer_id": invoice.customer,
                "customer_name": customer_name,
                "amount": str(amount.amount),
                "currency": amount.currency,
                "workflow_id": workflow_id,
                "reason": because,
            },
        )
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None


def _answer(workflow_id: str | None, *, signalled: str | None, duplicate: bool) -> JSONResponse:
    body: dict[str, Any] = {"workflow_id": workflow_id, "duplicate": duplicate}
    if signalled is not None:
        body["signalled"] = signalled
    return JSONResponse(body, status_code=200)
