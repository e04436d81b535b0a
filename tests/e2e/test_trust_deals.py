"""Chaos acceptance for opportunity-to-project: faults in billing never undo live work, a
cancelled run is undone and said so, an outage is waited out. Real Temporal dev server, real
Tryton, the Salesforce and Stripe stand-ins (faults injected through `/_standin/faults`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from connectors.salesforce import SalesforceClient
from devstack.demo import CLEAN
from devstack.salesforce_seed import DealSpec, SeededDeal, close_won, seed_deal
from settings import Settings
from store import Store
from tests.e2e.conftest import Downstream, serving_every_queue
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

pytestmark = pytest.mark.chaos

Handle = WorkflowHandle[OpportunityToProjectWorkflow, OpportunityToProjectResult]
#: How long a test polls a run's status before it gives up (a bound, not an assertion).
POLL_FOR_S = 60


def uk_deal() -> DealSpec:
    key = f"trust-{uuid.uuid4().hex[:10]}"
    return replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}")


async def start(client: Client, task_queue: str, deal: SeededDeal) -> Handle:
    return await client.start_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=deal.opportunity_id, trigger="chaos"),
        id=workflow_id("salesforce", deal.opportunity_id),
        task_queue=task_queue,
    )


async def wait_until(handle: Handle, done: Callable[[DealStatus], bool]) -> DealStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_FOR_S
    while True:
        status: DealStatus = await handle.query(STATUS, result_type=DealStatus)
        if done(status):
            return status
        assert loop.time() < deadline, f"the run never got there: {status}"
        await asyncio.sleep(0.2)


@pytest.fixture
def stripe_faults(stripe_standin: StripeStandin) -> Iterator[StripeStandin]:
    """The Stripe stand-in, its faults cleared after the test whatever happens."""
    try:
        yield stripe_standin
    finally:
        stripe_standin.clear_faults()


@pytest.mark.usefixtures("e2e_worker")
async def test_failed_re_entry_leaves_the_live_project_open_and_the_crm_shows_it(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    stripe_faults: StripeStandin,
    downstream: Downstream,
) -> None:
    """Fault: a provisioned deal re-enters Closed Won and Stripe refuses its billing update
    for good (400). Assertion: the run fails, the live Tryton project stays open, the Stripe
    customer stays, and the CRM deal shows the failure."""
    client = temporal_env.client
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    first = await (await start(client, e2e_settings.task_queue, deal)).result()
    assert first.status == Step.COMPLETED

    await crm.update("Opportunity", deal.opportunity_id, {"StageName": "Negotiation/Review"})
    await close_won(crm, deal.opportunity_id)
    stripe_faults.inject_fault(kind="400", path="/v1/customers", method="POST", count=0)
    handle = await start(client, e2e_settings.task_queue, deal)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProvisioningFailed"
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert str(project.id) == first.ids["psa_project"]
    assert project.state != "done" and all(t.state != "done" for t in project.tasks)
    assert await downstream.billing_customers(deal.account_id) == [first.ids["billing_customer"]]
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "failed"
    assert "Provisioning failed at provision_billing" in opp["Q2C_Message__c"]
    assert "Undone" not in opp["Q2C_Message__c"]
    assert opp["Q2C_Project_Id__c"] == first.ids["psa_project"]


@pytest.mark.usefixtures("e2e_worker")
async def test_run_cancelled_mid_provisioning_is_undone_and_the_crm_shows_it_cancelled(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    stripe_faults: StripeStandin,
    downstream: Downstream,
) -> None:
    """Fault: Stripe answers 503 to every customer request, and the run is cancelled while it
    retries billing. Assertion: the project it created is closed, no Stripe customer exists,
    the CRM deal shows "cancelled", and an exception says what was undone."""
    client = temporal_env.client
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    stripe_faults.inject_fault(kind="503", path="/v1/customers", method="POST", count=0)
    handle = await start(client, e2e_settings.task_queue, deal)
    await wait_until(handle, lambda s: s.step == Step.PROVISION_BILLING)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert project.state == "done" and all(t.state == "done" for t in project.tasks)
    assert await downstream.billing_customers(deal.account_id) == []
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "cancelled"
    assert opp["Q2C_Message__c"].startswith("Provisioning cancelled at provision_billing")
    assert "Undone: close project" in opp["Q2C_Message__c"]
    [exception] = await e2e_store.exceptions(correlation_id=deal.opportunity_id)
    assert exception.kind == "provisioning_cancelled"
    assert exception.detail["undone"] == ["close project"]


@pytest.fixture
async def short_outage_worker(
    temporal_env: WorkflowEnvironment, e2e_settings: Settings, e2e_store: Store
) -> AsyncIterator[Settings]:
    """A worker of its own whose runs notice an outage after 3 s and wait it out for an hour."""
    settings = e2e_settings.model_copy(
        update={
            "task_queue": f"outage-{uuid.uuid4()}",
            "outage_notice_after": timedelta(seconds=3),
            "stripe_outage_deadline": timedelta(hours=1),
        }
    )
    async with serving_every_queue(temporal_env.client, settings, e2e_store):
        yield settings


async def test_stripe_outage_is_waited_out_shown_and_resolved_with_nothing_undone(
    temporal_env: WorkflowEnvironment,
    short_outage_worker: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    stripe_faults: StripeStandin,
    downstream: Downstream,
) -> None:
    """Fault: Stripe answers 503 to every customer request for longer than the notice window.
    Assertion: the run shows it waits on stripe (status and Q2cWaitingOn) with an open
    "system_unavailable" exception; once Stripe is back the deal completes, nothing was
    compensated, and the exception resolved itself."""
    client = temporal_env.client
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    stripe_faults.inject_fault(kind="503", path="/v1/customers", method="POST", count=0)
    handle = await start(client, short_outage_worker.task_queue, deal)

    status = await wait_until(handle, lambda s: s.waiting_on == "stripe")
    assert status.step == Step.PROVISION_BILLING
    attributes = {k.name: v for k, v in (await handle.describe()).typed_search_attributes}
    assert attributes["Q2cWaitingOn"] == "stripe"
    # (A Tryton step slower than the 3 s notice on a busy machine has a notice of its own.)
    [notice] = [
        e
        for e in await e2e_store.exceptions(correlation_id=deal.opportunity_id)
        if e.step == "provision_billing"
    ]
    assert (notice.kind, notice.detail["system"], notice.status) == (
        "system_unavailable",
        "stripe",
        "open",
    )

    stripe_faults.clear_faults()  # Stripe is back
    result = await handle.result()

    assert result.status == Step.COMPLETED
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert project.state != "done"
    assert await downstream.billing_customers(deal.account_id) == [result.ids["billing_customer"]]
    assert (await crm.get("Opportunity", deal.opportunity_id))["Q2C_Status__c"] == "provisioned"
    exceptions = await e2e_store.exceptions(status=None, correlation_id=deal.opportunity_id)
    assert {e.kind for e in exceptions} == {"system_unavailable"}  # no failure, no undo
    assert all(e.status == "resolved" for e in exceptions)
    [resolved] = [e for e in exceptions if e.id == notice.id]
    assert resolved.resolution and "stripe answered again" in resolved.resolution
    attributes = {k.name: v for k, v in (await handle.describe()).typed_search_attributes}
    assert "Q2cWaitingOn" not in attributes
