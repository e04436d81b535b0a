"""Signed webhooks, the scheme q2c's senders share (Salesforce flows, the PSA's events):

    <header>: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

The HMAC is computed over the raw bytes as received (never a re-serialised body), compared
in constant time, and a timestamp outside the tolerance is refused so a captured delivery
cannot be replayed later. Several `v1` entries may appear while a secret is being rotated;
one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

DEFAULT_TOLERANCE = timedelta(minutes=5)


class WebhookError(ValueError):
    """A delivery that must be refused (answer 4xx; the sender's retries will not fix it)."""


class InvalidSignature(WebhookError):
    pass


class StaleSignature(InvalidSignature):
    """Signed correctly but too long ago (or too far in the future): a possible replay."""


def _parse_header(header: str, header_name: str) -> tuple[int, list[str]]:
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
        raise InvalidSignature(f"{header_name} has no timestamp (t=)")
    if not signatures:
        raise InvalidSignature(f"{header_name} has no v1 signature")
    return timestamp, signatures


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    header_name: str,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> None:
    """Return quietly when `body` was signed with `secret` recently enough; raise otherwise."""
    if not secret:
        raise ValueError("no webhook secret configured")
    if not header:
        raise InvalidSignature(f"missing {header_name} header")
    timestamp, signatures = _parse_header(header, header_name)
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


def sign(body: bytes, secret: str, *, at: float | None = None) -> str:
    """The header value a sender puts on `body`."""
    timestamp = int(at if at is not None else time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
