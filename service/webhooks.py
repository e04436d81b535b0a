"""`POST /webhooks/salesforce`: a signed Closed Won event starts the opportunity-to-project run.

The checks run cheapest and most suspicious first, so nothing that fails one reaches the
store or Temporal:

    secret configured?       no  -> 503 (an operator must set Q2C_SALESFORCE_WEBHOOK_SECRET)
    body small enough?       no  -> 413
    signature and timestamp  bad -> 401 {"error"}             (never echoes the signature)
    another eventType?       yes -> 200 {"ignored": reason}   (see below)
    body valid?              no  -> 400 {"error", "field"}    (e.g. "sobject.Id")
    stage "Closed Won"?      no  -> 200 {"ignored": reason}
    event id seen before?    yes -> 202, the recorded run, "duplicate": true, nothing started
    start the run            Temporal down -> 503 with Retry-After, so the sender retries
    record the event id      store down    -> 503; the retry attaches to the same run

Answers: 202 `{"workflow_id", "run_id", "duplicate", "run_url"}` (and `Location: run_url`).

An event that is not a Closed Won (another `eventType`, or a stage other than "Closed Won")
is answered 200 with `{"ignored": ...}` rather than 4xx: the sender did nothing wrong, and a
4xx would only make it retry or raise alerts for a delivery q2c deliberately does not act on.

Duplicates: senders deliver at least once and retries and replays carry the same `eventId`.
An event id already recorded in the store starts nothing (even after its run has finished).
Deliveries racing each other before the record exists all start with the business-key
workflow id and `USE_EXISTING`, so Temporal hands every one of them the same run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.service import RPCError

from connectors.errors import ValidationFailed
from connectors.salesforce import (
    SIGNATURE_HEADER,
    ClosedWonEvent,
    InvalidEvent,
    check_id,
    closed_won_event,
)
from service.intake import (
    TRANSIENT_RPC,
    Refused,
    accepted,
    answer,
    check_signature,
    parse_json,
    read_body,
    store_down,
    temporal_down,
)
from service.state import ServiceState
from workflows.starters import StartedRun, start_opportunity_run

log = logging.getLogger("q2c.service.webhooks")

SOURCE = "salesforce"
CLOSED_WON_EVENT = "opportunity.closed_won"
CLOSED_WON_STAGE = "Closed Won"
#: A Closed Won event is well under 2 KB; anything near this is not one.
MAX_BODY_BYTES = 256 * 1024
#: What the store keeps of an event id (`inbound_event.event_id`).
MAX_EVENT_ID = 255
#: How much of a sender's text an answer echoes.
MAX_ECHO = 80
#: Longer than this and the sender's own timeout may fire first; it will retry anyway.
START_TIMEOUT_S = 5.0


async def salesforce_webhook(request: Request) -> JSONResponse:
    return await answer(_intake, request, SOURCE)


async def _intake(state: ServiceState, request: Request, fields: dict[str, Any]) -> JSONResponse:
    settings = state.settings
    secret = settings.salesforce_webhook_secret.get_secret_value()
    if not secret:
        raise Refused(503, "webhook secret not configured", outcome="misconfigured")

    body = await read_body(request, MAX_BODY_BYTES)
    check_signature(
        body, request.headers.get(SIGNATURE_HEADER), secret, header_name=SIGNATURE_HEADER
    )
    data = parse_json(body)

    if (ignored := _not_closed_won(data)) is not None:
        fields.update(outcome="ignored", reason=ignored)
        return JSONResponse({"ignored": ignored}, status_code=200)
    event = _parse(data)
    opportunity_id = event.sobject.id
    fields.update(event_id=event.event_id, correlation_id=opportunity_id)
    if event.sobject.stage_name != CLOSED_WON_STAGE:
        reason = f"stage is {event.sobject.stage_name!r}, not {CLOSED_WON_STAGE!r}"
        fields.update(outcome="ignored", reason=reason)
        return JSONResponse({"ignored": reason}, status_code=200)

    try:
        seen = await state.store.inbound_event(SOURCE, event.event_id)
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    if seen is not None:
        fields.update(outcome="duplicate", workflow_id=seen.workflow_id, run_id=seen.run_id)
        return accepted(state, seen.workflow_id, seen.run_id, duplicate=True)

    run = await _start(state, event)
    try:
        row, created = await state.store.record_inbound_event(
            source=SOURCE,
            event_id=event.event_id,
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            correlation_id=opportunity_id,
        )
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    outcome = "started" if created else "duplicate"
    fields.update(outcome=outcome, workflow_id=row.workflow_id, run_id=row.run_id)
    return accepted(state, row.workflow_id, row.run_id, duplicate=not created)


def _not_closed_won(data: Any) -> str | None:
    """Why a well-formed event of another type is ignored; None lets validation judge it."""
    event_type = data.get("eventType") if isinstance(data, dict) else None
    if isinstance(event_type, str) and event_type and event_type != CLOSED_WON_EVENT:
        return f"eventType {event_type[:MAX_ECHO]!r} is not {CLOSED_WON_EVENT!r}"
    return None


def _parse(data: Any) -> ClosedWonEvent:
    try:
        event = closed_won_event(data)
    except InvalidEvent as exc:
        raise Refused(400, str(exc), outcome="invalid", field=exc.field) from None
    # The id becomes part of the workflow id: letters and digits only, 15 or 18 of them.
    try:
        check_id(event.sobject.id, field="sobject.Id")
    except ValidationFailed as exc:
        error = f"sobject.Id: {exc.message}"
        raise Refused(400, error, outcome="invalid", field="sobject.Id") from None
    if len(event.event_id) > MAX_EVENT_ID:
        error = f"eventId longer than {MAX_EVENT_ID} characters"
        raise Refused(400, error, outcome="invalid", field="eventId")
    return event


async def _start(state: ServiceState, event: ClosedWonEvent) -> StartedRun:
    opportunity_id = event.sobject.id
    try:
        client = await state.temporal()
        return await asyncio.wait_for(
            start_opportunity_run(
                client,
                state.settings,
                opportunity_id,
                crm=SOURCE,
                trigger=f"salesforce-event:{event.event_id}",
                summary=f"Salesforce opportunity {opportunity_id} ({event.sobject.name})",
                refetch=True,  # a fresh CRM change: a run waiting for corrections looks again
                # A run started after this change (say, by the CRM sweep) has already seen it.
                changed_at=event.sobject.last_modified_date or event.occurred_at,
            ),
            timeout=START_TIMEOUT_S,
        )
    except RPCError as exc:
        if exc.status in TRANSIENT_RPC:
            raise temporal_down(exc) from None
        log.error("Temporal refused the start of %s: %s", opportunity_id, exc.status.name)
        raise Refused(500, "could not start the run", outcome="start_refused") from None
    except (TimeoutError, RuntimeError, OSError) as exc:
        # RuntimeError: the SDK's "Failed client connect".
        raise temporal_down(exc) from None
