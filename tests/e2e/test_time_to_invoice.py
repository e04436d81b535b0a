"""Time-to-invoice end to end: time booked in Tryton for a project q2c provisioned becomes a
draft, finance decides, the invoice is finalized in Stripe and posted in Tryton with the same
total, the time is no longer billable, the CRM shows the invoice, and Stripe's payment webhook
closes the run; with the real worker code on the real Temporal dev server."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from canonical import (
    AdjustmentKind,
    AdjustmentLine,
    BillingPeriod,
    InvoiceAdjustment,
    TimeEntry,
)
from canonical import (
    InvoiceStatus as BillingStatus,
)
from connectors.salesforce import SalesforceClient
from connectors.tryton import TrytonPsa
from devstack.demo import CLEAN
from devstack.salesforce_seed import close_won, seed_deal
from settings import Settings
from store import Store
from tests.e2e.conftest import APPROVER, Downstream
from tests.fixtures.service import running_service
from tests.fixtures.stripe import StripeStandin
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.time_to_invoice import (
    ADJUST,
    DECIDE,
    STATUS,
    ApprovalDecision,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    TimeToInvoiceInput,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
    workflow_id,
)

pytestmark = pytest.mark.usefixtures("e2e_worker")

STEP_WAIT_S = 60
#: Hours booked per task in each test: (task name, hours).
BOOKED = (("Solution Architecture", "4"), ("Development", "10.5"), ("Project Management", "2.25"))
#: The demo's UK deal sells those roles at these rates (GBP, 20 % VAT).
RATES = {
    "Solution Architecture": Decimal(210),
    "Development": Decimal(160),
    "Project Management": Decimal(140),
}
Handle = WorkflowHandle[TimeToInvoiceWorkflow, TimeToInvoiceResult]


@dataclass
class Provisioned:
    opportunity_id: str
    project_id: str
    billing_customer_id: str
    entry_ids: list[str]


async def provision_and_book(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> Provisioned:
    """A deal won and provisioned by q2c, then time booked on its tasks in Tryton."""
    key = f"t2i-{uuid.uuid4().hex[:10]}"
    deal = await seed_deal(crm, replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}"))
    await close_won(crm, deal.opportunity_id)
    provisioned: OpportunityToProjectResult = await temporal_env.client.execute_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=deal.opportunity_id, trigger="e2e"),
        id=deal_workflow_id("salesforce", deal.opportunity_id),
        task_queue=settings.task_queue,
    )
    project_id = provisioned.ids["psa_project"]
    psa = TrytonPsa(downstream.tryton)
    project = await psa.get_project(int(project_id))
    tasks = {t.name: t for t in project.tasks}
    [employee, *_] = await psa.list_employees("NW-UK")
    today = datetime.now(UTC).date()
    entries = [
        TimeEntry(
            id=f"{key}-{n}",
            project_id=project_id,
            task_id=str(tasks[name].id),
            employee=employee.name,
            role=tasks[name].role or name,
            work_date=today,
            hours=Decimal(hours),
            approved=True,
        )
        for n, (name, hours) in enumerate(BOOKED)
    ]
    booked = await psa.create_timesheet_lines(entries, idempotency_key=key)
    return Provisioned(
        opportunity_id=deal.opportunity_id,
        project_id=project_id,
        billing_customer_id=provisioned.ids["billing_customer"],
        entry_ids=[str(booked[e.id]) for e in entries],
    )


def expected_net() -> Decimal:
    return sum((Decimal(h) * RATES[name] for name, h in BOOKED), Decimal(0))


async def start_run(
    temporal_env: WorkflowEnvironment, settings: Settings, project_id: str
) -> Handle:
    period = BillingPeriod.of(datetime.now(UTC).date()).key
    return await temporal_env.client.start_workflow(
        TimeToInvoiceWorkflow.run,
        TimeToInvoiceInput(project_id=project_id, period=period, trigger="e2e"),
        id=workflow_id(project_id, period),
        task_queue=settings.task_queue,
    )


async def wait_for_step(handle: Handle, step: InvoiceStep) -> InvoiceStatus:
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            status: InvoiceStatus = await handle.query(STATUS, result_type=InvoiceStatus)
            if status.step == step:
                return status
            assert status.step not in (InvoiceStep.FAILED, InvoiceStep.PAID), status
            await asyncio.sleep(0.2)


def decision(kind: Decision, reason: str = "checked") -> ApprovalDecision:
    return ApprovalDecision(decision=kind, approver=APPROVER, reason=reason)


async def unbilled(downstream: Downstream, project_id: str) -> int:
    period = BillingPeriod.of(datetime.now(UTC).date())
    return await TrytonPsa(downstream.tryton).count_unbilled(
        int(project_id), period.start, period.end
    )


async def billing_invoices(stripe: StripeStandin, customer_id: str) -> list[dict[str, Any]]:
    answer = stripe.api("get", "/v1/invoices", params={"customer": customer_id})
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


async def test_booked_time_becomes_a_paid_invoice_everywhere(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe_standin: StripeStandin,
) -> None:
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)

    status = await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    draft = status.draft
    assert draft is not None and draft.currency == "GBP"
    net = expected_net()  # hours x rate per role
    assert draft.subtotal == net and draft.tax == net * Decimal("0.20")
    assert {(line.quantity, line.unit_price) for line in draft.lines} == {
        (Decimal(h), RATES[name]) for name, h in BOOKED
    }
    assert draft.time_entries == 3 and draft.rejected_entries == 0

    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    total = net * Decimal("1.20")

    # Billing: finalized, the same total; the ERP: posted, the same total, billing's number.
    assert status.billing_invoice_id and status.invoice_number and status.erp_invoice_id
    billed = await downstream.stripe.get_invoice(status.billing_invoice_id)
    assert billed.status == BillingStatus.OPEN and billed.total.amount == total
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert posted.total.amount == total and posted.currency == "GBP"
    assert posted.number and posted.number.startswith("NW-UK")
    assert (
        await downstream.erp.invoice_reference(int(status.erp_invoice_id)) == status.invoice_number
    )
    # The PSA no longer offers the time for billing.
    assert await unbilled(downstream, deal.project_id) == 0
    # The CRM shows the invoice.
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp["Q2C_Invoice_Number__c"] == status.invoice_number
    assert Decimal(str(opp["Q2C_Invoice_Amount__c"])) == total
    assert opp["Q2C_Invoice_Status__c"] == "open"

    # The customer pays; Stripe's webhook arrives ten times.
    await downstream.stripe.pay_invoice(
        status.billing_invoice_id, idempotency_key=f"pay-{status.billing_invoice_id}"
    )
    delivery = await asyncio.to_thread(
        stripe_standin.wait_for_event, "invoice.paid", status.billing_invoice_id
    )
    async with running_service(e2e_settings) as service:
        answers = await asyncio.gather(
            *(
                service.post(
                    "/webhooks/stripe",
                    content=delivery.body,
                    headers={
                        "content-type": "application/json",
                        "stripe-signature": delivery.signature or "",
                    },
                )
                for _ in range(10)
            )
        )
    assert {a.status_code for a in answers} == {200}
    result = await handle.result()
    assert result.status == InvoiceStep.PAID and result.total == total
    final = await handle.query(STATUS, result_type=InvoiceStatus)
    assert len(final.payments) == 1  # ten deliveries, one payment
    paid = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert paid.status == BillingStatus.PAID
    assert (await crm.get("Opportunity", deal.opportunity_id))["Q2C_Invoice_Status__c"] == "paid"
    steps = [e.step for e in await e2e_store.audit_trail(workflow_id=handle.id)]
    for step in ("draft", "billing_invoice", "erp_posting", "mark_billed", "record_payment"):
        assert step in steps


async def test_rejected_draft_leaves_nothing_and_the_time_unbilled(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe_standin: StripeStandin,
) -> None:
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(
        DECIDE, decision(Decision.REJECT, "hours under review"), result_type=DecisionAck
    )
    result = await handle.result()

    assert result.status == InvoiceStep.REJECTED
    assert await billing_invoices(stripe_standin, deal.billing_customer_id) == []
    assert await downstream.erp.invoices_of_project(int(deal.project_id)) == []
    assert await unbilled(downstream, deal.project_id) == 3


async def test_adjusted_draft_bills_the_adjusted_total(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    write_off = InvoiceAdjustment(
        approver=APPROVER,
        reason="kick-off not billable",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.WRITE_OFF, description="Kick-off", amount=Decimal("315.00")
            )
        ],
    )
    ack = await handle.execute_update(ADJUST, write_off, result_type=DecisionAck)
    adjusted_total = (expected_net() - Decimal("315.00")) * Decimal("1.20")
    assert ack.total == adjusted_total
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)

    assert status.billing_invoice_id and status.erp_invoice_id
    billed = await downstream.stripe.get_invoice(status.billing_invoice_id)
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert billed.total.amount == posted.total.amount == adjusted_total
    assert any("Write-off: Kick-off" in line.description for line in billed.lines)
    await handle.terminate("test over")


async def test_permanent_erp_failure_voids_the_billing_invoice(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    from devstack.tryton import close_period, reopen_period

    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    today = datetime.now(UTC).date()
    await close_period(downstream.tryton, "NW-UK", today)  # the books of this month are closed
    try:
        await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    finally:
        await reopen_period(downstream.tryton, "NW-UK", today)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvoicingFailed"
    assert cause.message.startswith("erp_posting: ")
    status = await handle.query(STATUS, result_type=InvoiceStatus)
    assert status.billing_invoice_id is not None
    voided = await downstream.stripe.get_invoice(status.billing_invoice_id)
    assert voided.status == BillingStatus.VOID
    assert await unbilled(downstream, deal.project_id) == 3
    failures = [
        e for e in await e2e_store.exceptions(workflow_id=handle.id) if e.kind == "invoicing_failed"
    ]
    assert len(failures) == 1 and "void billing invoice" in failures[0].message


async def test_an_invoice_voided_in_billing_is_credited_in_the_erp_and_its_time_unbilled(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe_standin: StripeStandin,
) -> None:
    from workflows.time_to_invoice import PAYMENT, PaymentEvent

    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    assert status.billing_invoice_id and status.erp_invoice_id
    assert await unbilled(downstream, deal.project_id) == 0

    # Finance voids the invoice in Stripe; Stripe's event reaches the run.
    await downstream.stripe.void_invoice(
        status.billing_invoice_id, idempotency_key=f"void-{status.billing_invoice_id}"
    )
    delivery = await asyncio.to_thread(
        stripe_standin.wait_for_event, "invoice.voided", status.billing_invoice_id
    )
    await handle.signal(
        PAYMENT,
        PaymentEvent(
            event_id=delivery.event["id"],
            kind="voided",
            billing_invoice_id=status.billing_invoice_id,
            occurred_at=datetime.now(UTC),
        ),
    )
    result = await handle.result()

    assert result.status == InvoiceStep.VOIDED
    # The ERP: the invoice is cancelled by a posted credit note of the same total.
    erp_invoice = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert erp_invoice.status == BillingStatus.VOID
    [voided] = [
        e for e in await e2e_store.exceptions(workflow_id=handle.id) if e.kind == "invoice_voided"
    ]
    credit_note = int(voided.message.split("ERP credit note ")[1].split(",")[0])
    [credited] = await downstream.tryton.read(
        "account.invoice", [credit_note], ["state", "total_amount", "type"]
    )
    assert (credited["type"], credited["state"]) == ("out", "paid")  # reconciled against it
    assert Decimal(credited["total_amount"]) == -erp_invoice.total.amount
    # The time is unbilled again, and the CRM shows the invoice void.
    assert await unbilled(downstream, deal.project_id) == 3
    assert (await crm.get("Opportunity", deal.opportunity_id))["Q2C_Invoice_Status__c"] == "void"
