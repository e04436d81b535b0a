"""The error tree every connector raises.

Connectors classify; Temporal retries. A connector never loops on its own: it turns
what the vendor said into one of these, and the activity layer maps them onto
`ApplicationError` (retryable or not, with `Retry-After` as the next retry delay).
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta


class ConnectorError(Exception):
    """Something a downstream system refused or failed to do."""

    #: Stable name for the failure, used as the Temporal `ApplicationError.type`.
    error_type = "ConnectorError"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        system: str,
        status: int | None = None,
        field: str | None = None,
        code: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.status = status
        self.field = field
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.system}"
        if self.status is not None:
            where += f" HTTP {self.status}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class RetryableError(ConnectorError):
    """Worth another attempt later: rate limits, timeouts, conflicts, server faults."""

    error_type = "RetryableError"
    retryable = True


class RateLimitedError(RetryableError):
    error_type = "RateLimited"


class TransientError(RetryableError):
    """5xx, 408 or a transport failure (connect, read timeout)."""

    error_type = "TransientError"


class ConflictError(RetryableError):
    """Another writer got there first: a lock, a serialization failure, a unique value
    taken by a concurrent create, a request with the same idempotency key in flight.

    The next attempt re-reads and finds the winner, so it is retried, never compensated.
    """

    error_type = "Conflict"


class PermanentError(ConnectorError):
    """Another attempt gives the same answer; a person or a code change must act."""

    error_type = "PermanentError"


class ValidationFailed(PermanentError):
    """The system refused the data; `field` names what it refused when it says so."""

    error_type = "ValidationFailed"


class NotFound(PermanentError):
    error_type = "NotFound"


class AuthFailed(PermanentError):
    error_type = "AuthFailed"


class IdempotencyConflict(PermanentError):
    """The idempotency key was already used with other parameters."""

    error_type = "IdempotencyConflict"


RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> timedelta | None:
    """`Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return timedelta(seconds=max(seconds, 0.0))


def error_for_status(
    status: int,
    message: str,
    *,
    system: str,
    field: str | None = None,
    code: str | None = None,
    retry_after: str | None = None,
) -> ConnectorError:
    """The one place an HTTP status becomes a class in the tree."""
    delay = parse_retry_after(retry_after)
    cls: type[ConnectorError]
    if status == 429:
        cls = RateLimitedError
    elif status in (409, 423):
        cls = ConflictError
    elif status in RETRYABLE_STATUSES or status >= 500:
        cls = TransientError
    elif status in (401, 403):
        cls = AuthFailed
    elif status == 404:
        cls = NotFound
    else:
        cls = ValidationFailed
    return cls(
        message,
        system=system,
        status=status,
        field=field,
        code=code,
        retry_after=delay if cls.retryable else None,
    )
