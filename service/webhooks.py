"""`POST /webhooks/salesforce`: a signed Closed Won event starts the opportunity-to-project
run; a signed change-order approval starts the change order's run. Both come to this one
endpoint, as the org sends them (`connectors.salesforce.webhook`); `eventType` tells them
apart.

The checks run cheapest and most suspicious first, so nothing that fails one reaches the
store or Temporal:

    secret configured?       no  -> 503 (an operator must set Q2C_SALESFORCE_WEBHOOK_SECRET)
    body small enough?       no  -> 413
    signature and timestamp  bad -> 401 {"error"}             (never echoes the signature)
    another eventType?       yes -> 200 {"ignored": reason}   (see below)
    body valid?              no  -> 400 {"error", "field"}    (e.g. "sobject.Id")
    stage "Closed Won"?      no  -> 200 {"ignored": reason}   (a change order: "Approved"?)
    event id seen before?    yes -> 202, the recorded run, "duplicate": true, nothing started
    start the run            Temporal down -> 503 with Retry-After, so the sender retries
    record the event id      store down    -> 503; the retry attaches to the same run

Answers: 202 `{"workflow_id", "run_id", "duplicate", "run_url"}` (and `Location: run_url`).
The runs: `opportunity-to-project:salesforce:<opportunity id>` and
`change-order:salesforce:<change order id>`, the record id checked (15 or 18 letters and
digits) before it becomes part of a workflow id.

An event q2c does not act on (another `eventType`, a stage other than "Closed Won", a change
order whose status is no longer "Approved") is answered 200 with `{"ignored": ...}` rather
than 4xx: the sender did nothing wrong, and a 4xx would only make it retry or raise alerts
for a delivery q2c deliberately does not act on.

Duplicates (`service.intake.start_once`): senders deliver at least once and retries and
replays carry the same `eventId`. An event id already recorded in the store starts nothing
(even after its run has finished). Deliveries racing each other before the record exists all
start with the business-key workflow id and `USE_EXISTING`, so Temporal hands every one of
them the same run. A change order approved again later is a new event: a new run under the
same workflow id once the last one has ended.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from connectors.errors import ValidationFailed
from connectors.salesforce import (
    CHANGE_ORDER_APPROVED_EVENT,
    CLOSED_WON_EVENT,
    SIGNATURE_HEADER,
    ChangeOrderApprovedEvent,
    ClosedWonEvent,
    InvalidEvent,
    change_order_approved_event,
    check_id,
    closed_won_event,
)
from service.intake import (
    Refused,
    answer,
    check_signature,
    parse_json,
    read_body,
    start_once,
)
from service.state import ServiceState
from workflows.starters import start_change_order_run, start_opportunity_run

SOURCE = "salesforce"
CLOSED_WON_STAGE = "Closed Won"
APPROVED_STATUS = "Approved"
#: The events this endpoint acts on; any other `eventType` is ignored.
EVENT_TYPES = (CLOSED_WON_EVENT, CHANGE_ORDER_APPROVED_EVENT)
#: Either event is well under 2 KB; anything near this is not one.
MAX_BODY_BYTES = 256 * 1024
#: What the store keeps of an event id (`inbound_event.event_id`).
MAX_EVENT_ID = 255
#: How much of a sender's text an answer echoes.
MAX_ECHO = 80


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

    if (ignored := _not_acted_on(data)) is not None:
        fields.update(outcome="ignored", reason=ignored)
        return JSONResponse({"ignored": ignored}, status_code=200)
    if isinstance(data, dict) and data.get("eventType") == CHANGE_ORDER_APPROVED_EVENT:
        return await _change_order_approved(state, data, fields)
    # A Closed Won, or an `eventType` that is not text: its validation names the field.
    return await _closed_won(state, data, fields)


async def _closed_won(state: ServiceState, data: Any, fields: dict[str, Any]) -> JSONResponse:
    event = _parse_closed_won(data)
    opportunity_id = event.sobject.id
    fields.update(event_id=event.event_id, correlation_id=opportunity_id)
    if event.sobject.stage_name != CLOSED_WON_STAGE:
        return _ignore(fields, f"stage is {event.sobject.stage_name!r}, not {CLOSED_WON_STAGE!r}")
    return await start_once(
        state,
        fields,
        lambda client: start_opportunity_run(
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
        source=SOURCE,
        event_id=event.event_id,
        correlation_id=opportunity_id,
    )


async def _change_order_approved(
    state: ServiceState, data: Any, fields: dict[str, Any]
) -> JSONResponse:
    event = _parse_change_order(data)
    change_order_id = event.sobject.id
    fields.update(event_id=event.event_id, correlation_id=change_order_id)
    if event.sobject.status != APPROVED_STATUS:
        return _ignore(fields, f"status is {event.sobject.status!r}, not {APPROVED_STATUS!r}")
    return await start_once(
        state,
        fields,
        lambda client: start_change_order_run(
            client,
            state.settings.task_queue,
            change_order_id,
            crm=SOURCE,
            trigger=f"salesforce-event:{event.event_id}",
        ),
        source=SOURCE,
        event_id=event.event_id,
        correlation_id=change_order_id,
    )


def _not_acted_on(data: Any) -> str | None:
    """Why a well-formed event of another type is ignored; None lets validation judge it."""
    event_type = data.get("eventType") if isinstance(data, dict) else None
    if isinstance(event_type, str) and event_type and event_type not in EVENT_TYPES:
        return f"eventType {event_type[:MAX_ECHO]!r} is not one of {', '.join(EVENT_TYPES)}"
    return None


def _ignore(fields: dict[str, Any], reason: str) -> JSONResponse:
    fields.update(outcome="ignored", reason=reason)
    return JSONResponse({"ignored": reason}, status_code=200)


def _parse_closed_won(data: Any) -> ClosedWonEvent:
    try:
        event = closed_won_event(data)
    except InvalidEvent as exc:
        raise Refused(400, str(exc), outcome="invalid", field=exc.field) from None
    _check_keys(event.sobject.id, event.event_id)
    return event


def _parse_change_order(data: Any) -> ChangeOrderApprovedEvent:
    try:
        event = change_order_approved_event(data)
    except InvalidEvent as exc:
        raise Refused(400, str(exc), outcome="invalid", field=exc.field) from None
    _check_keys(event.sobject.id, event.event_id)
    return event


def _check_keys(record_id: str, event_id: str) -> None:
    """400 unless the record id can be part of a workflow id (letters and digits only, 15 or
    18 of them) and the event id fits the store's key."""
    try:
        check_id(record_id, field="sobject.Id")
    except ValidationFailed as exc:
        error = f"sobject.Id: {exc.message}"
        raise Refused(400, error, outcome="invalid", field="sobject.Id") from None
    if len(event_id) > MAX_EVENT_ID:
        error = f"eventId longer than {MAX_EVENT_ID} characters"
        raise Refused(400, error, outcome="invalid", field="eventId")
