"""Trust in invoicing under faults (issue 7), end to end: the real worker code on the real
Temporal dev server, real Tryton and the Salesforce and Stripe stand-ins.

Each test states its fault and what must hold despite it. Payment events are signalled to
the run as the Stripe webhook delivers them (the webhook itself is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from canonical import AdjustmentKind, AdjustmentLine, InvoiceAdjustment, TimeEntry
from canonical import InvoiceStatus as BillingStatus
from connectors.salesforce import SalesforceClient
from connectors.salesforce.client import DEFAULT_API_VERSION
from connectors.tryton import TrytonPsa
from settings import Settings
from store import Store
from tests.e2e.conftest import APPROVER, Downstream
from tests.e2e.test_time_to_invoice import (
    RATES,
    Handle,
    Provisioned,
    billing_invoices,
    decision,
    expected_net,
    provision_and_book,
    start_run,
    unbilled,
    wait_for_step,
)
from tests.fixtures.salesforce import SalesforceStandin
from tests.fixtures.stripe import StripeStandin
from workflows.time_to_invoice import (
    ADJUST,
    DECIDE,
    PAYMENT,
    STATUS,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    PaymentEvent,
)

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("e2e_worker")]

VAT = Decimal("1.20")


async def approve_and_issue(handle: Handle) -> InvoiceStatus:
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    return await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)


async def pay(
    handle: Handle, downstream: Downstream, stripe: StripeStandin, status: InvoiceStatus
) -> None:
    """The customer pays in Stripe; Stripe's `invoice.paid` event reaches the run."""
    assert status.billing_invoice_id is not None
    billing_id = status.billing_invoice_id
    paid = await downstream.stripe.pay_invoice(billing_id, idempotency_key=f"pay-{billing_id}")
    delivery = await asyncio.to_thread(stripe.wait_for_event, "invoice.paid", billing_id)
    await handle.signal(
        PAYMENT,
        PaymentEvent(
            event_id=delivery.event["id"],
            kind="paid",
            billing_invoice_id=billing_id,
            amount=paid.total.amount,
            occurred_at=datetime.now(UTC),
        ),
    )


async def book_more(downstream: Downstream, deal: Provisioned, hours: str) -> None:
    """More Development time on the project, booked after the first invoice."""
    psa = TrytonPsa(downstream.tryton)
    project = await psa.get_project(int(deal.project_id))
    task = next(t for t in project.tasks if t.name == "Development")
    [employee, *_] = await psa.list_employees("NW-UK")
    key = f"more-{uuid.uuid4().hex[:8]}"
    entry = TimeEntry(
        id=f"{key}-0",
        project_id=deal.project_id,
        task_id=str(task.id),
        employee=employee.name,
        role=task.role or task.name,
        work_date=datetime.now(UTC).date(),
        hours=Decimal(hours),
        approved=True,
    )
    await psa.create_timesheet_lines([entry], idempotency_key=key)


async def test_a_paid_period_run_again_bills_only_new_time_on_a_supplementary_invoice(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe: StripeStandin,
) -> None:
    """Fault: a paid period is run again (same workflow id, within Stripe's 24-hour key
    window) after more time was booked. Holds: only the new time is billed, on an invoice
    that says it is supplementary, and the first invoice is untouched in Stripe and Tryton."""
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    first = await start_run(temporal_env, e2e_settings, deal.project_id)
    first_status = await approve_and_issue(first)
    await pay(first, downstream, stripe, first_status)
    assert (await first.result()).status == InvoiceStep.PAID
    assert first_status.billing_invoice_id and first_status.erp_invoice_id

    await book_more(downstream, deal, "3")
    second = await start_run(temporal_env, e2e_settings, deal.project_id)
    assert second.id == first.id
    draft = (await wait_for_step(second, InvoiceStep.AWAITING_APPROVAL)).draft
    assert draft is not None and draft.supplementary_to == [first_status.invoice_number]
    assert draft.time_entries == 1 and draft.subtotal == 3 * RATES["Development"]
    status = await approve_and_issue(second)
    await second.terminate("test over")

    # The supplementary invoice: the new time only, in both systems, and says what it is.
    new_total = 3 * RATES["Development"] * VAT
    assert status.billing_invoice_id and status.erp_invoice_id
    assert status.billing_invoice_id != first_status.billing_invoice_id
    assert status.erp_invoice_id != first_status.erp_invoice_id
    billed = await downstream.stripe.get_invoice(status.billing_invoice_id)
    assert billed.status == BillingStatus.OPEN and billed.total.amount == new_total
    assert billed.memo and billed.memo.startswith("Supplementary invoice")
    assert str(first_status.invoice_number) in billed.memo
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert posted.total.amount == new_total and posted.status == BillingStatus.OPEN
    assert posted.memo == billed.memo
    # The first invoice: untouched, still paid, same total, everywhere.
    first_total = expected_net() * VAT
    before = await downstream.stripe.get_invoice(first_status.billing_invoice_id)
    assert before.status == BillingStatus.PAID and before.total.amount == first_total
    first_erp = await downstream.erp.get_invoice(int(first_status.erp_invoice_id))
    assert first_erp.status == BillingStatus.PAID and first_erp.total.amount == first_total
    assert len(await billing_invoices(stripe, deal.billing_customer_id)) == 2
    assert await unbilled(downstream, deal.project_id) == 0


