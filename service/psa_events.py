"""`POST /events/psa/milestone-completed`: the PSA says a milestone is done; invoice its period.

Body: `{"eventId": "...", "projectId": "42", "milestoneId": "m-1", "completedOn": "2026-11-20"}`,
signed `X-Q2C-Signature: t=<unix>,v1=<hex HMAC-SHA256(Q2C_PSA_WEBHOOK_SECRET, "t.body")>` (the
scheme of `connectors.signing`). The answer is 202 with the time-to-invoice run of the project
and the milestone's billing period: started, or the one already running (which a completed
milestone then finds when it drafts). Redeliveries of an event start nothing new.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.service import RPCError

from canonical import BillingPeriod
from connectors.webhook_json import IsoDate
from service.intake import (
    TRANSIENT_RPC,
    Refused,
    accepted,
    answer,
    check_signature,
    invalid,
    parse_json,
    read_body,
    store_down,
    temporal_down,
)
from service.state import ServiceState
from workflows.starters import StartedRun, start_invoice_run

SOURCE = "psa"
SIGNATURE_HEADER = "X-Q2C-Signature"
MAX_BODY_BYTES = 16 * 1024
START_TIMEOUT_S = 5.0


class MilestoneCompleted(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    event_id: str = Field(alias="eventId", min_length=1, max_length=255)
    project_id: str = Field(alias="projectId", pattern=r"^[0-9]{1,18}$")
    milestone_id: str = Field(alias="milestoneId", min_length=1, max_length=255)
    completed_on: IsoDate = Field(alias="completedOn")


async def milestone_completed(request: Request) -> JSONResponse:
    return await answer(_intake, request, SOURCE)


async def _intake(state: ServiceState, request: Request, fields: dict[str, Any]) -> JSONResponse:
    secret = state.settings.psa_webhook_secret.get_secret_value()
    if not secret:
        raise Refused(503, "webhook secret not configured", outcome="misconfigured")
    body = await read_body(request, MAX_BODY_BYTES)
    check_signature(
        body, request.headers.get(SIGNATURE_HEADER), secret, header_name=SIGNATURE_HEADER
    )
    event = _parse(body)
    fields.update(event_id=event.event_id, correlation_id=f"project:{event.project_id}")

    try:
        seen = await state.store.inbound_event(SOURCE, event.event_id)
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    if seen is not None:
        fields.update(outcome="duplicate", workflow_id=seen.workflow_id)
        return accepted(state, seen.workflow_id, seen.run_id, duplicate=True)

    run = await _start(state, event)
    try:
        row, created = await state.store.record_inbound_event(
            source=SOURCE,
            event_id=event.event_id,
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            correlation_id=f"project:{event.project_id}",
        )
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    fields.update(outcome="started" if created else "duplicate", workflow_id=row.workflow_id)
    return accepted(state, row.workflow_id, row.run_id, duplicate=not created)


def _parse(body: bytes) -> MilestoneCompleted:
    try:
        return MilestoneCompleted.model_validate(parse_json(body))
    except ValidationError as exc:
        raise invalid(exc) from None


async def _start(state: ServiceState, event: MilestoneCompleted) -> StartedRun:
    period = BillingPeriod.of(event.completed_on).key
    try:
        client = await state.temporal()
        return await asyncio.wait_for(
            start_invoice_run(
                client,
                state.settings,
                event.project_id,
                period,
                trigger=f"milestone:{event.milestone_id}",
            ),
            timeout=START_TIMEOUT_S,
        )
    except RPCError as exc:
        if exc.status in TRANSIENT_RPC:
            raise temporal_down(exc) from None
        raise Refused(500, "could not start the run", outcome="start_refused") from None
    except (TimeoutError, RuntimeError, OSError) as exc:
        raise temporal_down(exc) from None
