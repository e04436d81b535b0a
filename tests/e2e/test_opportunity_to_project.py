"""Opportunity-to-project end to end: a deal closed in the Salesforce stand-in becomes a
customer in Tryton, a project with tasks and rates in Tryton, a Stripe customer, and a status
on the deal; with the real worker code on the real Temporal dev server."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from connectors.salesforce import SalesforceClient
from devstack.demo import CLEAN, RISKY
from devstack.salesforce_seed import DealSpec, SeededDeal, close_won, seed_deal
from settings import Settings
from store import Store
from tests.e2e.conftest import APPROVER, Downstream
from tests.fixtures.salesforce import SalesforceStandin, for_opportunity
from tests.fixtures.service import running_service
from tests.fixtures.stripe import StripeStandin
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    DECIDE,
    STATUS,
    ApprovalAck,
    ApprovalDecision,
    DataCorrected,
    DealStatus,
    Decision,
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
    Step,
    workflow_id,
)

pytestmark = pytest.mark.usefixtures("e2e_worker")

STEP_WAIT_S = 30


def uk_deal(**overrides: Any) -> DealSpec:
    """The demo's clean UK deal, as a fresh account and opportunity."""
    key = f"e2e-{uuid.uuid4().hex[:10]}"
    return replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}", **overrides)


def us_big_deal() -> DealSpec:
    """The demo's deal over the 250,000 USD threshold (and on longer terms): finance decides."""
    key = f"e2e-{uuid.uuid4().hex[:10]}"
    return replace(RISKY, key=key, account_name=f"Globex Corporation {key[-4:]}")


async def start(client: Client, settings: Settings, deal: SeededDeal):
    return await client.start_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=deal.opportunity_id, trigger="e2e"),
        id=workflow_id("salesforce", deal.opportunity_id),
        task_queue=settings.task_queue,
    )


async def wait_for_step(handle, step: Step) -> DealStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_WAIT_S
    while True:
        status: DealStatus = await handle.query(STATUS, result_type=DealStatus)
        if status.step == step:
            return status
        assert loop.time() < deadline, f"run stayed at {status.step}, expected {step}"
        await asyncio.sleep(0.2)


