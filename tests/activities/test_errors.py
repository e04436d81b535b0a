"""Connector errors reach Temporal classified: retryable ones retry after `Retry-After`,
permanent ones fail the activity at once with a stable type naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.errors import translate_connector_errors
from connectors.errors import (
    ConnectorError,
    RateLimitedError,
    ValidationFailed,
    error_for_status,
)


class ProbeInput(BaseModel):
    failure: str  # "rate_limited" once, then success; or "validation" always


class ProbeResult(BaseModel):
    attempts: list[datetime]


class FlakyVendor:
    """Stands for a connector call: fails the way a vendor does."""

    def __init__(self) -> None:
        self.attempts: list[datetime] = []

    @activity.defn(name="probe_vendor")
    @translate_connector_errors
    async def call(self, probe: ProbeInput) -> ProbeResult:
        self.attempts.append(datetime.now(UTC))
        if probe.failure == "validation":
            raise error_for_status(
                400, "Required fields are missing: [Name]", system="salesforce", field="Name"
            )
        if len(self.attempts) == 1:
            raise error_for_status(429, "Too many requests", system="stripe", retry_after="2")
        return ProbeResult(attempts=self.attempts)


@workflow.defn(sandboxed=False)
class ProbeWorkflow:
    @workflow.run
    async def run(self, probe: ProbeInput) -> ProbeResult:
        result: ProbeResult = await workflow.execute_activity(
            "probe_vendor",
            probe,
            result_type=ProbeResult,
            start_to_close_timeout=timedelta(seconds=10),
            # A short initial interval: only Retry-After can explain a 2 s wait.
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )
        return result


async def test_rate_limit_retries_after_the_vendors_delay(
    temporal_client: Client, task_queue: str
) -> None:
    vendor = FlakyVendor()
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[ProbeWorkflow], activities=[vendor.call]
    ):
        result = await temporal_client.execute_workflow(
            ProbeWorkflow.run,
            ProbeInput(failure="rate_limited"),
            id=f"probe-{task_queue}",
            task_queue=task_queue,
        )
    first, second = result.attempts
    assert second - first >= timedelta(seconds=2)


async def test_validation_error_fails_at_once_naming_the_field(
    temporal_client: Client, task_queue: str
) -> None:
    vendor = FlakyVendor()
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[ProbeWorkflow], activities=[vendor.call]
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await temporal_client.execute_workflow(
                ProbeWorkflow.run,
                ProbeInput(failure="validation"),
                id=f"probe-{task_queue}",
                task_queue=task_queue,
            )
    assert len(vendor.attempts) == 1
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ValidationFailed" and cause.non_retryable
    assert cause.message == "salesforce HTTP 400: Name: Required fields are missing: [Name]"
    assert cause.details[0]["field"] == "Name"


@pytest.mark.parametrize(
    ("error", "expected_type", "retryable", "delay"),
    [
        (error_for_status(429, "slow down", system="s", retry_after="7"), "RateLimited", True, 7),
        (error_for_status(503, "down", system="s"), "TransientError", True, None),
        (error_for_status(409, "lock", system="s"), "Conflict", True, None),
        (error_for_status(408, "timeout", system="s"), "TransientError", True, None),
        (error_for_status(401, "who?", system="s"), "AuthFailed", False, None),
        (error_for_status(404, "gone", system="s"), "NotFound", False, None),
        (error_for_status(422, "bad", system="s", field="f"), "ValidationFailed", False, None),
    ],
)
async def test_classification_reaches_the_application_error(
    error: ConnectorError, expected_type: str, retryable: bool, delay: int | None
) -> None:
    @translate_connector_errors
    async def failing() -> None:
        raise error

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(failing)
    assert raised.value.type == expected_type
    assert raised.value.non_retryable is (not retryable)
    expected_delay = timedelta(seconds=delay) if delay is not None else None
    assert raised.value.next_retry_delay == expected_delay
    assert isinstance(raised.value.__cause__, type(error))


def test_retry_after_as_an_http_date() -> None:
    error = error_for_status(
        429, "slow down", system="s", retry_after="Wed, 21 Oct 2099 07:28:00 GMT"
    )
    assert isinstance(error, RateLimitedError)
    assert error.retry_after is not None and error.retry_after > timedelta(days=365)
    assert isinstance(error_for_status(400, "bad", system="s"), ValidationFailed)
