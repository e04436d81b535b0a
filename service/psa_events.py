"""`POST /events/psa/milestone-completed`: the PSA says a milestone is done; invoice its period.

Body: `{"eventId": "...", "projectId": "42", "milestoneId": "m-1", "completedOn": "2026-11-20"}`,
signed `X-Q2C-Signature: t=<unix>,v1=<hex HMAC-SHA256(Q2C_PSA_WEBHOOK_SECRET, "t.body")>` (the
scheme of `connectors.signing`). The answer is 202 with the time-to-invoice run of the project
and the milestone's billing period: started, or the one already running (which a completed
milestone then finds when it drafts). Redeliveries of an event start nothing new.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from canonical import BillingPeriod
from connectors.webhook_json import IsoDate
from service.intake import (
    Refused,
    answer,
    check_signature,
    invalid,
    parse_json,
    read_body,
    start_once,
)
from service.state import ServiceState
from workflows.starters import start_invoice_run

SOURCE = "psa"
SIGNATURE_HEADER = "X-Q2C-Signature"
MAX_BODY_BYTES = 16 * 1024


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
    correlation_id = f"project:{event.project_id}"
    fields.update(event_id=event.event_id, correlation_id=correlation_id)
    period = BillingPeriod.of(event.completed_on).key
    return await start_once(
        state,
        fields,
        lambda client: start_invoice_run(
            client,
            state.settings,
            event.project_id,
            period,
            trigger=f"milestone:{event.milestone_id}",
        ),
        source=SOURCE,
        event_id=event.event_id,
        correlation_id=correlation_id,
    )


def _parse(body: bytes) -> MilestoneCompleted:
    try:
        return MilestoneCompleted.model_validate(parse_json(body))
    except ValidationError as exc:
        raise invalid(exc) from None
