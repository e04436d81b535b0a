"""The correlation id of the work in hand, sent on every outbound request.

Set by the worker for each activity (see `activities/correlation.py`); connectors only read
it, so a vendor's request log and q2c's logs can be matched line by line.
"""

from __future__ import annotations

from contextvars import ContextVar

HEADER = "X-Correlation-Id"

correlation_id: ContextVar[str | None] = ContextVar("q2c_correlation_id", default=None)


def outbound_headers() -> dict[str, str]:
    """The header to add to a request, when work is in hand."""
    value = correlation_id.get()
    return {HEADER: value} if value else {}


async def add_header(request: object) -> None:
    """An httpx request event hook."""
    headers = getattr(request, "headers", None)
    value = correlation_id.get()
    if headers is not None and value:
        headers[HEADER] = value
