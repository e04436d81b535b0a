"""Change orders, end to end (issue 9): an amendment approved in the Salesforce stand-in
reaches Tryton's tasks and rates, the contract q2c bills from, the billing plan in Stripe and
the CRM, with the real worker code on the real Temporal dev server.

The deal is the demo's mixed deal (`tests.fixtures.deals.mixed_deal`): Development by the hour
at 165, Project Management at 145, a fixed fee and a milestone.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.change_orders import billing_plan_key
from activities.contracts import stored_contract
from canonical import BillingPeriod
from connectors.tryton import TrytonPsa
from devstack.salesforce_seed import (
    ChangeOrderLine,
    ChangeOrderSpec,
    SeededChangeOrder,
    close_won,
)
from settings import Settings
from store import Store
from tests.e2e.conftest import APPROVER, Downstream
from tests.e2e.test_contracts import (
    DEV_RATE,
    PM_RATE,
    Deal,
    book,
    invoice,
    lines,
    provision,
)
from tests.e2e.test_time_to_invoice import decision, wait_for_step
from tests.fixtures.deals import change_order, mixed_deal
from tests.fixtures.salesforce import SalesforceStandin
from tests.fixtures.service import running_service
from tests.fixtures.stripe import StripeStandin
from workflows.approvals import DECIDE, ApprovalAck, ApprovalDecision, Decision
from workflows.change_order import (
    STATUS,
    ChangeOrderResult,
    ChangeOrderStep,
    ChangeOrderView,
    ChangeOrderWorkflow,
)
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectWorkflow,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.starters import start_change_order_run
from workflows.time_to_invoice import DECIDE as INVOICE_DECIDE
from workflows.time_to_invoice import STATUS as INVOICE_STATUS
from workflows.time_to_invoice import (
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
)

pytestmark = pytest.mark.usefixtures("e2e_worker")

CoHandle = WorkflowHandle[ChangeOrderWorkflow, ChangeOrderResult]
InvoiceHandle = WorkflowHandle[TimeToInvoiceWorkflow, TimeToInvoiceResult]
STEP_WAIT_S = 120


def next_month(today: date) -> date:
    return BillingPeriod.of(BillingPeriod.of(today).end + timedelta(days=1)).start


async def start(
    temporal_env: WorkflowEnvironment, settings: Settings, seeded: SeededChangeOrder
) -> CoHandle:
    started = await start_change_order_run(
        temporal_env.client,
        settings.task_queue,
        seeded.change_order_id,
        crm="salesforce",
        trigger="e2e",
    )
    return temporal_env.client.get_workflow_handle(
        started.workflow_id, result_type=ChangeOrderResult
    )


async def approve(handle: CoHandle, reason: str) -> ApprovalAck:
    """Finance approves the preview the run holds, from the CLI's update."""
    ack: ApprovalAck = await handle.execute_update(
        DECIDE,
        ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason=reason),
        result_type=ApprovalAck,
    )
    return ack


