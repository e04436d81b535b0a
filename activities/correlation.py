"""Every activity runs with its correlation id set: connectors send it on each request, and
the worker's log lines carry it (the CRM opportunity id for deal runs, else the run's key)."""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from connectors.correlation import correlation_id

DEAL_LIFECYCLE = "opportunity-to-project"


def correlation_for(workflow_id: str) -> str:
    """`opportunity-to-project:salesforce:006…` is correlated by `006…`; other runs by their
    business key (`time-to-invoice:42:2026-11`)."""
    lifecycle, _, rest = workflow_id.partition(":")
    if lifecycle == DEAL_LIFECYCLE and ":" in rest:
        return rest.split(":", 1)[1]
    return workflow_id


class _CorrelatedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        token = correlation_id.set(correlation_for(info.workflow_id or info.activity_id))
        try:
            return await super().execute_activity(input)
        finally:
            correlation_id.reset(token)


class CorrelationInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CorrelatedActivity(next)


class CorrelationLogFilter(logging.Filter):
    """Adds `correlation_id` to every record, for the log format to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or "-"
        return True
