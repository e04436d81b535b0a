"""Catch-up sweeps end to end: what a lost webhook would have done, the sweep does, once.

Each test runs its own worker (built by `worker.py`, as in production) on its own task queue
and store, with the sweeps' Temporal Schedules every `SWEEP_INTERVAL`, against the session's
Temporal dev server, Tryton and stand-ins. The sweeps' checkpoints start at the test's start,
as in a deployment that has been sweeping all along. Nothing calls a sweep activity directly:
the schedule starts the sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.sweeps import BILLING_CHECKPOINT, crm_checkpoint
from canonical import InvoiceStatus as BillingStatus
from connectors.salesforce import SalesforceClient
from devstack.demo import CLEAN
from devstack.salesforce_seed import close_won, seed_deal
from settings import Settings
from standins.salesforce.webhooks import RETRY_DELAYS_S
from store import Store
from tests.e2e.conftest import Downstream
from tests.e2e.test_time_to_invoice import (
    decision,
    expected_net,
    provision_and_book,
    start_run,
    wait_for_step,
)
from tests.fixtures.salesforce import SalesforceStandin, for_opportunity
from tests.fixtures.service import running_service
from tests.fixtures.stripe import StripeStandin
from worker import activities_for, build_worker, open_adapters
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectResult,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.starters import SWEEPS, ensure_sweep_schedules, sweep_schedule_id
from workflows.sweeps import SweepResult
from workflows.time_to_invoice import (
    DECIDE,
    STATUS,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
)

pytestmark = pytest.mark.chaos

#: Short, so that a test waits seconds for the next sweep, not minutes.
SWEEP_INTERVAL = timedelta(seconds=2)
#: A bound on every wait below, so that a broken sweep fails the test instead of hanging it.
WAIT_S = 120
#: The stand-in's first delivery and its retries: every one of them refused, it gives up.
SALESFORCE_ATTEMPTS = 1 + len(RETRY_DELAYS_S)


@dataclass
class Sweeping:
    settings: Settings
    store: Store
    client: Client

    def schedule(self, sweep: str) -> ScheduleHandle:
        return self.client.get_schedule_handle(sweep_schedule_id(self.settings.task_queue, sweep))

    async def pause(self, sweep: str) -> None:
        """No more sweeps of this kind; returns once the one in flight, if any, has ended."""
        handle = self.schedule(sweep)
        await handle.pause(note="test: not this sweep")
        for running in (await handle.describe()).info.running_actions:
            await self.client.get_workflow_handle(running.workflow_id).result()

    async def sweeps_after(self, sweep: str, moment: datetime, count: int) -> list[SweepResult]:
        """The results of the first `count` sweeps the schedule started after `moment`."""
        handle = self.schedule(sweep)
        async with asyncio.timeout(WAIT_S):
            while True:
                actions = [
                    done.action
                    for done in (await handle.describe()).info.recent_actions
                    if done.started_at > moment
                    and isinstance(done.action, ScheduleActionExecutionStartWorkflow)
                ]
                if len(actions) >= count:
                    break
                await asyncio.sleep(0.2)
        return [
            await self.client.get_workflow_handle(
                a.workflow_id, run_id=a.first_execution_run_id, result_type=SweepResult
            ).result()
            for a in actions[:count]
        ]


@pytest.fixture
async def sweeping(
    temporal_env: WorkflowEnvironment, e2e_settings: Settings, tmp_path: Path
) -> AsyncIterator[Sweeping]:
    """A q2c worker of its own with the sweeps scheduled every SWEEP_INTERVAL."""
    settings = e2e_settings.model_copy(
        update={
            "task_queue": f"sweeps-{uuid.uuid4()}",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}",
            "sweep_interval": SWEEP_INTERVAL,
        }
    )
    store = Store.from_url(settings.store_url)
    await store.migrate()
    # Swept up to now: what happened before this test is not this test's to find.
    now = datetime.now(UTC)
    await store.advance_sweep_checkpoint(crm_checkpoint("salesforce"), now)
    await store.advance_sweep_checkpoint(BILLING_CHECKPOINT, now)
    client = temporal_env.client
    sweeping = Sweeping(settings=settings, store=store, client=client)
    try:
        async with open_adapters(settings) as adapters:
            worker = build_worker(client, settings, activities_for(settings, adapters, store))
            async with worker:
                await ensure_sweep_schedules(client, settings)
                try:
                    yield sweeping
                finally:
                    for sweep in SWEEPS:
                        with contextlib.suppress(RPCError):
                            await sweeping.pause(sweep)
                            await sweeping.schedule(sweep).delete()
    finally:
        await store.close()


async def wait_for_run(client: Client, workflow_id: str) -> str:
    """The run id of the first run under `workflow_id`, once something has started one."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                return (await client.get_workflow_handle(workflow_id).describe()).run_id
            except RPCError:
                await asyncio.sleep(0.2)