async def test_an_adjustment_delivered_twice_applies_once(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    crm: SalesforceClient,
    downstream: Downstream,
) -> None:
    """Fault: finance's adjustment arrives three times: by signal, and twice by update (a CLI
    retry). Holds: it is applied once: Stripe and Tryton both bill the draft less it once."""
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    write_off = InvoiceAdjustment(
        adjustment_id=f"adj-{uuid.uuid4().hex[:12]}",
        approver=APPROVER,
        reason="kick-off not billable",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.WRITE_OFF, description="Kick-off", amount=Decimal("315.00")
            )
        ],
    )
    await handle.signal(ADJUST, write_off)
    ack = await handle.execute_update(ADJUST, write_off, result_type=DecisionAck)
    adjusted_total = (expected_net() - Decimal("315.00")) * VAT
    again = await handle.execute_update(ADJUST, write_off, result_type=DecisionAck)
    # Signal and update raced: one applied it; every later delivery is a repeat.
    assert again.duplicate and ack.total == again.total == adjusted_total
    status = await approve_and_issue(handle)
    await handle.terminate("test over")

    assert status.draft is not None and len(status.draft.adjustments) == 1
    assert status.billing_invoice_id and status.erp_invoice_id
    billed = await downstream.stripe.get_invoice(status.billing_invoice_id)
    posted = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert billed.total.amount == posted.total.amount == adjusted_total
    assert sum("Write-off: Kick-off" in line.description for line in billed.lines) == 1


async def test_a_billing_total_that_disagrees_after_finalize_voids_the_invoice(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe: StripeStandin,
) -> None:
    """Fault: Stripe adds 1.00 to the invoice as it finalizes it (a fee q2c did not draft).
    Holds: the finalized billing invoice is voided, the ERP never holds it, the time stays
    unbilled, and an exception names the disagreement."""
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    stripe.api(
        "post",
        f"/v1/customers/{deal.billing_customer_id}",
        data={"metadata[standin_finalize_surcharge]": "100"},
    ).raise_for_status()
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(DECIDE, decision(Decision.APPROVE), result_type=DecisionAck)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvoicingFailed"
    assert cause.message.startswith("billing_invoice: ")
    status = await handle.query(STATUS, result_type=InvoiceStatus)
    assert status.billing_invoice_id is not None
    voided = await downstream.stripe.get_invoice(status.billing_invoice_id)
    assert voided.status == BillingStatus.VOID
    assert voided.total.amount == expected_net() * VAT + Decimal("1.00")
    assert await downstream.erp.invoices_of_project(int(deal.project_id)) == []
    assert await unbilled(downstream, deal.project_id) == 3
    [exception] = [
        e for e in await e2e_store.exceptions(workflow_id=handle.id) if e.kind == "invoicing_failed"
    ]
    assert "Undone: void billing invoice" in exception.message
    billed_total = (expected_net() * VAT + Decimal("1.00")).quantize(Decimal("0.01"))
    drafted_total = (expected_net() * VAT).quantize(Decimal("0.01"))
    assert f"totals {billed_total} GBP, the approved draft {drafted_total} GBP" in (
        exception.message
    )


async def test_a_permanent_crm_failure_after_issue_still_lets_the_payment_close_the_run(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    e2e_store: Store,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe: StripeStandin,
    salesforce: SalesforceStandin,
) -> None:
    """Fault: Salesforce refuses (400) every write to the deal once the invoice is issued.
    Holds: the run follows the payment anyway; the payment is recorded in Tryton (paid), and
    an exception records each CRM update that failed."""
    deal = await provision_and_book(temporal_env, e2e_settings, crm, downstream)
    handle = await start_run(temporal_env, e2e_settings, deal.project_id)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    salesforce.inject_fault(
        kind="400",
        path=f"/services/data/{DEFAULT_API_VERSION}/sobjects/Opportunity/{deal.opportunity_id}",
        method="PATCH",
        count=0,
    )
    status = await approve_and_issue(handle)
    await pay(handle, downstream, stripe, status)
    result = await handle.result()

    assert result.status == InvoiceStep.PAID
    assert status.erp_invoice_id is not None
    paid = await downstream.erp.get_invoice(int(status.erp_invoice_id))
    assert paid.status == BillingStatus.PAID and paid.total.amount == expected_net() * VAT
    assert await unbilled(downstream, deal.project_id) == 0  # the time was marked billed
    failures = [
        e
        for e in await e2e_store.exceptions(workflow_id=handle.id)
        if e.kind == "invoice_follow_up_failed"
    ]
    assert [e.step for e in failures] == ["crm_update", "crm_update"]  # "open", then "paid"
    assert all("in the CRM" in e.message for e in failures)
    salesforce.clear_faults()
    opp = await crm.get("Opportunity", deal.opportunity_id)
    assert opp.get("Q2C_Invoice_Status__c") in (None, "")  # the CRM never took the writes
