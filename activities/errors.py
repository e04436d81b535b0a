"""Connector errors become Temporal `ApplicationError`s here, and only here.

Temporal owns retries: a retryable connector error stays retryable (with the vendor's
`Retry-After` as the next retry delay); a permanent one becomes non-retryable with a
stable `type` that workflows and retry policies can name.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from connectors.errors import ConnectorError

P = ParamSpec("P")
R = TypeVar("R")


def to_application_error(exc: ConnectorError) -> ApplicationError:
    return ApplicationError(
        str(exc),
        {"system": exc.system, "status": exc.status, "field": exc.field, "code": exc.code},
        type=exc.error_type,
        non_retryable=not exc.retryable,
        next_retry_delay=exc.retry_after,
    )


def translate_connector_errors(
    fn: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wrap an activity so that connector errors reach Temporal classified."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ConnectorError as exc:
            raise to_application_error(exc) from exc

    return wrapper
