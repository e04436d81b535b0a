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
import re
import time
from datetime import UTC, datetime, timedelta

DEFAULT_TOLERANCE = timedelta(minutes=5)


class WebhookError(ValueError):
    """A delivery that must be refused (answer 4xx; the sender's retries will not fix it)."""


class InvalidSignature(WebhookError):
    pass


class StaleSignature(InvalidSignature):
    """Signed correctly but too long ago (or too far in the future): a possible replay."""


#: A unix time in seconds (up to year 33658), and a hex SHA-256 digest: nothing else is read.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _parse_header(header: str, header_name: str) -> tuple[str, list[str]]:
    """The timestamp as sent (the exact text that was signed) and the candidate digests.

    Only ASCII digits and hex are taken: anything else (a sign, `_`, Unicode digits, a
    non-ASCII "digest", which `hmac.compare_digest` would refuse with a TypeError) is
    malformed, never an error of ours.
    """
    timestamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if not _TIMESTAMP.fullmatch(value):
                raise InvalidSignature(f"{header_name} timestamp (t=) is not a unix time")
            timestamp = value
        elif key == "v1" and _DIGEST.fullmatch(candidate := value.strip().lower()):
            signatures.append(candidate)
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
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if not any(hmac.compare_digest(expected.hexdigest(), candidate) for candidate in signatures):
        raise InvalidSignature("signature does not match the body")
    # Too old or too far ahead alike: a clock in the future is a replay waiting to happen.
    away = (now or datetime.now(UTC)).timestamp() - int(timestamp)
    if abs(away) > tolerance.total_seconds():
        raise StaleSignature(
            f"signature timestamp is {away:.0f} s away from now "
            f"(tolerance {tolerance.total_seconds():.0f} s)"
        )


def sign(body: bytes, secret: str, *, at: float | None = None) -> str:
    """The header value a sender puts on `body`."""
    timestamp = int(at if at is not None else time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
