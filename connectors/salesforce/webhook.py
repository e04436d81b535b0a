"""Checking and reading the Closed Won webhook the org posts (scheme: `standins.salesforce`).

    X-Salesforce-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

The HMAC is computed over the raw bytes as received (never a re-serialised body), compared
in constant time, and a timestamp outside the tolerance is refused so a captured delivery
cannot be replayed later. Several `v1` entries may appear while a secret is being rotated;
one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import ValidationError

from canonical import field_path
from connectors.salesforce.wire import ClosedWonEvent

SIGNATURE_HEADER = "X-Salesforce-Signature"
DEFAULT_TOLERANCE = timedelta(minutes=5)


class WebhookError(ValueError):
    """A delivery that must be refused (answer 4xx; the sender's retries will not fix it)."""


class InvalidSignature(WebhookError):
    pass


class StaleSignature(InvalidSignature):
    """Signed correctly but too long ago (or too far in the future): a possible replay."""


class InvalidEvent(WebhookError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature(f"timestamp {value!r} is not a number") from None
        elif key == "v1" and value:
            signatures.append(value.strip().lower())
    if timestamp is None:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no timestamp (t=)")
    if not signatures:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no v1 signature")
    return timestamp, signatures


def verify_webhook_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> None:
    """Return quietly when `body` was signed with `secret` recently enough; raise otherwise."""
    if not secret:
        raise ValueError("no webhook secret configured")
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse_header(header)
    expected = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidSignature("signature does not match the body")
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - timestamp) > tolerance.total_seconds():
        raise StaleSignature(
            f"signature timestamp is {current - timestamp:.0f} s away from now "
            f"(tolerance {tolerance.total_seconds():.0f} s)"
        )


def parse_closed_won_event(body: bytes | str) -> ClosedWonEvent:
    """The event, or `InvalidEvent` naming the first missing or invalid field."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from None
    try:
        return ClosedWonEvent.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        where = field_path(tuple(problems[0]["loc"])) or None
        detail = "; ".join(f"{field_path(tuple(p['loc'])) or 'body'}: {p['msg']}" for p in problems)
        raise InvalidEvent(f"not a Closed Won event: {detail}", field=where) from None