async def issued_last_month(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
    *hours: tuple[date, str, str],
) -> tuple[Deal, InvoiceHandle, InvoiceStatus]:
    """A deal provisioned from the start of last month, `hours` (day, task, hours) booked,
    and last month invoiced and approved: its run waits for the payment."""
    last = BillingPeriod.of(datetime.now(UTC).date()).previous()
    deal = await provision(
        temporal_env, settings, salesforce_standin, downstream, mixed_deal(close_date=last.start)
    )
    for day, task, worked in hours:
        await book(downstream, deal, day, (task, worked))
    run, _ = await invoice(temporal_env, settings, deal.project_id, last.key)
    await run.execute_update(INVOICE_DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    issued = await wait_for_step(run, InvoiceStep.AWAITING_PAYMENT)
    assert issued.billing_invoice_id and issued.erp_invoice_id and issued.draft
    return deal, run, issued


async def wait_for(handle: CoHandle, step: ChangeOrderStep) -> ChangeOrderView:
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            view: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
            if view.step is step:
                return view
            assert view.step is not ChangeOrderStep.FAILED, view.last_error
            await asyncio.sleep(0.2)


async def crm_status(salesforce_standin: SalesforceStandin, change_order_id: str) -> dict[str, Any]:
    async with salesforce_standin.client() as sf:
        return await sf.get(
            "Change_Order__c", change_order_id, fields=["Status__c", "Q2C_Message__c"]
        )


def rate_increase(effective: date, **overrides: Any) -> ChangeOrderSpec:
    """Development from 165 to 180 from `effective`; nothing else."""
    terms: dict[str, Any] = {
        "name": "CO rate increase",
        "effective_date": effective,
        "amount_delta": Decimal(0),
        "lines": [ChangeOrderLine(action="Change", line=0, rate=Decimal("180"))],
        "milestones": [],
        "budget_delta": None,
        "approve": True,
    }
    return replace(change_order(), **{**terms, **overrides})


async def test_a_rate_increase_next_month_applies_at_once_and_bills_from_its_date(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    deal = await provision(temporal_env, e2e_settings, salesforce_standin, downstream)
    seeded_deal = deal.seeded
    today = datetime.now(UTC).date()
    effective = next_month(today)
    seeded = await salesforce_standin.seed_change_order(seeded_deal, rate_increase(effective))

    handle = await start(temporal_env, e2e_settings, seeded)
    result = await handle.result()

    # No approval needed: applied as version 2, effective next month.
    assert result.status is ChangeOrderStep.APPLIED and result.contract_version == 2
    view: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
    assert view.risks == [] and view.decisions == []
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None and [v.version for v in contract.versions] == [1, 2]
    v2 = contract.current
    assert v2.effective_from == effective
    assert v2.source == f"change-order:salesforce:{seeded.change_order_id}"
    dev = next(ln for ln in v2.lines if ln.task == "Development")
    assert dev.rate is not None and dev.rate.amount == Decimal("180")
    # Tryton's task rate, and the billing plan on the Stripe customer.
    project = await TrytonPsa(downstream.tryton).get_project(int(deal.project_id))
    rates = {t.name: t.rate.amount for t in project.tasks}
    assert rates["Development"] == Decimal("180") and rates["Project Management"] == PM_RATE
    plan = await downstream.stripe.get_customer_metadata(
        deal.billing_customer_id, billing_plan_key(deal.project_id)
    )
    assert plan.startswith(f"v2 from {effective.isoformat()}") and "Development 180" in plan
    # The CRM shows it applied.
    record = await crm_status(salesforce_standin, seeded.change_order_id)
    assert record["Status__c"] == "Applied", record
    assert "contract version 2" in (record["Q2C_Message__c"] or "")

    # This month's hours bill at the old rate, next month's at the new one.
    await book(downstream, deal, today, ("Development", "10"))
    await book(downstream, deal, effective, ("Development", "10"))
    _, this = await invoice(
        temporal_env, e2e_settings, deal.project_id, BillingPeriod.of(today).key
    )
    assert sorted(lines(this).values()) == [10 * DEV_RATE], lines(this)
    _, following = await invoice(
        temporal_env, e2e_settings, deal.project_id, BillingPeriod.of(effective).key
    )
    assert 10 * Decimal("180") in lines(following).values(), lines(following)

    # A rerun finds it applied and changes nothing.
    again = await start(temporal_env, e2e_settings, seeded)
    rerun = await again.result()
    assert rerun.status is ChangeOrderStep.APPLIED and rerun.contract_version == 2
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None and len(contract.versions) == 2


async def test_a_budget_increase_waits_for_finance_and_the_approved_preview_is_applied(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    deal = await provision(temporal_env, e2e_settings, salesforce_standin, downstream)
    seeded_deal = deal.seeded
    effective = next_month(datetime.now(UTC).date())
    spec = rate_increase(effective, budget_delta=Decimal("25000"), amount_delta=Decimal("25000"))
    spec = replace(spec, name="CO budget increase", lines=[])
    seeded = await salesforce_standin.seed_change_order(seeded_deal, spec)

    handle = await start(temporal_env, e2e_settings, seeded)
    held = await wait_for(handle, ChangeOrderStep.AWAITING_APPROVAL)
    assert held.preview is not None and held.pending_approval is not None
    assert any(r.startswith("budget:") for r in held.risks), held.risks
    first_digest = held.preview.digest
    budget_before = held.preview.budget_before.amount
    assert held.preview.budget_after.amount == budget_before + Decimal("25000")
    assert any("PSA budget" in line for line in held.preview.render())

    # The change order is edited in the CRM while finance looks: the approval of the old
    # preview is not applied; the new preview is held for approval again.
    edited = replace(spec, budget_delta=Decimal("30000"), amount_delta=Decimal("30000"))
    await salesforce_standin.seed_change_order(seeded_deal, edited)
    ack = await approve(handle, "within plan")
    assert ack.what == "approve"
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            again: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
            if again.superseded:
                break
            await asyncio.sleep(0.2)
    assert again.step is ChangeOrderStep.AWAITING_APPROVAL and again.superseded == [first_digest]
    assert again.preview is not None and again.preview.digest != first_digest
    assert again.preview.budget_after.amount == budget_before + Decimal("30000")
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None and len(contract.versions) == 1  # nothing applied yet

    await approve(handle, "revised, ok")
    result = await handle.result()
    assert result.status is ChangeOrderStep.APPLIED and result.digest == again.preview.digest
    final: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
    # Each approval records the preview it approved: the first one's was superseded.
    assert [(d.what, d.ref) for d in final.decisions] == [
        ("approve", first_digest),
        ("approve", again.preview.digest),
    ]
    assert final.approved_digest == again.preview.digest
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None
    assert contract.current.model_dump() == again.preview.after.model_dump()
    project = await TrytonPsa(downstream.tryton).get_project(int(deal.project_id))
    assert project.budget is not None
    assert project.budget.amount == budget_before + Decimal("30000")


async def test_a_billing_failure_after_the_psa_changed_restores_the_psa_and_the_contract(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    stripe_standin: StripeStandin,
    downstream: Downstream,
) -> None:
    deal = await provision(temporal_env, e2e_settings, salesforce_standin, downstream)
    seeded_deal = deal.seeded
    effective = next_month(datetime.now(UTC).date())
    seeded = await salesforce_standin.seed_change_order(seeded_deal, rate_increase(effective))
    # Stripe refuses the billing plan for good (a 400 is not retried).
    stripe_standin.inject_fault(kind="400", path="/v1/customers/", method="POST", count=0)
    try:
        handle = await start(temporal_env, e2e_settings, seeded)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    finally:
        stripe_standin.clear_faults()

    view: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
    assert view.step is ChangeOrderStep.FAILED
    assert view.last_error and view.last_error.startswith("update_billing_plan")
    project = await TrytonPsa(downstream.tryton).get_project(int(deal.project_id))
    assert {t.name: t.rate.amount for t in project.tasks}["Development"] == DEV_RATE
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None and [v.version for v in contract.versions] == [1]
    record = await crm_status(salesforce_standin, seeded.change_order_id)
    assert record["Status__c"] == "Failed", record
    assert "update_billing_plan" in (record["Q2C_Message__c"] or "")
    assert "Undone" in (record["Q2C_Message__c"] or "")


async def test_change_orders_apply_in_crm_approval_order_and_wait_for_provisioning(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    # A deal closed won, not provisioned yet.
    seeded_deal = await salesforce_standin.seed(mixed_deal())
    async with salesforce_standin.client() as sf:
        await close_won(sf, seeded_deal.opportunity_id)
    effective = next_month(datetime.now(UTC).date())
    now = datetime.now(UTC)
    first = await salesforce_standin.seed_change_order(
        seeded_deal,
        replace(
            rate_increase(effective),
            name="CO first",
            approved_at=now - timedelta(minutes=2),
        ),
    )
    second = await salesforce_standin.seed_change_order(
        seeded_deal,
        replace(
            rate_increase(effective),
            name="CO second",
            lines=[ChangeOrderLine(action="Change", line=0, rate=Decimal("190"))],
            approved_at=now - timedelta(minutes=1),
        ),
    )
    # Delivered in reverse order, before the deal is provisioned.
    later = await start(temporal_env, e2e_settings, second)
    earlier = await start(temporal_env, e2e_settings, first)
    waiting = await wait_for(earlier, ChangeOrderStep.AWAITING_PROJECT)
    assert waiting.project_id is None

    await temporal_env.client.execute_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=seeded_deal.opportunity_id, trigger="e2e"),
        id=deal_workflow_id("salesforce", seeded_deal.opportunity_id),
        task_queue=e2e_settings.task_queue,
    )
    applied_first = await earlier.result()
    applied_second = await later.result()
    assert (applied_first.contract_version, applied_second.contract_version) == (2, 3)
    project_id = (await earlier.query(STATUS, result_type=ChangeOrderView)).project_id
    assert project_id is not None
    contract = await stored_contract(e2e_store, project_id)
    assert contract is not None
    assert [v.source for v in contract.versions[1:]] == [
        f"change-order:salesforce:{first.change_order_id}",
        f"change-order:salesforce:{second.change_order_id}",
    ]
    dev = next(ln for ln in contract.current.lines if ln.task == "Development")
    assert dev.rate is not None and dev.rate.amount == Decimal("190")


async def test_a_retroactive_rate_change_credits_and_rebills_the_invoiced_period(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    stripe_standin: StripeStandin,
    downstream: Downstream,
) -> None:
    last = BillingPeriod.of(datetime.now(UTC).date()).previous()
    deal, run, issued = await issued_last_month(
        temporal_env,
        e2e_settings,
        salesforce_standin,
        downstream,
        (last.start, "Development", "10"),
    )
    assert issued.draft and issued.billing_invoice_id and issued.erp_invoice_id
    assert [ln.net for ln in issued.draft.lines] == [10 * DEV_RATE]
    stripe_before = await downstream.stripe.get_invoice(issued.billing_invoice_id)
    erp_before = await downstream.erp.get_invoice(int(issued.erp_invoice_id))

    # Development was sold at 180 from the start: the change reaches back.
    seeded = await salesforce_standin.seed_change_order(
        deal.seeded, rate_increase(last.start, retroactive=True, name="CO retro rate")
    )
    handle = await start(temporal_env, e2e_settings, seeded)
    held = await wait_for(handle, ChangeOrderStep.AWAITING_APPROVAL)
    assert any(r.startswith("retroactive:") for r in held.risks), held.risks
    assert held.preview is not None
    [correction] = held.preview.corrections
    assert correction.credit_net.amount == 10 * DEV_RATE
    assert correction.rebill_net.amount == 10 * Decimal("180")
    assert correction.net_after.amount == 10 * Decimal("180")
    await approve(handle, "signed")
    result = await handle.result()
    assert result.status is ChangeOrderStep.APPLIED and result.digest == held.preview.digest

    # Stripe: the invoice untouched, a credit note on it and a re-bill at the new rate.
    row = await e2e_store.draft(issued.draft.draft_id)
    assert row is not None and row.rated["corrected"]["change_order"].endswith(
        seeded.change_order_id
    )
    fixed = row.rated["corrected"]
    stripe_after = await downstream.stripe.get_invoice(issued.billing_invoice_id)
    assert stripe_after.total == stripe_before.total and stripe_after.lines == stripe_before.lines
    [note] = await downstream.stripe.list_credit_notes(issued.billing_invoice_id)
    rebill = await downstream.stripe.get_invoice(fixed["billing"]["rebill_invoice_id"])
    assert note.subtotal.amount == 10 * DEV_RATE
    assert rebill.subtotal.amount == 10 * Decimal("180")
    net = stripe_before.subtotal.amount - note.subtotal.amount + rebill.subtotal.amount
    assert net == 10 * Decimal("180")

    # Tryton: the posted invoice untouched, a posted credit note and a posted re-bill.
    erp_after = await downstream.erp.get_invoice(int(issued.erp_invoice_id))
    assert erp_after == erp_before
    credit = await downstream.erp.get_invoice_info(int(fixed["erp"]["credit_note_id"]))
    rebilled = await downstream.erp.get_invoice_info(int(fixed["erp"]["rebill_id"]))
    assert (credit.state, rebilled.state) == ("posted", "posted")
    assert credit.untaxed.amount == -10 * DEV_RATE
    assert credit.total.amount == -erp_before.total.amount
    assert rebilled.untaxed.amount == 10 * Decimal("180")
    assert rebilled.total == rebill.total

    # The period's run now follows the re-bill: the credited invoice's events change
    # nothing, the re-bill's payment ends the run paid, in Stripe and in Tryton.
    following: InvoiceStatus = await run.query(INVOICE_STATUS, result_type=InvoiceStatus)
    [fix] = following.corrections
    rebill_id = fixed["billing"]["rebill_invoice_id"]
    assert fix.followed and following.billing_invoice_id == rebill_id
    assert following.invoice_number == rebill.number == fixed["billing"]["rebill_number"]
    await downstream.stripe.pay_invoice(rebill_id, idempotency_key=f"pay-{rebill_id}")
    deliveries = [
        await asyncio.to_thread(stripe_standin.wait_for_event, "invoice.paid", invoice_id)
        for invoice_id in (issued.billing_invoice_id, rebill_id)
    ]
    async with running_service(e2e_settings) as service:
        for delivery in deliveries:
            answer = await service.post(
                "/webhooks/stripe",
                content=delivery.body,
                headers={
                    "content-type": "application/json",
                    "stripe-signature": delivery.signature or "",
                },
            )
            assert answer.status_code == 200, answer.text
    paid = await run.result()
    assert paid.status is InvoiceStep.PAID and paid.total == rebill.total.amount
    settled = await downstream.erp.get_invoice_info(int(fixed["erp"]["rebill_id"]))
    assert settled.state == "paid"

    # What the period bills now counts for later periods: nothing of it is billed again.
    _, again = await invoice(temporal_env, e2e_settings, deal.project_id, last.key)
    assert again.step is InvoiceStep.NOTHING_TO_INVOICE, lines(again)


async def test_a_draft_awaiting_approval_is_rerated_with_the_new_terms(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    this = BillingPeriod.of(datetime.now(UTC).date())
    deal = await provision(
        temporal_env,
        e2e_settings,
        salesforce_standin,
        downstream,
        mixed_deal(close_date=this.previous().start),
    )
    await book(downstream, deal, this.start, ("Development", "10"))
    run, drafted = await invoice(temporal_env, e2e_settings, deal.project_id, this.key)
    assert list(lines(drafted).values()) == [10 * DEV_RATE]

    seeded = await salesforce_standin.seed_change_order(
        deal.seeded, rate_increase(this.start, name="CO rate from this month")
    )
    handle = await start(temporal_env, e2e_settings, seeded)
    applied = await handle.result()
    assert applied.status is ChangeOrderStep.APPLIED
    view: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
    assert view.preview is not None
    [rerate] = view.preview.drafts
    assert rerate.subtotal_after.amount == 10 * Decimal("180")

    # The run awaiting finance re-rated its draft; finance sees what changed.
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            status: InvoiceStatus = await run.query(INVOICE_STATUS, result_type=InvoiceStatus)
            if status.rerates:
                break
            await asyncio.sleep(0.2)
    [taken] = status.rerates
    assert taken.rerated and taken.version == 2
    assert status.step is InvoiceStep.AWAITING_APPROVAL
    assert list(lines(status).values()) == [10 * Decimal("180")]
    await run.terminate("re-rated: billing is not this test's subject")


async def test_a_retroactive_change_from_mid_period_rebills_each_side_of_its_date(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    last = BillingPeriod.of(datetime.now(UTC).date()).previous()
    mid = last.start + timedelta(days=14)
    deal, run, issued = await issued_last_month(
        temporal_env,
        e2e_settings,
        salesforce_standin,
        downstream,
        (last.start, "Development", "4"),
        (last.start, "Project Management", "2"),
        (mid, "Development", "6"),
    )
    assert issued.draft and issued.billing_invoice_id and issued.erp_invoice_id
    assert sorted(ln.net for ln in issued.draft.lines) == [2 * PM_RATE, 10 * DEV_RATE]

    seeded = await salesforce_standin.seed_change_order(
        deal.seeded, rate_increase(mid, retroactive=True, name="CO retro from the 15th")
    )
    handle = await start(temporal_env, e2e_settings, seeded)
    held = await wait_for(handle, ChangeOrderStep.AWAITING_APPROVAL)
    await approve(handle, "signed")
    assert (await handle.result()).status is ChangeOrderStep.APPLIED
    assert held.preview is not None
    [correction] = held.preview.corrections
    # Cancel and replace: the invoice is credited whole; Development is re-billed as 4 h at
    # the old rate and 6 h at the new one, Project Management as it was.
    before = 10 * DEV_RATE + 2 * PM_RATE
    after = 4 * DEV_RATE + 6 * Decimal("180") + 2 * PM_RATE
    assert sorted(ln.net.amount for ln in correction.rebill_lines) == [
        2 * PM_RATE,
        4 * DEV_RATE,
        6 * 180,
    ]

    row = await e2e_store.draft(issued.draft.draft_id)
    assert row is not None
    fixed = row.rated["corrected"]
    [note] = await downstream.stripe.list_credit_notes(issued.billing_invoice_id)
    rebill = await downstream.stripe.get_invoice(fixed["billing"]["rebill_invoice_id"])
    assert (note.subtotal.amount, rebill.subtotal.amount) == (before, after)
    credit = await downstream.erp.get_invoice_info(int(fixed["erp"]["credit_note_id"]))
    rebilled = await downstream.erp.get_invoice_info(int(fixed["erp"]["rebill_id"]))
    assert (credit.untaxed.amount, rebilled.untaxed.amount) == (-before, after)
    assert rebilled.total == rebill.total
    # The original is settled by the credit note: only the re-bill is left to pay.
    original = await downstream.stripe.get_invoice(issued.billing_invoice_id)
    assert original.status.value == "paid"
    assert (await run.query(INVOICE_STATUS, result_type=InvoiceStatus)).billing_invoice_id == (
        fixed["billing"]["rebill_invoice_id"]
    )
    await run.terminate("corrected: payment is not this test's subject")