async def test_clean_deal_closed_in_the_crm_is_provisioned_exactly_once(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    # The stand-in's real, signed Closed Won notification...
    [delivery] = salesforce_standin.wait_for_webhooks(for_opportunity(deal.opportunity_id))

    # ...delivered ten times at once to the q2c service.
    async with running_service(e2e_settings) as service:
        answers = await asyncio.gather(
            *(
                service.post(
                    "/webhooks/salesforce",
                    content=delivery.body,
                    headers={
                        "content-type": "application/json",
                        "x-salesforce-signature": delivery.signature,
                    },
                )
                for _ in range(10)
            )
        )
    expected_id = workflow_id("salesforce", deal.opportunity_id)
    assert {a.status_code for a in answers} == {202}
    assert {a.json()["workflow_id"] for a in answers} == {expected_id}
    assert len({a.json()["run_id"] for a in answers}) == 1

    handle = temporal_env.client.get_workflow_handle(
        expected_id, result_type=OpportunityToProjectResult
    )
    result: OpportunityToProjectResult = await handle.result()
    assert result.status == Step.COMPLETED

    # Exactly one of everything downstream.
    assert await downstream.erp_customers(deal.account_id) == [int(result.ids["erp_customer"])]
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert str(project.id) == result.ids["psa_project"]
    assert await downstream.billing_customers(deal.account_id) == [result.ids["billing_customer"]]

    # The project: legal entity, currency, tasks with the rates sold, budget.
    assert (project.legal_entity_code, project.currency, project.state) == ("NW-UK", "GBP", "open")
    assert (
        project.budget is not None
        and project.budget.amount == Decimal("80") * 210 + 320 * 160 + 60 * 140
    )
    tasks = {
        t.name: (t.role, t.rate.amount, t.rate.currency, t.planned_hours) for t in project.tasks
    }
    assert tasks == {
        "Solution Architecture": ("Solution Architect", Decimal("210"), "GBP", Decimal("80")),
        "Development": ("Developer", Decimal("160"), "GBP", Decimal("320")),
        "Project Management": ("Project Manager", Decimal("140"), "GBP", Decimal("60")),
    }
    customer = await downstream.erp.get_customer(int(result.ids["erp_customer"]))
    assert customer.legal_entity.code == "NW-UK" and customer.tax_id == "GB980780684"
    assert customer.addresses[0].city == "London"

    # The deal in the CRM shows the outcome and the run.
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "provisioned"
    assert opp["Q2C_Project_Id__c"] == result.ids["psa_project"]
    assert opp["Q2C_Billing_Customer_Id__c"] == result.ids["billing_customer"]
    assert opp["Q2C_Run_Url__c"].endswith(f"/workflows/{expected_id}")

    # q2c's own records: cross-references and an audit entry per step.
    refs = await e2e_store.references("customer", f"salesforce:{deal.account_id}")
    assert refs == {"erp": result.ids["erp_customer"], "billing": result.ids["billing_customer"]}
    steps = [e.step for e in await e2e_store.audit_trail(workflow_id=expected_id)]
    for step in (
        "start",
        "validate",
        "upsert_customer",
        "create_project",
        "provision_billing",
        "completed",
    ):
        assert step in steps


async def test_risky_deal_waits_for_finance_and_a_listed_approver_releases_it(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, us_big_deal())
    await close_won(crm, deal.opportunity_id)
    handle = await start(temporal_env.client, e2e_settings, deal)
    status = await wait_for_step(handle, Step.AWAITING_APPROVAL)
    assert status.pending_approval is not None
    assert status.pending_approval.reasons == [
        "amount 340,500.00 USD exceeds the approval threshold 250,000.00 USD",
        "payment terms net 45 days exceed the standard 30 days",
    ]
    assert (await crm.get("Opportunity", deal.opportunity_id))[
        "Q2C_Status__c"
    ] == "awaiting_approval"
    assert await downstream.erp_customers(deal.account_id) == []

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            DECIDE,
            ApprovalDecision(
                decision=Decision.APPROVE, approver="rep@northwind.example", reason="go"
            ),
            result_type=ApprovalAck,
        )
    assert "rep@northwind.example is not on the finance approvers list" in str(refused.value.cause)

    ack = await handle.execute_update(
        DECIDE,
        ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason="margin reviewed"),
        result_type=ApprovalAck,
    )
    assert ack.what == Decision.APPROVE
    result: OpportunityToProjectResult = await handle.result()
    assert result.status == Step.COMPLETED
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert (project.legal_entity_code, project.currency) == ("NW-US", "USD")


async def test_rejected_deal_is_marked_on_the_crm_and_creates_nothing(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, us_big_deal())
    await close_won(crm, deal.opportunity_id)
    handle = await start(temporal_env.client, e2e_settings, deal)
    await wait_for_step(handle, Step.AWAITING_APPROVAL)
    await handle.signal(
        DECIDE,
        ApprovalDecision(decision=Decision.REJECT, approver=APPROVER, reason="price too low"),
    )
    result: OpportunityToProjectResult = await handle.result()

    assert result.status == Step.REJECTED
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "rejected"
    assert opp["Q2C_Message__c"] == f"Rejected by {APPROVER}: price too low"
    assert await downstream.erp_customers(deal.account_id) == []
    assert await downstream.projects_for(deal.opportunity_id) == []
    assert await downstream.billing_customers(deal.account_id) == []


