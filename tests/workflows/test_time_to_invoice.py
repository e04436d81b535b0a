"""Every branch of the time-to-invoice workflow on the real dev server, with fake systems."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from canonical import AdjustmentKind, AdjustmentLine, InvoiceAdjustment
from tests.workflows.invoice_fakes import APPROVER, FakeInvoicing, start_args
from workflows.time_to_invoice import (
    ADJUST,
    BILLING_METADATA_KEY,
    DECIDE,
    PAYMENT,
    STATUS,
    ApprovalDecision,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    PaymentEvent,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
)

Handle = WorkflowHandle[TimeToInvoiceWorkflow, TimeToInvoiceResult]
STEP_WAIT_S = 15


async def status_of(handle: Handle) -> InvoiceStatus:
    status: InvoiceStatus = await handle.query(STATUS, result_type=InvoiceStatus)
    return status


async def wait_for_step(handle: Handle, step: InvoiceStep) -> InvoiceStatus:
    async with asyncio.timeout(STEP_WAIT_S):
        while (status := await status_of(handle)).step != step:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return status


async def start(client: Client, task_queue: str) -> Handle:
    request, wid = start_args()
    return await client.start_workflow(
        TimeToInvoiceWorkflow.run, request, id=wid, task_queue=task_queue
    )


def approve(approver: str = APPROVER) -> ApprovalDecision:
    return ApprovalDecision(decision=Decision.APPROVE, approver=approver, reason="ok")


def paid(event_id: str = "evt_1", invoice: str = "in_TEST1") -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id,
        kind="paid",
        billing_invoice_id=invoice,
        amount=Decimal("2400.00"),
        occurred_at=datetime(2026, 12, 5, tzinfo=UTC),
    )


async def test_approved_draft_is_billed_posted_marked_and_followed_until_paid(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        status = await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        assert status.draft is not None and status.draft.total == Decimal("2400.00")
        assert not systems.called("create_billing_invoice")  # nothing billed before approval

        ack = await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        assert ack.what == "approve"
        status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        assert status.invoice_number == "Q2CTEST-0001"

        # Billing's webhook arrives, twice (at least once delivery) and for another invoice.
        await handle.signal(PAYMENT, paid(invoice="in_OTHER"))
        await handle.signal(PAYMENT, paid())
        await handle.signal(PAYMENT, paid())
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == InvoiceStep.PAID and result.invoice_number == "Q2CTEST-0001"
    assert [p.event_id for p in status.payments] == ["evt_1"]
    [created] = systems.called("create_billing_invoice")
    assert created.metadata == {BILLING_METADATA_KEY: handle.id}
    assert created.days_until_due == 30
    [posted] = systems.called("post_erp_invoice")
    assert posted.reference == "Q2CTEST-0001" and posted.erp_customer_id == "17"
    assert len(systems.called("mark_time_billed")) == 1
    [payment] = systems.called("record_erp_payment")
    assert (payment.erp_invoice_id, payment.amount) == ("88", Decimal("2400.00"))
    assert systems.crm_statuses() == ["open", "paid"]
    assert not systems.called("void_billing_invoice")
    # Idempotency keys are the run's, the same on every attempt.
    assert created.idempotency_key == f"{handle.id}:billing_invoice"


async def test_rejected_draft_bills_nothing(temporal_client: Client, task_queue: str) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.signal(
            DECIDE,
            ApprovalDecision(decision=Decision.REJECT, approver=APPROVER, reason="hours disputed"),
        )
        result = await handle.result()

    assert result.status == InvoiceStep.REJECTED
    assert "hours disputed" in result.message and "unbilled" in result.message
    for name in ("create_billing_invoice", "post_erp_invoice", "mark_time_billed"):
        assert not systems.called(name)


async def test_adjusted_draft_bills_the_adjusted_total(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    write_off = InvoiceAdjustment(
        approver=APPROVER,
        reason="onboarding hours not billable",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.WRITE_OFF, description="Onboarding", amount=Decimal("400")
            )
        ],
    )
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        # Too large, and from someone not on the list: both refused by the validator.
        too_big = write_off.model_copy(
            update={"lines": [write_off.lines[0].model_copy(update={"amount": Decimal("5000")})]}
        )
        with pytest.raises(WorkflowUpdateFailedError, match="Workflow update failed"):
            await handle.execute_update(ADJUST, too_big, result_type=DecisionAck)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                ADJUST,
                write_off.model_copy(update={"approver": "pm@x.example"}),
                result_type=DecisionAck,
            )
        ack = await handle.execute_update(ADJUST, write_off, result_type=DecisionAck)
        assert ack.total == Decimal("1920.00")  # (2000 - 400) x 1.2
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        status = await status_of(handle)
        await handle.terminate("test over")

    assert status.draft is not None and status.draft.total == Decimal("1920.00")
    assert [r.what for r in status.records if r.accepted] == ["adjust", "approve"]
    assert len(systems.called("adjust_draft")) == 1
    [created] = systems.called("create_billing_invoice")
    assert created.draft_id == status.draft.draft_id


async def test_permanent_erp_failure_voids_billing_and_returns_time(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(fail_erp="tryton: the period 2026-11 of NW-UK is closed")
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvoicingFailed"
    assert "erp_posting" in cause.message and "period 2026-11" in cause.message
    [void] = systems.called("void_billing_invoice")
    assert void.billing_invoice_id == "in_TEST1"
    assert len(systems.called("unmark_time_billed")) == 1
    assert not systems.called("mark_time_billed")
    [exception] = [e for e in systems.called("record_exception") if e.kind == "invoicing_failed"]
    assert "Undone: discard ERP draft, return time to unbilled, void billing invoice" in (
        exception.message
    )
    assert len(systems.called("discard_erp_draft")) == 1


async def test_a_period_without_time_invoices_nothing(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(hours="0")
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        result = await handle.result()
    assert result.status == InvoiceStep.NOTHING_TO_INVOICE
    assert not systems.called("create_billing_invoice")


async def test_payment_failure_is_an_exception_and_the_run_keeps_waiting(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        failed = paid("evt_f").model_copy(
            update={"kind": "payment_failed", "reason": "card declined"}
        )
        await handle.signal(PAYMENT, failed)
        await handle.signal(PAYMENT, paid("evt_2"))
        result = await handle.result()
    assert result.status == InvoiceStep.PAID
    [exception] = [e for e in systems.called("record_exception") if e.kind == "payment_failed"]
    assert "card declined" in exception.message
    assert systems.crm_statuses() == ["open", "payment_failed", "paid"]


async def test_unpaid_invoice_past_its_terms_raises_an_exception(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    systems = FakeInvoicing()
    async with systems.worker(client, task_queue):
        handle = await start(client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        # Due 2026-12-31: let the run's clock pass it.
        await time_skipping_env.fast_forward(
            handle, datetime(2027, 1, 2, tzinfo=UTC) - datetime.now(UTC)
        )
        overdue: list[Any] = []
        async with asyncio.timeout(STEP_WAIT_S):
            while not overdue:
                overdue = [
                    e for e in systems.called("record_exception") if e.kind == "invoice_overdue"
                ]
                await asyncio.sleep(0.1)
        await handle.terminate("test over")
    assert "Initech UK Ltd" in overdue[0].message and "2400.00 GBP" in overdue[0].message


async def test_unanswered_draft_reminds_then_expires(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    systems = FakeInvoicing()
    async with systems.worker(client, task_queue):
        handle = await start(client, task_queue)
        result = await handle.result()
    assert result.status == InvoiceStep.EXPIRED
    kinds = [e.kind for e in systems.called("record_exception")]
    assert kinds == [
        "invoice_approval_overdue",
        "invoice_approval_overdue",
        "invoice_approval_expired",
    ]
    assert not systems.called("create_billing_invoice")
