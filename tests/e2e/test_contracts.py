"""Contracts as sold, end to end (issue 8): a mixed deal closed in the Salesforce stand-in is
provisioned by q2c, its contract kept, and every line billed the way it was sold, in Stripe
and in Tryton, with the real worker code on the real Temporal dev server.

The deal (`tests.fixtures.deals.mixed_deal`, the demo's Soylent deal): Development by the
hour under a cap, Project Management by the hour, an Implementation Package sold as a fixed
fee with 20 % up front and the rest on completion, and Go-live Support billed by a
milestone; travel and lodging pass through at 10 % markup. Its value is mostly fixed price
(38,000 against 30,750 by the hour), and its hours are billed all the same.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.contracts import stored_contract
from canonical import BillingPeriod, BillingType, Expense, Money, RatedPeriod, TimeEntry
from connectors.tryton import TrytonPsa
from connectors.tryton.wire import ProjectInfo
from devstack.salesforce_seed import DealSpec, SeededDeal, close_won
from settings import Settings
from store import Store
from tests.e2e.conftest import Downstream
from tests.e2e.test_time_to_invoice import STEP_WAIT_S, decision, wait_for_step
from tests.fixtures.deals import mixed_deal
from tests.fixtures.salesforce import SalesforceStandin
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.time_to_invoice import (
    DECIDE,
    STATUS,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    TimeToInvoiceInput,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
    upfront_workflow_id,
    workflow_id,
)

pytestmark = pytest.mark.usefixtures("e2e_worker")

Handle = WorkflowHandle[TimeToInvoiceWorkflow, TimeToInvoiceResult]
USD = "USD"
#: The deal's prices (tests.fixtures.deals.mixed_deal).
DEV_RATE, PM_RATE = Decimal(165), Decimal(145)
DEV_CAP = Decimal("26400.00")
FEE, MILESTONE = Decimal("30000.00"), Decimal("8000.00")


@dataclass
class Deal:
    opportunity_id: str
    project_id: str
    project: ProjectInfo
    employee: str
    seeded: SeededDeal
    billing_customer_id: str

    def task(self, name: str) -> str:
        return str(next(t.id for t in self.project.tasks if t.name == name))


async def provision(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
    spec: DealSpec | None = None,
) -> Deal:
    """The deal (`mixed_deal` unless `spec` says otherwise) closed won and provisioned."""
    seeded = await salesforce_standin.seed(spec or mixed_deal())
    async with salesforce_standin.client() as sf:
        await close_won(sf, seeded.opportunity_id)
    result: OpportunityToProjectResult = await temporal_env.client.execute_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=seeded.opportunity_id, trigger="e2e"),
        id=deal_workflow_id("salesforce", seeded.opportunity_id),
        task_queue=settings.task_queue,
    )
    project_id = result.ids["psa_project"]
    psa = TrytonPsa(downstream.tryton)
    project = await psa.get_project(int(project_id))
    [employee, *_] = await psa.list_employees(project.legal_entity_code)
    return Deal(
        seeded.opportunity_id,
        project_id,
        project,
        employee.name,
        seeded,
        result.ids["billing_customer"],
    )


async def book(downstream: Downstream, deal: Deal, day: date, *hours: tuple[str, str]) -> None:
    key = f"contract-{uuid.uuid4().hex[:8]}"
    entries = [
        TimeEntry(
            id=f"{key}-{n}",
            project_id=deal.project_id,
            task_id=deal.task(task),
            employee=deal.employee,
            role=next(t.role for t in deal.project.tasks if t.name == task) or task,
            work_date=day,
            hours=Decimal(h),
            approved=True,
        )
        for n, (task, h) in enumerate(hours)
    ]
    await TrytonPsa(downstream.tryton).create_timesheet_lines(entries, idempotency_key=key)


async def spend(downstream: Downstream, deal: Deal, day: date, category: str, amount: str) -> None:
    key = f"expense-{uuid.uuid4().hex[:8]}"
    expense = Expense(
        id=key,
        project_id=deal.project_id,
        employee=deal.employee,
        incurred_on=day,
        category=category,
        amount=Money.of(amount, USD),
        approved=True,
    )
    await TrytonPsa(downstream.tryton).book_expense(expense, idempotency_key=key)


async def invoice(
    temporal_env: WorkflowEnvironment, settings: Settings, project_id: str, period: str
) -> tuple[Handle, InvoiceStatus]:
    """Run the period; return the run and its draft as finance sees it."""
    handle: Handle = await temporal_env.client.start_workflow(
        TimeToInvoiceWorkflow.run,
        TimeToInvoiceInput(project_id=project_id, period=period, trigger="e2e"),
        id=workflow_id(project_id, period),
        task_queue=settings.task_queue,
    )
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            status: InvoiceStatus = await handle.query(STATUS, result_type=InvoiceStatus)
            if status.step in (InvoiceStep.AWAITING_APPROVAL, InvoiceStep.NOTHING_TO_INVOICE):
                return handle, status
            assert status.step is not InvoiceStep.FAILED, status.last_error
            await asyncio.sleep(0.2)


async def issue(handle: Handle, downstream: Downstream) -> InvoiceStatus:
    """Finance approves; the invoice is finalized in Stripe and posted in Tryton with the
    same total, which is returned as issued."""
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    assert status.billing_invoice_id and status.erp_invoice_id and status.draft
    billed = await downstream.stripe.get_invoice(status.billing_invoice_id)
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert billed.total.amount == posted.total.amount == status.draft.total
    await handle.terminate("issued: payment is not this test's subject")
    return status


def lines(status: InvoiceStatus) -> dict[str, Decimal]:
    assert status.draft is not None
    return {line.description: line.net for line in status.draft.lines}


async def test_a_mixed_deal_bills_every_line_as_sold_once(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    salesforce_standin: SalesforceStandin,
    downstream: Downstream,
) -> None:
    deal = await provision(temporal_env, e2e_settings, salesforce_standin, downstream)

    # The contract as provisioned: kept in q2c's store with the PSA's task ids; the tasks
    # carry their billing type in Tryton, and the project the contract value.
    contract = await stored_contract(e2e_store, deal.project_id)
    assert contract is not None and contract.current.version == 1
    kinds = {ln.task: (ln.billing_type, ln.task_id) for ln in contract.current.lines}
    assert kinds["Implementation Package"] == (
        BillingType.FIXED_FEE,
        deal.task("Implementation Package"),
    )
    assert {t.name: t.billing_type for t in deal.project.tasks}["Go-live Support"] == (
        BillingType.MILESTONE
    )
    assert deal.project.contract_value == contract.current.value

    # 1. At provisioning: the mobilization invoice, 20 % of the fee, and nothing else.
    upfront: Handle = temporal_env.client.get_workflow_handle(
        upfront_workflow_id(deal.project_id), result_type=TimeToInvoiceResult
    )
    drafted = await wait_for_step(upfront, InvoiceStep.AWAITING_APPROVAL)
    assert list(lines(drafted).values()) == [FEE * Decimal("0.2")]
    await issue(upfront, downstream)
    # Its revenue is deferred over the delivery period, and recognized month by month.
    revenue = await downstream.erp.revenue_by_project(int(deal.project_id))
    assert revenue.recognized.amount + revenue.deferred.amount == FEE * Decimal("0.2")
    assert 0 < revenue.recognized.amount < revenue.deferred.amount

    # 2. Last month: hours on every task, a billable and a non-billable expense.
    today = datetime.now(UTC).date()
    last = BillingPeriod.of(today).previous()
    await book(
        downstream,
        deal,
        last.start,
        ("Development", "10"),
        ("Project Management", "2"),
        ("Implementation Package", "4"),
        ("Go-live Support", "3"),
    )
    await spend(downstream, deal, last.start, "Travel", "400.00")
    await spend(downstream, deal, last.start, "Entertainment", "90.00")
    first_run, first = await invoice(temporal_env, e2e_settings, deal.project_id, last.key)
    billed = lines(first)
    # Hours at their rates, the travel with its markup; the fee's and the milestone's hours
    # are never billed, and the fee waits for its task to be done.
    assert sorted(billed.values()) == sorted([10 * DEV_RATE, 2 * PM_RATE, Decimal("440.00")]), (
        billed
    )
    assert first.draft is not None and first.draft.time_entries == 4
    await issue(first_run, downstream)

    # 3. This month: the fee's task and the milestone's task are done in Tryton, and
    # Development runs past its cap.
    psa = TrytonPsa(downstream.tryton)
    await psa.set_task_done(int(deal.task("Implementation Package")))
    await psa.set_task_done(int(deal.task("Go-live Support")))
    this = BillingPeriod.of(today)
    await book(downstream, deal, today, *[("Development", "24")] * 7)  # 168 h
    second_run, second = await invoice(temporal_env, e2e_settings, deal.project_id, this.key)
    assert second.draft is not None
    billed = lines(second)
    room = DEV_CAP - 10 * DEV_RATE
    overage = 168 * DEV_RATE - room
    # The fee's remainder and the milestone, once; Development up to the cap, the overage
    # held for finance and shown in the draft.
    assert FEE * Decimal("0.8") in billed.values() and MILESTONE in billed.values(), billed
    assert second.draft.overage == overage
    assert second.draft.subtotal == room + FEE * Decimal("0.8") + MILESTONE
    issued = await issue(second_run, downstream)

    # Every line traced to the contract version and what produced it.
    assert issued.draft is not None
    assert all(ln.contract_version == 1 for ln in issued.draft.lines)
    row = await e2e_store.draft(issued.draft.draft_id)
    assert row is not None
    rated = RatedPeriod.model_validate(row.rated["period"])
    fee_line = next(ln.id for ln in contract.current.lines if ln.task == "Implementation Package")
    [milestone] = contract.current.milestones
    assert {i.key for i in rated.billed_items} == {
        f"completion:{fee_line}",
        f"milestone:{milestone.id}",
    }

    # 4. A rerun of this month, and next month: nothing of the above is billed again.
    rerun, again = await invoice(temporal_env, e2e_settings, deal.project_id, this.key)
    assert again.step is InvoiceStep.NOTHING_TO_INVOICE, lines(again)
    await rerun.result()
    following = BillingPeriod.of(this.end + timedelta(days=1)).key
    later, nothing = await invoice(temporal_env, e2e_settings, deal.project_id, following)
    assert nothing.step is InvoiceStep.NOTHING_TO_INVOICE, lines(nothing)
    await later.result()
    # And the revenue: the fee's remainder deferred too, recognized up to this month.
    revenue = await downstream.erp.revenue_by_project(int(deal.project_id))
    assert revenue.deferred.amount > 0
