"""What every webhook intake shares: error answers, body limits, signatures, JSON, Temporal's
moods, one log line.

Every intake takes the same steps in the same order, so hostile input meets the same
refusals everywhere: `read_body` (413 past the limit), `check_signature` over the raw bytes
(401), only then `parse_json` (400 naming the field) and a model (`invalid`: 400 too).

An intake raises `Refused` for anything that ends in an error answer; `answer` turns it into
JSON (`{"error", "field"?}`, `Retry-After` on 503), times the delivery and logs it once.

An event that starts a run ends in `start_once`: an event id already recorded answers with
its run and starts nothing; otherwise the run is started (503 while Temporal is down, so the
sender retries) and the event id recorded with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from canonical import field_path
from connectors import webhook_json
from connectors.signing import (
    DEFAULT_TOLERANCE,
    InvalidSignature,
    StaleSignature,
    verify_signature,
)
from service.state import ServiceState
from workflows.starters import StartedRun

log = logging.getLogger("q2c.service.webhooks")

#: How much of an oversized body is read (and dropped) so that its sender hears the 413.
DISCARD_LIMIT = 8 * 1024 * 1024
#: What a sender is told to wait before retrying a 503.
RETRY_AFTER_S = 5
#: Longer than this and the sender's own timeout may fire first; it will retry anyway.
START_TIMEOUT_S = 5.0
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
#: Starts (or attaches to) the run an event asks for, under its business-key workflow id.
Starter = Callable[[Client], Awaitable[StartedRun]]


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
    """The raw body (signatures cover the exact bytes), keeping at most `limit` bytes of it.

    A body declared or found larger is answered 413 without being kept. Senders write
    their whole body before they read the answer, and a server that closes the connection
    on unread bytes resets it, losing the answer: so up to `DISCARD_LIMIT` more bytes are
    read and thrown away first (uvicorn discards the rest of a kept-alive connection's
    body itself; past that, on a closing connection, a reset is all an abuser gets).
    """
    chunks = _chunks(request)
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        if request.headers.get("expect", "").lower() != "100-continue":
            await _discard(chunks)  # else the sender waits for this answer before sending
        raise _too_large(limit)
    body = bytearray()
    async for chunk in chunks:
        if len(body) + len(chunk) > limit:
            await _discard(chunks)
            raise _too_large(limit)
        body += chunk
    return bytes(body)


def _too_large(limit: int) -> Refused:
    return Refused(413, f"body larger than {limit} bytes", outcome="too_large")


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives; a sender gone mid-body is refused (no one hears it, the log does)."""
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "body incomplete: the sender disconnected", outcome="disconnected")
        more = bool(message.get("more_body", False))
        yield message.get("body", b"")


async def _discard(chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of `chunks` (up to `DISCARD_LIMIT`) and drop it."""
    discarded = 0
    with contextlib.suppress(Refused):
        async for chunk in chunks:
            discarded += len(chunk)
            if discarded > DISCARD_LIMIT:
                return


def check_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    header_name: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> None:
    """401 unless `header` signs these raw bytes with `secret`, recently: before any parsing.

    The answer says what failed, never the header's value or the secret.
    """
    try:
        verify_signature(body, header, secret, header_name=header_name, tolerance=tolerance)
    except StaleSignature as exc:
        raise Refused(401, f"stale signature: {exc}", outcome="stale_signature") from None
    except InvalidSignature as exc:
        raise Refused(401, f"invalid signature: {exc}", outcome="bad_signature") from None


def parse_json(body: bytes) -> Any:
    """The verified body's JSON, or 400 naming what is wrong (and where, when it can)."""
    try:
        return webhook_json.parse(body)
    except webhook_json.InvalidJson as exc:
        raise Refused(400, str(exc), outcome="invalid", field=exc.field) from None


def invalid(exc: ValidationError, *, prefix: str = "") -> Refused:
    """400 naming the first field a model refused, as people write it (`lines[2].amount`)."""
    problem = exc.errors(include_url=False)[0]
    field = prefix + (field_path(tuple(problem["loc"])) or "body")
    return Refused(400, f"{field}: {problem['msg']}", outcome="invalid", field=field)


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


async def start_once(
    state: ServiceState,
    fields: dict[str, Any],
    start: Starter,
    *,
    source: str,
    event_id: str,
    correlation_id: str,
) -> JSONResponse:
    """202 naming the event's run: the one recorded for its id, else one `start` gives.

    Senders deliver at least once and their retries and replays carry the same event id: a
    recorded id starts nothing (even after its run has finished). Deliveries racing each
    other before the record exists all reach `start`, whose business-key workflow id and
    `USE_EXISTING` hand every one of them the same run; the first to record it answers
    "started", the others "duplicate".
    """
    try:
        seen = await state.store.inbound_event(source, event_id)
    except (SQLAlchemyError, OSError) as exc:
        raise store_down(exc) from None
    if seen is not None:
        fields.update(outcome="duplicate", workflow_id=seen.workflow_id, run_id=seen.run_id)
        return accepted(state, seen.workflow_id, seen.run_id, duplicate=True)

    run = await start_run(state, start, what=correlation_id)
    try:
        row, created = await state.store.record_inbound_event(
            source=source,
            event_id=event_id,
            workflow_id=run.workflow_id,
            run_id=run.run_id,
            correlation_id=correlation_id,
        )
    except (SQLAlchemyError, OSError) as exc:
        # Not recorded: the sender's retry attaches to the same run.
        raise store_down(exc) from None
    outcome = "started" if created else "duplicate"
    fields.update(outcome=outcome, workflow_id=row.workflow_id, run_id=row.run_id)
    return accepted(state, row.workflow_id, row.run_id, duplicate=not created)


async def start_run(state: ServiceState, start: Starter, *, what: str) -> StartedRun:
    """The run `start` gives, or 503 while Temporal is unreachable or slow (the sender
    retries); a start Temporal refuses for good is a 500 and an error in the log."""
    try:
        client = await state.temporal()
        return await asyncio.wait_for(start(client), timeout=START_TIMEOUT_S)
    except RPCError as exc:
        if exc.status in TRANSIENT_RPC:
            raise temporal_down(exc) from None
        log.error("Temporal refused the start of %s: %s", what, exc.status.name)
        raise Refused(500, "could not start the run", outcome="start_refused") from None
    except (TimeoutError, RuntimeError, OSError) as exc:
        # RuntimeError: the SDK's "Failed client connect".
        raise temporal_down(exc) from None