async def test_a_deal_won_while_the_service_is_down_is_provisioned_by_the_crm_sweep(
    sweeping: Sweeping,
    crm: SalesforceClient,
    salesforce: SalesforceStandin,
    downstream: Downstream,
) -> None:
    """Fault: every delivery of the deal's Closed Won webhook fails (the q2c service is down)
    until the CRM gives up. Assertion: the CRM sweep starts the deal's run as the webhook
    would have (same business-key workflow id); the deal gets exactly one ERP customer, one
    Tryton project and one Stripe customer; later sweeps start nothing more; and the
    webhook, replayed once the service is back, lands on the sweep's run."""
    await sweeping.pause("billing")
    key = f"sweep-{uuid.uuid4().hex[:10]}"
    deal = await seed_deal(crm, replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}"))
    opp = deal.opportunity_id
    salesforce.fail_next_webhooks(SALESFORCE_ATTEMPTS)

    await close_won(crm, opp)

    workflow_id = deal_workflow_id("salesforce", opp)
    run_id = await wait_for_run(sweeping.client, workflow_id)
    handle = sweeping.client.get_workflow_handle(
        workflow_id, run_id=run_id, result_type=OpportunityToProjectResult
    )
    result = await handle.result()
    [started] = [
        e
        async for e in handle.fetch_history_events()
        if e.HasField("workflow_execution_started_event_attributes")
    ]
    payload = started.workflow_execution_started_event_attributes.input.payloads
    [run_input] = await sweeping.client.data_converter.decode(payload, [OpportunityToProjectInput])
    assert run_input.trigger == "sweep:salesforce" and run_input.opportunity_id == opp
    # The webhook really was lost: every attempt the CRM made was refused.
    deliveries = await asyncio.to_thread(
        salesforce.wait_for_webhooks, for_opportunity(opp), count=SALESFORCE_ATTEMPTS
    )
    assert [d.answered for d in deliveries] == [503] * SALESFORCE_ATTEMPTS

    [project] = await downstream.projects_for(opp)
    assert str(project.id) == result.ids["psa_project"]
    assert len(await downstream.erp_customers(deal.account_id)) == 1
    assert await downstream.billing_customers(deal.account_id) == [result.ids["billing_customer"]]

    # Later sweeps see the deal again (its write-back changed it) and start nothing.
    done = datetime.now(UTC)
    later = await sweeping.sweeps_after("crm", done, 2)
    assert [r.delivered_count for r in later] == [0, 0]
    assert all(r.already_handled >= 1 for r in later)

    # The service is back; the CRM's webhook is replayed: the same run, nothing new.
    replayed = salesforce.replay_webhook(opp)
    [delivery] = await asyncio.to_thread(
        salesforce.wait_for_webhooks,
        lambda d: for_opportunity(opp)(d) and d.answered == 204,
    )
    assert delivery.json()["eventId"] == replayed["eventId"]
    async with running_service(sweeping.settings) as service:
        answer = await service.post(
            "/webhooks/salesforce",
            content=delivery.body,
            headers={
                "content-type": "application/json",
                "x-salesforce-signature": delivery.signature,
            },
        )
    assert answer.status_code == 202, answer.text
    assert (answer.json()["workflow_id"], answer.json()["run_id"]) == (workflow_id, run_id)
    assert (await sweeping.client.get_workflow_handle(workflow_id).describe()).run_id == run_id
    assert len(await downstream.projects_for(opp)) == 1
    assert len(await downstream.billing_customers(deal.account_id)) == 1


async def test_a_payment_whose_webhook_never_arrives_is_found_by_the_billing_sweep(
    temporal_env: WorkflowEnvironment,
    sweeping: Sweeping,
    crm: SalesforceClient,
    stripe: StripeStandin,
    downstream: Downstream,
) -> None:
    """Fault: Stripe's `invoice.paid` webhook never reaches q2c (every delivery refused).
    Assertion: the billing sweep delivers the payment to the invoice's run, which closes as
    paid with the payment recorded in Tryton; later sweeps signal nothing more."""
    await sweeping.pause("crm")  # the deal is provisioned by the test itself
    deal = await provision_and_book(temporal_env, sweeping.settings, crm, downstream)
    handle = await start_run(temporal_env, sweeping.settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    assert status.billing_invoice_id and status.erp_invoice_id
    stripe.refuse_webhooks(100, event_type="invoice.paid")

    await downstream.stripe.pay_invoice(
        status.billing_invoice_id, idempotency_key=f"pay-{status.billing_invoice_id}"
    )

    async with asyncio.timeout(WAIT_S):
        result = await handle.result()
    total = expected_net() * Decimal("1.20")
    assert result.status == InvoiceStep.PAID and result.total == total
    final = await handle.query(STATUS, result_type=InvoiceStatus)
    [payment] = final.payments
    events = stripe.api("get", "/v1/events", params={"type": "invoice.paid", "limit": 100}).json()[
        "data"
    ]
    [paid_event] = [e for e in events if e["data"]["object"]["id"] == status.billing_invoice_id]
    assert (payment.event_id, payment.kind) == (paid_event["id"], "paid")
    # Its webhook really never arrived: every delivery was refused.
    assert paid_event["id"] in {e["id"] for e in stripe.refused_events()}
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert posted.status == BillingStatus.PAID

    # Later sweeps list the same event again and signal nothing.
    done = datetime.now(UTC)
    later = await sweeping.sweeps_after("billing", done, 2)
    assert [r.delivered_count for r in later] == [0, 0]
    assert all(r.already_handled >= 1 for r in later)
    assert await sweeping.store.exceptions() == []
