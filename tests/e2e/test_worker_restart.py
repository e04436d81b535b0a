"""A worker killed in the middle of a run: a new worker finishes it, and nothing downstream
exists twice (activities run at least once; idempotency keys make that harmless)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from connectors.salesforce import SalesforceClient
from devstack.salesforce_seed import DealLine, DealSpec, close_won, seed_deal
from tests.e2e.conftest import Downstream, WorkerProcesses
from tests.fixtures.stripe import StripeStandin
from workflows.opportunity_to_project import (
    STATUS,
    DealStatus,
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
    Step,
    workflow_id,
)

#: Billing answers this slowly once, so the worker can be killed while the call is in flight.
SLOW_BILLING_S = 3
RESULT_WAIT_S = 120


async def test_killed_worker_mid_run_completes_without_duplicates(
    temporal_env: WorkflowEnvironment,
    workers: WorkerProcesses,
    crm: SalesforceClient,
    stripe_standin: StripeStandin,
    downstream: Downstream,
) -> None:
    key = f"restart-{uuid.uuid4().hex[:8]}"
    deal = await seed_deal(
        crm,
        DealSpec(
            key=key,
            account_name=f"Umbrella Pty {key[-4:]}",
            street="1 George St",
            city="Sydney",
            postal_code="2000",
            country="AU",
            deal_name="Umbrella data platform",
            currency="AUD",
            lines=[
                DealLine(
                    product="Data Migration", quantity=Decimal("120"), unit_price=Decimal("190")
                )
            ],
        ),
    )
    await close_won(crm, deal.opportunity_id)
    stripe_standin.inject_fault(
        kind="latency", path="/v1/customers", method="POST", delay=SLOW_BILLING_S, count=1
    )
    first = workers.start()
    client = temporal_env.client
    handle = await client.start_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=deal.opportunity_id, trigger="test"),
        id=workflow_id("salesforce", deal.opportunity_id),
        task_queue=workers.env["Q2C_TASK_QUEUE"],
    )
    try:
        async with asyncio.timeout(60):
            while True:
                status = await handle.query(STATUS, result_type=DealStatus)
                if status.step == Step.PROVISION_BILLING:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the Stripe call is in flight now
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)

        workers.start()
        async with asyncio.timeout(RESULT_WAIT_S):
            result: OpportunityToProjectResult = await handle.result()
    finally:
        stripe_standin.clear_faults()

    assert result.status == Step.COMPLETED
    assert await downstream.erp_customers(deal.account_id) == [int(result.ids["erp_customer"])]
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert (project.legal_entity_code, project.currency) == ("NW-AU", "AUD")
    assert await downstream.billing_customers(deal.account_id) == [result.ids["billing_customer"]]
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the killed attempt really was retried
