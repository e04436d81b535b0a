"""Every branch of the time-to-invoice workflow on the real dev server, with fake systems."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from canonical import AdjustmentKind, AdjustmentLine, InvoiceAdjustment
from tests.workflows.invoice_fakes import APPROVER, FakeInvoicing, start_args
from workflows.approvals import OPERATOR, OperatorAck, OperatorAction, OperatorDecision
from workflows.time_to_invoice import (
    ADJUST,
    BILLING_METADATA_KEY,
    BILLING_RUN_METADATA_KEY,
    CONTRACT_CHANGED,
    DECIDE,
    PAYMENT,
    STATUS,
    ApprovalDecision,
    ContractChanged,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    PaymentEvent,
    TimeToInvoiceInput,
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
    assert created.metadata == {
        BILLING_METADATA_KEY: handle.id,
        BILLING_RUN_METADATA_KEY: handle.result_run_id,
    }
    assert created.days_until_due == 30
    [posted] = systems.called("post_erp_invoice")
    assert posted.reference == "Q2CTEST-0001" and posted.erp_customer_id == "17"
    assert len(systems.called("mark_time_billed")) == 1
    [payment] = systems.called("record_erp_payment")
    assert (payment.erp_invoice_id, payment.amount) == ("88", Decimal("2400.00"))
    assert systems.crm_statuses() == ["open", "paid"]
    assert not systems.called("void_billing_invoice")
    # Idempotency keys are scoped to what they protect: this run's draft, this invoice.
    draft_id = f"{handle.id}/{handle.result_run_id}"
    assert created.draft_id == draft_id
    assert created.idempotency_key == f"{draft_id}:billing-invoice"
    [finalized] = systems.called("finalize_billing_invoice")
    assert finalized.idempotency_key == "in_TEST1:finalize"
    assert posted.idempotency_key == f"{draft_id}:erp-invoice"
    assert payment.idempotency_key == "erp-invoice:88:payment"


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


def write_off(amount: str = "400", adjustment_id: str | None = "adj-1") -> InvoiceAdjustment:
    return InvoiceAdjustment(
        adjustment_id=adjustment_id,
        approver=APPROVER,
        reason="onboarding hours not billable",
        lines=[
            AdjustmentLine(
                kind=AdjustmentKind.WRITE_OFF, description="Onboarding", amount=Decimal(amount)
            )
        ],
    )


async def issued(client: Client, task_queue: str) -> Handle:
    """A run whose invoice is issued (finalized and posted) and followed for payment."""
    handle = await start(client, task_queue)
    await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
    await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    return handle


def event(kind: str, event_id: str) -> PaymentEvent:
    return paid(event_id).model_copy(update={"kind": kind, "amount": None})


async def test_an_adjustment_delivered_by_signal_and_update_applies_once(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        adjustment = write_off("1500")  # applied twice, it would exceed the draft's net
        await handle.signal(ADJUST, adjustment)
        first = await handle.execute_update(ADJUST, adjustment, result_type=DecisionAck)
        again = await handle.execute_update(ADJUST, adjustment, result_type=DecisionAck)
        # Another adjustment, sent without an id, twice: its content identifies it.
        no_id = write_off("100", adjustment_id=None)
        await handle.execute_update(ADJUST, no_id, result_type=DecisionAck)
        repeat = await handle.execute_update(ADJUST, no_id, result_type=DecisionAck)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        await handle.terminate("test over")

    # Signal and update race: whichever the run took first applied it, the other is a repeat.
    assert again.duplicate and repeat.duplicate
    assert first.adjustment_id == again.adjustment_id == "adj-1"
    assert first.total == again.total == Decimal("600.00")  # (2000 - 1500) x 1.2: once
    assert status.draft is not None and status.draft.total == Decimal("480.00")  # and -100
    # A local activity runs at least once (a slow workflow task re-runs it); the draft's
    # store applies an id once, so the repeats above changed nothing.
    applied = list(
        dict.fromkeys(a.adjustment.adjustment_id for a in systems.called("adjust_draft"))
    )
    assert applied[0] == "adj-1" and len(applied) == 2 and applied[1].startswith("content-")
    accepted = [r for r in status.records if r.what == "adjust" and r.accepted]
    assert [r.ref for r in accepted] == applied
    ignored = [r for r in status.records if r.what == "adjust" and not r.accepted]
    assert len(ignored) == 3 and all(
        "applied already" in (r.ignored_because or "") for r in ignored
    )


async def test_a_total_that_disagrees_after_finalize_voids_the_billing_invoice(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(finalize_surcharge=Decimal("1.00"))
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvoicingFailed"
    assert cause.message.startswith("billing_invoice: ") and "2401.00" in cause.message
    [void] = systems.called("void_billing_invoice")
    assert void.billing_invoice_id == "in_TEST1" and void.idempotency_key == "in_TEST1:void"
    assert not systems.called("post_erp_invoice")  # the ERP never holds the disagreeing invoice
    [exception] = [e for e in systems.called("record_exception") if e.kind == "invoicing_failed"]
    assert "Undone: void billing invoice" in exception.message


async def test_failures_after_the_invoice_is_issued_are_exceptions_and_payment_closes_the_run(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(refuse={"mark_time_billed", "write_invoice_status"})
    async with systems.worker(temporal_client, task_queue):
        handle = await issued(temporal_client, task_queue)
        await handle.signal(PAYMENT, paid())
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == InvoiceStep.PAID and "follow-up step(s) failed" in result.message
    assert len(systems.called("record_erp_payment")) == 1
    assert systems.crm_statuses() == ["open", "paid"]  # tried each time, refused each time
    exceptions = [e for e in systems.called("record_exception")]
    assert {e.kind for e in exceptions} == {"invoice_follow_up_failed"}
    assert [e.step for e in exceptions] == ["mark_billed", "crm_update", "crm_update"]
    assert "Q2CTEST-0001" in exceptions[0].message and "mark the time billed" in (
        exceptions[0].message
    )
    assert len(status.issues) == 3
    assert not systems.called("void_billing_invoice")  # an issued invoice is never undone


async def test_a_voided_invoice_is_credited_in_the_erp_and_its_time_released(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await issued(temporal_client, task_queue)
        await handle.signal(PAYMENT, event("voided", "evt_v"))
        result = await handle.result()

    assert result.status == InvoiceStep.VOIDED
    [credit] = systems.called("credit_erp_invoice")
    assert "evt_v" in credit.reason
    assert len(systems.called("unmark_time_billed")) == 1
    assert [s.status for s in systems.called("set_draft_status")] == ["void"]
    [exception] = [e for e in systems.called("record_exception") if e.kind == "invoice_voided"]
    assert "credit note 89" in exception.message
    assert systems.crm_statuses() == ["open", "void"]
    assert not systems.called("record_erp_payment")


async def test_an_uncollectible_invoice_ends_the_run_with_an_exception_for_finance(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await issued(temporal_client, task_queue)
        await handle.signal(PAYMENT, event("uncollectible", "evt_u"))
        result = await handle.result()

    assert result.status == InvoiceStep.UNCOLLECTIBLE
    [exception] = [
        e for e in systems.called("record_exception") if e.kind == "invoice_uncollectible"
    ]
    assert "write off" in exception.message and "88" in exception.message
    assert [s.status for s in systems.called("set_draft_status")] == ["uncollectible"]
    assert systems.crm_statuses() == ["open", "uncollectible"]
    assert not systems.called("credit_erp_invoice") and not systems.called("unmark_time_billed")


async def test_payment_follow_up_ends_after_the_configured_time_past_due(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    systems = FakeInvoicing()
    async with systems.worker(client, task_queue):
        request, wid = start_args()
        handle = await client.start_workflow(
            TimeToInvoiceWorkflow.run,
            request.model_copy(update={"payment_follow_up_days": 30}),
            id=wid,
            task_queue=task_queue,
        )
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        result = await handle.result()

    assert result.status == InvoiceStep.UNPAID
    kinds = [e.kind for e in systems.called("record_exception")]
    # Due 2026-12-31; reminders on the due date and weekly, then the run ends 30 days after.
    assert kinds == ["invoice_overdue"] * 5 + ["invoice_unpaid"]
    assert systems.crm_statuses() == ["open", "overdue"]


async def test_a_supplementary_draft_says_so_and_a_rerun_gets_its_own_keys(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        first = await issued(temporal_client, task_queue)
        await first.signal(PAYMENT, paid())
        await first.result()
        # The same period again: the draft bills only what the first invoice did not.
        systems.supplementary_to = ["Q2CTEST-0001"]
        rerun = TimeToInvoiceInput(
            project_id=first.id.split(":")[1], period="2026-11", trigger="rerun"
        )
        second: Handle = await temporal_client.start_workflow(
            TimeToInvoiceWorkflow.run,
            rerun,
            id=first.id,
            task_queue=task_queue,
        )
        status = await wait_for_step(second, InvoiceStep.AWAITING_APPROVAL)
        await second.terminate("test over")

    assert status.supplementary_to == ["Q2CTEST-0001"]
    assert status.draft is not None and status.draft.supplementary
    first_draft, second_draft = (d.draft_id for d in systems.called("draft_invoice"))
    assert first_draft != second_draft and first_draft.startswith(f"{first.id}/")


async def test_a_run_cancelled_while_billing_voids_what_it_created(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(hang_finalize=True)
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        async with asyncio.timeout(STEP_WAIT_S):
            while not systems.called("finalize_billing_invoice"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)

    assert isinstance(failure.value.cause, CancelledError)
    assert status.step == InvoiceStep.CANCELLED
    [void] = systems.called("void_billing_invoice")  # registered before finalize
    assert void.billing_invoice_id == "in_TEST1"
    assert not systems.called("post_erp_invoice")
    [exception] = [e for e in systems.called("record_exception") if e.kind == "invoicing_cancelled"]
    assert "Undone: void billing invoice" in exception.message


async def test_a_run_cancelled_after_issue_undoes_nothing(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await issued(temporal_client, task_queue)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()

    assert not systems.called("void_billing_invoice")
    assert not systems.called("discard_erp_draft") and not systems.called("unmark_time_billed")
    [exception] = [e for e in systems.called("record_exception") if e.kind == "invoicing_cancelled"]
    assert "Undone" not in exception.message


async def test_a_crm_outage_after_issue_is_waited_out_and_payment_still_closes_the_run(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(down={"write_invoice_status"})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        async with asyncio.timeout(STEP_WAIT_S):
            while (status := await status_of(handle)).waiting_on != "salesforce":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert status.step == InvoiceStep.CRM_UPDATE
        # The customer pays while the CRM is down: the payment waits for the run, not lost.
        await handle.signal(PAYMENT, paid())
        [notice] = systems.open_exceptions()
        assert (notice.kind, notice.step) == ("system_unavailable", "crm_update")
        systems.down.clear()  # Salesforce is back
        result = await handle.result()

    assert result.status == InvoiceStep.PAID
    assert systems.open_exceptions() == []  # the outage notice resolved itself
    assert len(systems.called("record_erp_payment")) == 1
    assert [c.status for c in systems.called("write_invoice_status")][-2:] == ["open", "paid"]
    assert not systems.called("void_billing_invoice")


async def test_past_its_deadline_an_operator_gives_up_a_step_after_issue_and_the_run_goes_on(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(down={"mark_time_billed"})
    outage = systems.policy.outage.model_copy(
        update={"deadlines": {"tryton": timedelta(seconds=3)}}
    )
    systems.policy = systems.policy.model_copy(update={"outage": outage})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        status = await wait_for_step(handle, InvoiceStep.AWAITING_OPERATOR)
        assert status.waiting_on == "tryton"
        await handle.execute_update(
            OPERATOR,
            OperatorDecision(
                action=OperatorAction.COMPENSATE,
                operator="ops@northwind.example",
                reason="the PSA is being migrated; marking by hand",
            ),
            result_type=OperatorAck,
        )
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        await handle.signal(PAYMENT, paid())
        result = await handle.result()

    assert result.status == InvoiceStep.PAID
    [gave_up] = systems.open_exceptions()
    assert (gave_up.kind, gave_up.step) == ("invoice_follow_up_failed", "mark_billed")
    assert "decided to compensate" in gave_up.message
    # An issued invoice is never undone: giving up a later step only records it.
    assert not systems.called("void_billing_invoice") and not systems.called("unmark_time_billed")
    assert systems.crm_statuses() == ["open", "paid"]


# --------------------------------------------------------------------------- change orders

CHANGE_ORDER = "salesforce:a0X000000000001AAA"


def contract_changed(version: int = 2, change_order: str = CHANGE_ORDER) -> ContractChanged:
    return ContractChanged(
        change_order=change_order, version=version, effective_from=date(2026, 11, 1)
    )


async def wait_for_rerates(handle: Handle, count: int) -> InvoiceStatus:
    """The status once the run has taken `count` contract changes (re-rated or ignored)."""
    async with asyncio.timeout(STEP_WAIT_S):
        while len((status := await status_of(handle)).rerates) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return status


async def test_a_contract_change_while_finance_holds_the_draft_re_rates_it_keeping_adjustments(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing()
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        ack = await handle.execute_update(ADJUST, write_off("400"), result_type=DecisionAck)
        assert ack.total == Decimal("1920.00")  # (2000 - 400) x 1.2
        systems.rate = "180"  # the change-order run recorded contract v2 in the store
        await handle.signal(CONTRACT_CHANGED, contract_changed())
        status = await wait_for_rerates(handle, 1)
        assert not systems.called("create_billing_invoice")  # still finance's to decide
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        await handle.signal(PAYMENT, paid())
        result = await handle.result()

    [rerate] = status.rerates
    assert rerate.rerated and rerate.ignored_because is None
    assert (rerate.change_order, rerate.version) == (CHANGE_ORDER, 2)
    assert (rerate.total_before, rerate.total_after, rerate.currency) == (
        Decimal("1920.00"),
        Decimal("2220.00"),  # (12.5 h x 180 - 400) x 1.2: the write-off kept
        "GBP",
    )
    assert rerate.dropped_adjustments == []
    assert status.step == InvoiceStep.AWAITING_APPROVAL and status.pending_since is not None
    assert status.draft is not None and status.draft.total == Decimal("2220.00")
    assert [a.adjustment_id for a in status.draft.adjustments] == ["adj-1"]
    # Drafted again under the same id, on the contract loaded again from the store.
    first, again = systems.called("draft_invoice")
    assert first.draft_id == again.draft_id == status.draft.draft_id
    assert len(systems.called("load_billing_contract")) == 2
    assert {a.adjustment.adjustment_id for a in systems.called("adjust_draft")} == {"adj-1"}
    [audited] = [
        a for a in systems.called("record_audit") if a.action == f"rerated:{CHANGE_ORDER}:v2"
    ]
    assert audited.detail["total_after"] == "2220.00"
    # The approval taken after the re-rate billed the re-rated draft.
    assert result.status == InvoiceStep.PAID and result.total == Decimal("2220.00")
    [created] = systems.called("create_billing_invoice")
    assert created.draft_id == first.draft_id


async def test_an_approval_during_the_re_draft_is_taken_on_the_re_rated_draft(
    temporal_client: Client, task_queue: str
) -> None:
    redraft = asyncio.Event()
    systems = FakeInvoicing(hold_drafts={2: redraft})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        systems.rate = "180"
        await handle.signal(CONTRACT_CHANGED, contract_changed())
        async with asyncio.timeout(STEP_WAIT_S):
            await systems.draft_began[2].wait()
        # Finance approves while the draft is being re-rated: recorded, held back.
        ack = await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        held = await status_of(handle)
        assert not systems.called("create_billing_invoice")
        redraft.set()
        status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        await handle.signal(PAYMENT, paid())
        result = await handle.result()

    assert ack.what == "approve"
    assert held.step == InvoiceStep.AWAITING_APPROVAL and held.rerates == []
    assert [r.what for r in held.records if r.accepted] == ["approve"]
    [rerate] = status.rerates
    assert (rerate.total_before, rerate.total_after) == (Decimal("2400.00"), Decimal("2700.00"))
    assert status.draft is not None and status.draft.total == Decimal("2700.00")
    assert result.status == InvoiceStep.PAID and result.total == Decimal("2700.00")
    assert len(systems.called("draft_invoice")) == 2


async def test_a_contract_change_before_the_draft_or_after_the_decision_changes_nothing(
    temporal_client: Client, task_queue: str
) -> None:
    drafting = asyncio.Event()
    systems = FakeInvoicing(hold_drafts={1: drafting})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        async with asyncio.timeout(STEP_WAIT_S):
            await systems.draft_began[1].wait()
        await handle.signal(CONTRACT_CHANGED, contract_changed(version=2))
        early = await wait_for_rerates(handle, 1)
        drafting.set()
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        systems.rate = "180"
        await handle.signal(CONTRACT_CHANGED, contract_changed(version=3))
        await handle.signal(CONTRACT_CHANGED, contract_changed(version=3))  # recorded once
        late = await wait_for_rerates(handle, 2)
        await handle.signal(PAYMENT, paid())
        result = await handle.result()
        status = await status_of(handle)

    assert early.step == InvoiceStep.DRAFT
    [before] = early.rerates
    assert not before.rerated and "not made yet" in (before.ignored_because or "")
    after = late.rerates[1]
    assert not after.rerated and after.version == 3
    assert "finance decided already (approve" in (after.ignored_because or "")
    assert len(status.rerates) == 2
    # The issued invoice stands: drafted once, billed at the rate it was approved at.
    assert len(systems.called("draft_invoice")) == 1
    assert len(systems.called("load_billing_contract")) == 1
    assert result.status == InvoiceStep.PAID and result.total == Decimal("2400.00")


async def test_a_contract_change_delivered_again_re_rates_once(
    temporal_client: Client, task_queue: str
) -> None:
    redraft = asyncio.Event()
    systems = FakeInvoicing(hold_drafts={2: redraft})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        systems.rate = "180"
        await handle.signal(CONTRACT_CHANGED, contract_changed())
        async with asyncio.timeout(STEP_WAIT_S):
            await systems.draft_began[2].wait()
        await handle.signal(CONTRACT_CHANGED, contract_changed())  # while re-rating
        redraft.set()
        await wait_for_rerates(handle, 1)
        await handle.signal(CONTRACT_CHANGED, contract_changed())  # after
        # Delivered before the decision: a re-rate they began would hold the approval back
        # and draft a third time before billing.
        await handle.execute_update(DECIDE, approve(), result_type=DecisionAck)
        status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
        await handle.terminate("test over")

    assert len(systems.called("draft_invoice")) == 2
    [rerate] = status.rerates
    assert rerate.rerated and rerate.total_after == Decimal("2700.00")


async def test_a_re_rate_that_fails_or_cannot_keep_an_adjustment_says_so(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(refuse={"redraft"})
    async with systems.worker(temporal_client, task_queue):
        handle = await start(temporal_client, task_queue)
        await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
        await handle.signal(CONTRACT_CHANGED, contract_changed(version=2))
        failed = await wait_for_rerates(handle, 1)
        # The next change order lowers the rate below what finance wrote off.
        systems.refuse.clear()
        await handle.execute_update(ADJUST, write_off("1900"), result_type=DecisionAck)
        systems.rate = "140"
        await handle.signal(CONTRACT_CHANGED, contract_changed(version=3))
        lowered = await wait_for_rerates(handle, 2)
        await handle.terminate("test over")

    [failure] = failed.rerates
    assert not failure.rerated and "re-rating failed: ValidationFailed: redraft refused" in (
        failure.ignored_because or ""
    )
    assert failed.draft is not None and failed.draft.total == Decimal("2400.00")
    assert failed.step == InvoiceStep.AWAITING_APPROVAL
    assert [e.kind for e in systems.open_exceptions()] == ["invoice_rerate_failed"]
    rerate = lowered.rerates[1]
    assert rerate.rerated and rerate.total_before == Decimal("120.00")  # (2000 - 1900) x 1.2
    assert rerate.total_after == Decimal("2100.00")  # 12.5 h x 140 x 1.2: no write-off left
    [dropped] = rerate.dropped_adjustments
    assert dropped.startswith("adj-1: ") and "negative" in dropped
    assert lowered.draft is not None and lowered.draft.adjustments == []
