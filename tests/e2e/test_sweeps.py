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
from typing import Any

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleHandle,
    WorkflowHandle,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.sweeps import BILLING_CHECKPOINT, crm_checkpoint
from canonical import InvoiceStatus as BillingStatus
from connectors.salesforce import SalesforceClient
from connectors.stripe import PaymentDeclined
from devstack.demo import CLEAN
from devstack.salesforce_seed import close_won, seed_deal
from settings import Settings
from standins.salesforce.webhooks import RETRY_DELAYS_S
from store import Store
from tests.e2e.conftest import Downstream, serving_every_queue
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
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectResult,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.starters import (
    BILLING_SWEEP,
    CRM_SWEEP,
    SWEEPS,
    ensure_sweep_schedules,
    sweep_schedule_id,
)
from workflows.sweeps import SweepInput, SweepResult
from workflows.time_to_invoice import (
    DECIDE,
    PAYMENT,
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
            if isinstance(running, ScheduleActionExecutionStartWorkflow):
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
                ]
                started = [
                    a for a in actions if isinstance(a, ScheduleActionExecutionStartWorkflow)
                ]
                if len(started) >= count:
                    break
                await asyncio.sleep(0.2)
        return [
            await self.client.get_workflow_handle(
                a.workflow_id, run_id=a.first_execution_run_id, result_type=SweepResult
            ).result()
            for a in started[:count]
        ]


@pytest.fixture
def sweep_interval() -> timedelta:
    return SWEEP_INTERVAL


@pytest.fixture
async def sweeping(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    tmp_path: Path,
    sweep_interval: timedelta,
) -> AsyncIterator[Sweeping]:
    """A q2c worker of its own with the sweeps scheduled every `sweep_interval`."""
    settings = e2e_settings.model_copy(
        update={
            "task_queue": f"sweeps-{uuid.uuid4()}",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}",
            "sweep_interval": sweep_interval,
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
        async with serving_every_queue(client, settings, store):
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


async def signals_in_history(handle: WorkflowHandle[Any, Any], name: str) -> int:
    """How many `name` signals the run received: what was sent, not what the run kept."""
    names = [
        e.workflow_execution_signaled_event_attributes.signal_name
        async for e in handle.fetch_history_events()
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    return names.count(name)


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
    assert await signals_in_history(handle, PAYMENT) == 1
    # Its webhook really never arrived: every delivery was refused.
    assert paid_event["id"] in {e["id"] for e in stripe.refused_events()}
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert posted.status == BillingStatus.PAID

    # Later sweeps list the same event again and signal nothing.
    done = datetime.now(UTC)
    later = await sweeping.sweeps_after("billing", done, 2)
    assert [r.delivered_count for r in later] == [0, 0]
    assert all(r.already_handled >= 1 for r in later)
    assert await signals_in_history(handle, PAYMENT) == 1
    assert await sweeping.store.exceptions() == []


@pytest.mark.parametrize("sweep_interval", [timedelta(hours=1)])
async def test_sweeps_run_twice_at_once_start_and_signal_once(
    temporal_env: WorkflowEnvironment,
    sweeping: Sweeping,
    crm: SalesforceClient,
    salesforce: SalesforceStandin,
    stripe: StripeStandin,
    downstream: Downstream,
) -> None:
    """Fault: a deal's Closed Won webhook and an invoice's `invoice.payment_failed` webhook
    are both lost, and each sweep runs twice at once (two overlapping firings), then twice
    more. Assertion: the deal gets one run (one Tryton project, one Stripe customer) and the
    invoice's run one `payment` signal; the later sweeps start and signal nothing."""
    for sweep in SWEEPS:  # the test starts each sweep itself
        await sweeping.pause(sweep)
    billed = await provision_and_book(temporal_env, sweeping.settings, crm, downstream)
    stripe.api(  # the stand-in's test hook: this customer's card is declined
        "POST",
        f"/v1/customers/{billed.billing_customer_id}",
        data={"metadata[standin_payment]": "fail"},
    ).raise_for_status()
    invoice_run = await start_run(temporal_env, sweeping.settings, billed.project_id)
    await wait_for_step(invoice_run, InvoiceStep.AWAITING_APPROVAL)
    await invoice_run.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(invoice_run, InvoiceStep.AWAITING_PAYMENT)
    assert status.billing_invoice_id
    stripe.refuse_webhooks(100, event_type="invoice.payment_failed")
    with pytest.raises(PaymentDeclined):
        await downstream.stripe.pay_invoice(
            status.billing_invoice_id, idempotency_key=f"pay-{status.billing_invoice_id}"
        )
    key = f"sweep-{uuid.uuid4().hex[:10]}"
    deal = await seed_deal(crm, replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}"))
    salesforce.fail_next_webhooks(SALESFORCE_ATTEMPTS)
    await close_won(crm, deal.opportunity_id)

    async def sweep_twice_at_once(workflow: str, sweep: str) -> list[SweepResult]:
        runs = [
            await sweeping.client.start_workflow(
                workflow,
                SweepInput(sweep=sweep),
                id=f"{sweeping.settings.task_queue}-{sweep}-{uuid.uuid4().hex[:8]}",
                task_queue=sweeping.settings.task_queue,
                result_type=SweepResult,
            )
            for _ in range(2)
        ]
        return list(await asyncio.gather(*(run.result() for run in runs)))

    crm_sweeps, billing_sweeps = await asyncio.gather(
        sweep_twice_at_once(CRM_SWEEP, "crm"), sweep_twice_at_once(BILLING_SWEEP, "billing")
    )

    # The deal: one run, started by one of the two sweeps; the other found it.
    workflow_id = deal_workflow_id("salesforce", deal.opportunity_id)
    assert sum(r.delivered_count for r in crm_sweeps) == 1
    assert [w for r in crm_sweeps for w in r.delivered] == [workflow_id]
    deal_run = sweeping.client.get_workflow_handle(
        workflow_id, result_type=OpportunityToProjectResult
    )
    provisioned = await deal_run.result()
    assert len(await downstream.projects_for(deal.opportunity_id)) == 1
    assert await downstream.billing_customers(deal.account_id) == [
        provisioned.ids["billing_customer"]
    ]
    # The invoice: one signal, from one of the two sweeps.
    assert sum(r.delivered_count for r in billing_sweeps) == 1
    assert await signals_in_history(invoice_run, PAYMENT) == 1
    [failed] = (await invoice_run.query(STATUS, result_type=InvoiceStatus)).payments
    assert (
        failed.kind == "payment_failed" and failed.billing_invoice_id == status.billing_invoice_id
    )

    # Twice more, one after the other: both find the same changes, and deliver nothing.
    again = [
        await sweep_twice_at_once(CRM_SWEEP, "crm"),
        await sweep_twice_at_once(BILLING_SWEEP, "billing"),
    ]
    assert [r.delivered_count for pair in again for r in pair] == [0, 0, 0, 0]
    assert all(r.already_handled >= 1 for pair in again for r in pair)
    assert (await deal_run.describe()).run_id == (
        await sweeping.client.get_workflow_handle(workflow_id).describe()
    ).run_id
    assert await signals_in_history(invoice_run, PAYMENT) == 1
    assert len(await downstream.projects_for(deal.opportunity_id)) == 1
    await invoice_run.terminate("test over")
