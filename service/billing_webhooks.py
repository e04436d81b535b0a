"""`POST /webhooks/stripe`: billing's payment events signal the time-to-invoice run they name.

The billing invoice carries the run's workflow id in its metadata (`q2c_workflow_id`, set
when the run created it). The checks run cheapest and most suspicious first:

    secret configured?        no  -> 503 (an operator must set Q2C_STRIPE_WEBHOOK_SECRET)
    body small enough?        no  -> 413
    Stripe-Signature          missing, wrong, stale or future -> 401 {"error"}  (never echoes it)
    body a JSON Stripe event? no  -> 400 {"error", "field"?}
    an invoice's end?         no  -> 200 {"ignored": type}   (paid, payment_failed,
                                                                voided, uncollectible)
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

Duplicates: Stripe delivers at least once, and retries carry the same event id. From the
event id check on, delivery is `workflows.starters.deliver_billing_event`, shared with the
billing sweep, which finds events whose webhook was lost: an event id already recorded
signals nothing; deliveries racing each other (a retry, the sweep) before the record exists
all signal with one Temporal request id derived from the event id, and Temporal keeps one
of those signals per run. The run may still see an event twice after a continue-as-new, so
it also ignores an event id it already has.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from canonical import Money
from connectors.stripe import SIGNATURE_HEADER, WEBHOOK_TOLERANCE_S, payment_kind, wire
from service.intake import (
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
from workflows.starters import (
    BILLING_SOURCE,
    RUN_CLOSED,
    UNKNOWN_INVOICE,
    SignalRefused,
    StoreUnavailable,
    TemporalUnavailable,
    deliver_billing_event,
)
from workflows.time_to_invoice import BILLING_METADATA_KEY, PAYMENT

SOURCE = BILLING_SOURCE
#: An invoice event embeds the invoice's first lines: tens of KB, never this much.
MAX_BODY_BYTES = 1024 * 1024
#: What the store keeps of an event id (`inbound_event.event_id`).
MAX_EVENT_ID = 255
#: Stripe's event types are short ("invoice.payment_failed").
MAX_EVENT_TYPE = 100
#: Longer than this and Stripe's own delivery timeout may fire first; it will retry anyway.
SIGNAL_TIMEOUT_S = 5.0


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
    kind = payment_kind(event_type)
    if kind is None:
        fields["outcome"] = "ignored"
        return JSONResponse({"ignored": event_type}, status_code=200)
    event, invoice = _parse(payload)
    fields.update(
        invoice_id=invoice.id, workflow_id=invoice.metadata.get(BILLING_METADATA_KEY) or None
    )

    try:
        delivery = await deliver_billing_event(
            state.temporal, state.store, event, invoice, kind=kind, signal_timeout=SIGNAL_TIMEOUT_S
        )
    except StoreUnavailable as exc:
        raise store_down(exc) from None
    except TemporalUnavailable as exc:
        raise temporal_down(exc) from None
    except SignalRefused as exc:
        log.error("Temporal refused the payment signal for %s: %s", invoice.id, exc)
        raise Refused(500, "could not signal the run", outcome="signal_refused") from None
    if delivery.outcome == UNKNOWN_INVOICE:
        outcome = "duplicate" if delivery.duplicate else UNKNOWN_INVOICE
        fields.update(outcome=outcome, reason=delivery.reason)
        return JSONResponse(
            {
                "exception": UNKNOWN_INVOICE,
                "invoice_id": invoice.id,
                "duplicate": delivery.duplicate,
            },
            status_code=200,
        )
    if delivery.outcome in ("duplicate", RUN_CLOSED):
        fields["outcome"] = "duplicate" if delivery.duplicate else delivery.outcome
        return _answer(delivery.workflow_id, signalled=None, duplicate=delivery.duplicate)
    fields["outcome"] = "duplicate" if delivery.duplicate else "signalled"
    return _answer(delivery.workflow_id, signalled=PAYMENT, duplicate=delivery.duplicate)


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


def _answer(workflow_id: str | None, *, signalled: str | None, duplicate: bool) -> JSONResponse:
    body: dict[str, Any] = {"workflow_id": workflow_id, "duplicate": duplicate}
    if signalled is not None:
        body["signalled"] = signalled
    return JSONResponse(body, status_code=200)
