"""What every webhook intake shares: error answers, body limits, Temporal's moods, one log line.

An intake raises `Refused` for anything that ends in an error answer; `answer` turns it into
JSON (`{"error", "field"?}`, `Retry-After` on 503), times the delivery and logs it once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.service import RPCStatusCode

from service.state import ServiceState

log = logging.getLogger("q2c.service.webhooks")

#: What a sender is told to wait before retrying a 503.
RETRY_AFTER_S = 5
#: Temporal statuses that mean "not now" rather than "never": answer 503.
TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)

#: An intake: fills the log fields as it learns them, answers or raises `Refused`.
Intake = Callable[[ServiceState, Request, dict[str, Any]], Awaitable[JSONResponse]]


class Refused(Exception):
    """The delivery gets an error answer; `outcome` names why in the log line."""

    def __init__(self, status: int, error: str, *, outcome: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.outcome = outcome
        self.field = field


async def answer(intake: Intake, request: Request, source: str) -> JSONResponse:
    """Run one delivery through `intake` and log it, whatever the answer."""
    state: ServiceState = request.app.state.q2c
    began = time.perf_counter()
    fields: dict[str, Any] = {"source": source}
    try:
        response = await intake(state, request, fields)
    except Refused as refused:
        fields.update(outcome=refused.outcome, field=refused.field, error=refused.error)
        body: dict[str, Any] = {"error": refused.error}
        if refused.field is not None:
            body["field"] = refused.field
        headers = {"Retry-After": str(RETRY_AFTER_S)} if refused.status == 503 else None
        response = JSONResponse(body, status_code=refused.status, headers=headers)
    fields["status"] = response.status_code
    fields["ms"] = round((time.perf_counter() - began) * 1000, 1)
    log_delivery(fields)
    return response


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures cover the exact bytes), refused early when too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body larger than {limit} bytes", outcome="too_large")
    body = await request.body()
    if len(body) > limit:
        raise Refused(413, f"body larger than {limit} bytes", outcome="too_large")
    return body


def store_down(exc: Exception) -> Refused:
    log.debug("store unavailable: %s", exc)
    return Refused(503, "store unavailable, retry later", outcome="store_unavailable")


def temporal_down(exc: BaseException) -> Refused:
    log.debug("Temporal unreachable: %s", exc)
    return Refused(503, "Temporal unavailable, retry later", outcome="temporal_unavailable")


def log_delivery(fields: dict[str, Any]) -> None:
    """One logfmt line per delivery, keyed by the correlation id; no body, no signature."""
    status = int(fields.get("status", 0))
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    text = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items() if value is not None)
    log.log(level, "webhook %s", text, extra={"webhook": fields})


def _logfmt(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if not text or any(c in text for c in ' ="\\'):
        return json.dumps(text)
    return text


def accepted(
    state: ServiceState, workflow: str, run_id: str | None, *, duplicate: bool
) -> JSONResponse:
    """202 naming the run (a redelivery gets the same run, marked duplicate)."""
    run_url = state.settings.run_link(workflow)
    return JSONResponse(
        {"workflow_id": workflow, "run_id": run_id, "duplicate": duplicate, "run_url": run_url},
        status_code=202,
        headers={"Location": run_url},
    )
