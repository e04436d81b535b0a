"""Ledger activities on a real Temporal server and a real store: retried work records once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState
from temporalio.worker import Worker

from activities.ledger import (
    LedgerActivities,
    LinkReferenceInput,
    RecordAuditInput,
    RecordExceptionInput,
)
from store import Store

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel


TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(maximum_attempts=2)


class LedgerProbeInput(BaseModel):
    canonical_id: str
    external_id: str


@workflow.defn(sandboxed=False)
class LedgerProbeWorkflow:
    """Does what a lifecycle does after a step: link ids, audit, raise an exception."""

    @workflow.run
    async def run(self, probe: LedgerProbeInput) -> int:
        wid = workflow.info().workflow_id
        await workflow.execute_activity_method(
            LedgerActivities.link_reference,
            LinkReferenceInput(
                entity="customer",
                canonical_id=probe.canonical_id,
                system="tryton",
                external_id=probe.external_id,
            ),
            start_to_close_timeout=TIMEOUT,
            retry_policy=RETRY,
        )
        for _ in range(2):  # the same step twice, as after a worker restart
            await workflow.execute_activity_method(
                LedgerActivities.record_audit,
                RecordAuditInput(
                    idempotency_key=f"{wid}:upsert_customer",
                    workflow_id=wid,
                    step="upsert_customer",
                    system="tryton",
                    action="created",
                    correlation_id=probe.canonical_id,
                ),
                start_to_close_timeout=TIMEOUT,
                retry_policy=RETRY,
            )
        result = await workflow.execute_activity_method(
            LedgerActivities.record_exception,
            RecordExceptionInput(
                dedupe_key=f"{wid}:validate",
                kind="invalid_deal",
                message="legal_entity: missing",
                workflow_id=wid,
            ),
            start_to_close_timeout=TIMEOUT,
            retry_policy=RETRY,
        )
        return result.exception_id


@pytest.fixture
async def sqlite_store(tmp_path):
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}")
    await store.migrate()
    yield store
    await store.close()


async def test_ledger_records_once_per_step(
    temporal_client: Client, task_queue: str, sqlite_store: Store
) -> None:
    ledger = LedgerActivities(sqlite_store)
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[LedgerProbeWorkflow],
        activities=[ledger.link_reference, ledger.record_audit, ledger.record_exception],
    ):
        exception_id = await temporal_client.execute_workflow(
            LedgerProbeWorkflow.run,
            LedgerProbeInput(canonical_id="006A1", external_id="17"),
            id=f"ledger-probe-{task_queue}",
            task_queue=task_queue,
        )
    assert await sqlite_store.external_id("customer", "006A1", "tryton") == "17"
    trail = await sqlite_store.audit_trail(correlation_id="006A1")
    assert [(e.step, e.action) for e in trail] == [("upsert_customer", "created")]
    assert trail[0].run_id  # the activity recorded which run did it
    [record] = await sqlite_store.exceptions()
    assert record.id == exception_id and record.message == "legal_entity: missing"


async def test_conflicting_reference_fails_the_run_without_retrying(
    temporal_client: Client, task_queue: str, sqlite_store: Store
) -> None:
    await sqlite_store.link("customer", "006A2", "tryton", "99")
    ledger = LedgerActivities(sqlite_store)
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[LedgerProbeWorkflow],
        activities=[ledger.link_reference, ledger.record_audit, ledger.record_exception],
    ):
        handle = await temporal_client.start_workflow(
            LedgerProbeWorkflow.run,
            LedgerProbeInput(canonical_id="006A2", external_id="17"),
            id=f"ledger-probe-{task_queue}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "CrossReferenceConflict" and cause.non_retryable
    assert "already '99' in tryton" in cause.message
    assert activity_error.retry_state == RetryState.NON_RETRYABLE_FAILURE
    assert await sqlite_store.external_id("customer", "006A2", "tryton") == "99"