async def test_permanent_billing_failure_closes_the_project_and_marks_the_deal_failed(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    stripe_standin: StripeStandin,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    # Billing refuses the customer for good (a 400 is not worth retrying).
    stripe_standin.inject_fault(kind="400", path="/v1/customers", method="POST", count=1)
    try:
        handle = await start(temporal_env.client, e2e_settings, deal)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    finally:
        stripe_standin.clear_faults()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProvisioningFailed"
    assert cause.message.startswith("provision_billing: ")
    [project] = await downstream.projects_for(deal.opportunity_id)
    assert project.state == "done"  # compensated: closed
    assert all(task.state == "done" for task in project.tasks)
    assert await downstream.billing_customers(deal.account_id) == []
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "failed"
    assert "Provisioning failed at provision_billing" in opp["Q2C_Message__c"]
    assert "Undone: close project" in opp["Q2C_Message__c"]
    [exception] = await e2e_store.exceptions(correlation_id=deal.opportunity_id)
    assert exception.kind == "provisioning_failed" and exception.step == "provision_billing"


async def test_bad_deal_waits_is_corrected_in_the_crm_and_completes(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, uk_deal(tax_id=None))  # GB-VAT customers need a tax id
    await close_won(crm, deal.opportunity_id)
    handle = await start(temporal_env.client, e2e_settings, deal)
    status = await wait_for_step(handle, Step.AWAITING_CORRECTION)
    assert status.validation_issues == [
        "account.tax_id: customers under GB-VAT need a tax id on the account"
    ]
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Status__c"] == "needs_correction"
    assert "account.tax_id" in opp["Q2C_Message__c"]
    [exception] = await e2e_store.exceptions(correlation_id=deal.opportunity_id)
    assert exception.kind == "invalid_deal"

    await crm.update("Account", deal.account_id, {"Tax_Id__c": "GB980780684"})
    await handle.signal(DATA_CORRECTED, DataCorrected(corrected_by="ops@northwind.example"))
    result: OpportunityToProjectResult = await handle.result()

    assert result.status == Step.COMPLETED
    customer = await downstream.erp.get_customer(int(result.ids["erp_customer"]))
    assert customer.tax_id == "GB980780684"
    assert (await crm.get("Opportunity", deal.opportunity_id))["Q2C_Status__c"] == "provisioned"


async def test_a_deal_that_re_enters_closed_won_updates_what_exists(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    deal = await seed_deal(crm, uk_deal())
    await close_won(crm, deal.opportunity_id)
    first: OpportunityToProjectResult = await (
        await start(temporal_env.client, e2e_settings, deal)
    ).result()
    # Sales reopens the deal, renames the account, and wins it again: a second run.
    await crm.update("Opportunity", deal.opportunity_id, {"StageName": "Negotiation/Review"})
    await crm.update("Account", deal.account_id, {"Name": "Initech UK Holdings"})
    await close_won(crm, deal.opportunity_id)
    second: OpportunityToProjectResult = await (
        await start(temporal_env.client, e2e_settings, deal)
    ).result()

    assert second.status == Step.COMPLETED and second.ids == first.ids
    assert len(await downstream.projects_for(deal.opportunity_id)) == 1
    assert len(await downstream.billing_customers(deal.account_id)) == 1
    [party] = await downstream.erp_customers(deal.account_id)
    assert (await downstream.erp.get_customer(party)).name == "Initech UK Holdings"


async def test_a_fresh_crm_change_wakes_a_run_waiting_for_corrections(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    salesforce_standin: SalesforceStandin,
) -> None:
    deal = await seed_deal(crm, uk_deal(tax_id=None))
    await close_won(crm, deal.opportunity_id)
    wid = workflow_id("salesforce", deal.opportunity_id)

    async def deliver(delivery) -> None:
        answer = await service.post(
            "/webhooks/salesforce",
            content=delivery.body,
            headers={
                "content-type": "application/json",
                "x-salesforce-signature": delivery.signature,
            },
        )
        assert answer.status_code == 202 and answer.json()["workflow_id"] == wid

    async with running_service(e2e_settings) as service:
        [first] = salesforce_standin.wait_for_webhooks(for_opportunity(deal.opportunity_id))
        await deliver(first)
        handle = temporal_env.client.get_workflow_handle(
            wid, result_type=OpportunityToProjectResult
        )
        await wait_for_step(handle, Step.AWAITING_CORRECTION)

        # Sales fixes the account and wins the deal again: the CRM's new event wakes the run.
        await crm.update("Account", deal.account_id, {"Tax_Id__c": "GB980780684"})
        await crm.update("Opportunity", deal.opportunity_id, {"StageName": "Negotiation/Review"})
        await close_won(crm, deal.opportunity_id)
        second = salesforce_standin.wait_for_webhooks(
            for_opportunity(deal.opportunity_id), count=2
        )[-1]
        assert second.json()["eventId"] != first.json()["eventId"]
        await deliver(second)
        result: OpportunityToProjectResult = await handle.result()

    assert result.status == Step.COMPLETED
