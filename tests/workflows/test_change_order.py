"""Every branch of the change-order workflow and its deal's queue, on the real dev server, with
fakes for the systems (see `change_order_fakes.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.change_orders import BillingCorrection
from canonical import ChangeOrder, ChangeOrderStatus, Money
from tests.fixtures.change_orders import retroactive_preview, retroactive_rate_increase
from tests.workflows.change_order_fakes import (
    APPROVER,
    STEP_WAIT_S,
    FakeChangeOrders,
    Handle,
    InvoiceRunTold,
    change_order,
    draft_id_of,
    new_deal,
    preview_of,
    start_change_order,
    start_invoice_run,
    status_of,
    told,
    wait_until,
)
from workflows.approvals import DECIDE, ApprovalAck, ApprovalDecision, Decision
from workflows.change_order import (
    QUEUE,
    ChangeOrderResult,
    ChangeOrderStep,
    QueueView,
    queue_workflow_id,
    workflow_id,
)
from workflows.starters import start_change_order_run
from workflows.time_to_invoice import ContractChanged

#: Over the 10,000 USD budget increase finance approves.
RISKY = "24000"


def approve(reason: str = "margin ok") -> ApprovalDecision:
    return ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason=reason)


def applied_previews(systems: FakeChangeOrders) -> list[str]:
    """The change orders whose PSA terms were applied, in order."""
    return [a.preview.change_order for a in systems.called("apply_psa_terms")]


def nothing_applied(systems: FakeChangeOrders) -> bool:
    return not any(
        systems.called(name)
        for name in ("apply_psa_terms", "record_contract", "update_billing_plan")
    )


def risky(systems: FakeChangeOrders) -> ChangeOrder:
    return systems.add(change_order(opportunity_id=new_deal(), amount_delta=RISKY))


async def test_a_change_without_risks_is_applied_at_once(temporal_client: Client, task_queue: str):
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal()))
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        result = await handle.result()
        status = await status_of(handle)

    preview = preview_of(change)
    assert result.status == ChangeOrderStep.APPLIED
    assert (result.contract_version, result.digest) == (2, preview.digest)
    key = f"change-order:salesforce:{change.id}"
    [psa] = systems.called("apply_psa_terms")
    assert (psa.project_id, psa.idempotency_key, psa.preview) == ("42", key, preview)
    [recorded] = systems.called("record_contract")
    assert recorded.contract == preview.after and recorded.project_id == "42"
    [plan] = systems.called("update_billing_plan")
    assert (plan.billing_customer_id, plan.idempotency_key) == ("cus_TEST1", f"{key}:plan")
    applied = [
        name
        for name in systems.sequence
        if name
        in {"apply_psa_terms", "record_contract", "update_billing_plan", "write_back_change_order"}
    ]
    assert applied == [
        "apply_psa_terms",
        "record_contract",
        "update_billing_plan",
        "write_back_change_order",
    ]
    [written] = systems.called("write_back_change_order")
    assert written.status is ChangeOrderStatus.APPLIED and written.workflow_id == handle.id
    assert "Applied as contract version 2" in (written.message or "")
    [deal] = systems.called("write_back_deal")
    assert deal.opportunity_id == change.opportunity_id and deal.status == "provisioned"
    assert status.step == ChangeOrderStep.APPLIED and status.applied_version == 2
    assert status.risks == [] and status.decisions == [] and status.approved_digest is None
    assert not systems.called("restore_psa_terms") and not systems.called("record_exception")


async def test_a_risky_change_is_applied_after_finance_approves_its_preview(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = risky(systems)
    digest = preview_of(change).digest
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        status = await wait_until(handle, lambda s: s.pending_approval is not None)
        assert status.step == ChangeOrderStep.AWAITING_APPROVAL
        assert status.preview is not None and status.preview.digest == digest
        [risk] = status.risks
        assert risk == "budget: up 24000.00 USD, over the 10000 USD finance approves"
        assert nothing_applied(systems)

        ack = await handle.execute_update(DECIDE, approve(), result_type=ApprovalAck)
        assert ack.what == Decision.APPROVE
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == ChangeOrderStep.APPLIED and result.digest == digest
    assert status.approved_digest == digest
    [decision] = status.decisions
    assert decision.accepted and decision.approver == APPROVER
    # The approval's record names the preview it approved.
    [approval] = [a for a in systems.called("record_audit") if a.action == "approve"]
    assert approval.detail == {"digest": digest, "approver": APPROVER}
    [psa] = systems.called("apply_psa_terms")
    assert psa.preview.digest == digest
    assert systems.crm_statuses() == [ChangeOrderStatus.APPLIED]


async def test_a_rejected_change_is_written_back_and_applies_nothing(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = risky(systems)
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        await wait_until(handle, lambda s: s.pending_approval is not None)
        await handle.signal(
            DECIDE,
            ApprovalDecision(decision=Decision.REJECT, approver=APPROVER, reason="too dear"),
        )
        result = await handle.result()

    assert result.status == ChangeOrderStep.REJECTED
    assert result.message == f"Rejected by {APPROVER}: too dear"
    [written] = systems.called("write_back_change_order")
    assert written.status is ChangeOrderStatus.REJECTED and written.message == result.message
    assert nothing_applied(systems) and not systems.called("write_back_deal")


async def test_an_unanswered_approval_reminds_then_expires(
    time_skipping_env: WorkflowEnvironment, task_queue: str
):
    client = time_skipping_env.client
    systems = FakeChangeOrders()  # remind every 4 h, expire after 10 h
    change = risky(systems)
    async with systems.worker(client, task_queue):
        handle = await start_change_order(client, task_queue, change)
        result = await handle.result()

    assert result.status == ChangeOrderStep.EXPIRED
    audited = [a.action for a in systems.called("record_audit")]
    assert "reminder_1" in audited and "reminder_2" in audited and "reminder_3" not in audited
    assert "expired" in audited
    assert systems.crm_statuses() == [ChangeOrderStatus.FAILED]
    assert nothing_applied(systems)


async def test_a_preview_that_changed_after_approval_is_approved_again(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = risky(systems)
    first = preview_of(change).digest
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        await wait_until(handle, lambda s: s.pending_approval is not None)
        # The change order is edited in the CRM while finance looks at the first preview.
        systems.edit(change.id, amount_delta=Money.of("26000", "USD"))
        await handle.execute_update(DECIDE, approve("first look"), result_type=ApprovalAck)

        status = await wait_until(
            handle, lambda s: bool(s.superseded) and s.pending_approval is not None
        )
        edited = preview_of(systems.changes[change.id]).digest
        assert edited != first
        assert status.superseded == [first] and status.approved_digest is None
        assert status.preview is not None and status.preview.digest == edited
        assert status.step == ChangeOrderStep.AWAITING_APPROVAL
        assert nothing_applied(systems)

        await handle.execute_update(DECIDE, approve("second look"), result_type=ApprovalAck)
        result = await handle.result()
        status = await status_of(handle)

    assert result.status == ChangeOrderStep.APPLIED and result.digest == edited
    assert status.approved_digest == edited and status.superseded == [first]
    assert [d.reason for d in status.decisions] == ["first look", "second look"]
    [psa] = systems.called("apply_psa_terms")
    assert psa.preview.digest == edited
    [changed] = [a for a in systems.called("record_audit") if a.action == "preview_changed"]
    assert changed.detail == {"digest": edited, "superseded": first}
    audited = systems.called("record_audit")
    assert [a.detail["digest"] for a in audited if a.action == "approve"] == [first, edited]


async def test_a_permanent_billing_failure_undoes_the_psa_and_the_contract(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders(fail_plan="stripe HTTP 400: plan refused")
    change = systems.add(change_order(opportunity_id=new_deal()))
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ChangeOrderFailed"
    assert cause.message.startswith("update_billing_plan: ")
    assert "plan refused" in cause.message
    steps = [
        name
        for name in systems.sequence
        if name
        in {
            "apply_psa_terms",
            "record_contract",
            "update_billing_plan",
            "remove_contract_version",
            "restore_psa_terms",
            "restore_billing_plan",
            "write_back_change_order",
        }
    ]
    # Undone newest first, then the CRM is told.
    assert steps == [
        "apply_psa_terms",
        "record_contract",
        "update_billing_plan",
        "remove_contract_version",
        "restore_psa_terms",
        "write_back_change_order",
    ]
    [removed] = systems.called("remove_contract_version")
    assert (removed.contract_id, removed.version, removed.source) == (
        f"salesforce:{change.opportunity_id}",
        2,
        f"change-order:salesforce:{change.id}",
    )
    [restored] = systems.called("restore_psa_terms")
    assert restored.project_id == "42"
    assert restored.idempotency_key == f"change-order:salesforce:{change.id}"
    [written] = systems.called("write_back_change_order")
    assert written.status is ChangeOrderStatus.FAILED
    assert "plan refused" in (written.message or "")
    assert not systems.called("write_back_deal")
    [exception] = systems.called("record_exception")
    assert exception.kind == "change_order_failed"
    assert status.step == ChangeOrderStep.FAILED


async def test_a_change_order_waits_until_its_deal_is_provisioned(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders(provisioned=False)
    change = systems.add(change_order(opportunity_id=new_deal()))
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        status = await wait_until(handle, lambda s: s.step == ChangeOrderStep.AWAITING_PROJECT)
        assert status.project_id is None and status.preview is None
        assert nothing_applied(systems)

        systems.provisioned = True
        result = await handle.result()

    assert result.status == ChangeOrderStep.APPLIED and result.contract_version == 2
    previews = systems.called("preview_change_order")
    assert len(previews) >= 2
    assert applied_previews(systems) == [change.key]


async def test_a_rerun_of_an_applied_change_order_only_writes_back(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal()))
    systems.applied_versions[change.id] = 3
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        result = await handle.result()

    assert result.status == ChangeOrderStep.APPLIED and result.contract_version == 3
    assert result.message == "already applied as contract version 3"
    assert nothing_applied(systems)
    assert systems.crm_statuses() == [ChangeOrderStatus.APPLIED]
    [deal] = systems.called("write_back_deal")
    assert deal.message == f"Change order {change.name}: already applied as contract version 3"


async def test_a_change_order_not_approved_in_the_crm_fails_without_applying(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal(), status=ChangeOrderStatus.DRAFT))
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ChangeOrderFailed"
    assert "the change order is draft in the CRM" in cause.message
    assert not systems.called("preview_change_order") and nothing_applied(systems)
    # The CRM's draft is left as it is.
    assert not systems.called("write_back_change_order")
    [exception] = systems.called("record_exception")
    assert exception.kind == "change_order_failed"


# -- the deal's queue ------------------------------------------------------------------------


def two_change_orders(systems: FakeChangeOrders) -> tuple[ChangeOrder, ChangeOrder]:
    """Two change orders of one deal, approved in the CRM in this order."""
    deal = new_deal()
    first = systems.add(
        change_order(opportunity_id=deal, approved_at=datetime(2026, 11, 20, tzinfo=UTC))
    )
    second = systems.add(
        change_order(opportunity_id=deal, approved_at=datetime(2026, 11, 21, tzinfo=UTC))
    )
    return first, second


async def queue_view(client: Client, change: ChangeOrder) -> QueueView:
    handle = client.get_workflow_handle(queue_workflow_id(change.crm, change.opportunity_id))
    view: QueueView = await handle.query(QUEUE, result_type=QueueView)
    return view


async def queue_until(
    client: Client, change: ChangeOrder, done: Callable[[QueueView], bool]
) -> QueueView:
    """Poll the deal's queue until `done` holds (a bound on polling, not a timed assertion)."""
    deadline = asyncio.get_running_loop().time() + STEP_WAIT_S
    while True:
        with contextlib.suppress(RPCError):  # the queue has not started yet
            view = await queue_view(client, change)
            if done(view):
                return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the queue never got there: {await queue_view(client, change)}")
        await asyncio.sleep(0.05)


async def deliver(client: Client, task_queue: str, change: ChangeOrder) -> Handle:
    """As a webhook delivers a change order: start its run, or attach to the running one."""
    started = await start_change_order_run(
        client, task_queue, change.id, crm=change.crm, trigger="webhook"
    )
    handle: WorkflowHandle[object, ChangeOrderResult] = client.get_workflow_handle(
        started.workflow_id, result_type=ChangeOrderResult
    )
    return handle  # type: ignore[return-value]


async def test_change_orders_delivered_in_reverse_apply_in_approval_order(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    first, second = two_change_orders(systems)
    async with systems.worker(temporal_client, task_queue):
        late = await deliver(temporal_client, task_queue, second)
        # The queue starts the change order approved first, and gives it the turn first.
        waiting = await queue_until(temporal_client, first, lambda v: v.active == first.id)
        assert [t.change_order_id for t in waiting.waiting] == [second.id, first.id]
        early = await deliver(temporal_client, task_queue, first)  # its webhook, late
        second_result = await late.result()
        first_result = await early.result()
        view = await queue_until(temporal_client, first, lambda v: len(v.done) == 2)

    assert first_result.status == second_result.status == ChangeOrderStep.APPLIED
    assert applied_previews(systems) == [first.key, second.key]
    assert systems.crm_statuses() == [ChangeOrderStatus.APPLIED] * 2
    assert [w.change_order_id for w in systems.called("write_back_change_order")] == [
        first.id,
        second.id,
    ]
    assert systems.called("approved_change_orders")[0].opportunity_id == first.opportunity_id
    assert view.active is None and view.waiting == []
    assert set(view.done) == {first.id, second.id}
    await temporal_client.get_workflow_handle(
        queue_workflow_id(first.crm, first.opportunity_id)
    ).terminate("test over")


async def test_a_terminated_run_is_found_closed_and_the_queue_moves_on(
    time_skipping_env: WorkflowEnvironment, task_queue: str
):
    client = time_skipping_env.client
    systems = FakeChangeOrders()
    first, second = two_change_orders(systems)
    systems.hold.add(first.id)  # its run takes its turn, then hangs in the preview
    async with systems.worker(client, task_queue):
        await deliver(client, task_queue, first)
        await systems.held.wait()
        later = await deliver(client, task_queue, second)
        # Terminated: the run's code never runs again, so it never says it finished.
        await client.get_workflow_handle(workflow_id(first.crm, first.id)).terminate("stuck")
        result = await later.result()
        view = await queue_until(client, first, lambda v: second.id in v.done)
        systems.release.set()

    assert result.status == ChangeOrderStep.APPLIED
    assert applied_previews(systems) == [second.key]
    assert systems.crm_statuses() == [ChangeOrderStatus.APPLIED]
    assert view.done == [first.id, second.id] and view.active is None
    await client.get_workflow_handle(queue_workflow_id(first.crm, first.opportunity_id)).terminate(
        "test over"
    )


async def test_a_failed_compensation_is_reported_and_the_rest_still_undone(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders(fail_plan="stripe HTTP 400: plan refused", fail_remove="db gone")
    change = systems.add(change_order(opportunity_id=new_deal()))
    async with systems.worker(temporal_client, task_queue):
        handle = await start_change_order(temporal_client, task_queue, change)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ChangeOrderFailed"
    assert systems.called("restore_psa_terms")
    [written] = systems.called("write_back_change_order")
    assert written.status is ChangeOrderStatus.FAILED
    assert "remove contract version" in (written.message or "")


async def test_a_rerun_of_a_terminated_active_run_takes_its_turn(
    temporal_client: Client, task_queue: str
):
    """No liveness check is needed: the new run's `enqueue` frees the turn at once."""
    client = temporal_client
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal()))
    systems.hold.add(change.id)  # the first run takes the turn, then hangs in the preview
    async with systems.worker(client, task_queue):
        await deliver(client, task_queue, change)
        await systems.held.wait()
        await client.get_workflow_handle(workflow_id(change.crm, change.id)).terminate("stuck")
        systems.hold.clear()
        rerun = await deliver(client, task_queue, change)  # an operator starts it again
        result = await asyncio.wait_for(rerun.result(), timeout=STEP_WAIT_S)
        systems.release.set()

    assert result.status == ChangeOrderStep.APPLIED
    assert applied_previews(systems) == [change.key]


# -- retroactive change orders: issued invoices corrected --------------------------------------

#: What a retroactive change order's run does, in the order it does it (and what undoes it).
CORRECTION_STEPS = {
    "apply_psa_terms",
    "record_contract",
    "update_billing_plan",
    "correct_billing_invoice",
    "correct_erp_invoice",
    "record_correction",
    "void_billing_correction",
    "restore_billing_plan",
    "remove_contract_version",
    "restore_psa_terms",
    "write_back_change_order",
    "write_back_deal",
}


def retroactive(systems: FakeChangeOrders) -> ChangeOrder:
    """The retroactive rate increase on a deal of its own, reaching back into December."""
    change_order_id = f"a0X{uuid.uuid4().hex[:15].upper()}"
    return systems.add(retroactive_rate_increase(change_order_id, new_deal()))


async def told_until(
    run: WorkflowHandle[Any, Any], done: Callable[[InvoiceRunTold], bool]
) -> InvoiceRunTold:
    """Poll the stand-in invoice run until `done` holds (a bound on polling, not a timing)."""
    deadline = asyncio.get_running_loop().time() + STEP_WAIT_S
    while True:
        heard = await told(run)
        if done(heard):
            return heard
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the invoice run was never told: {heard}")
        await asyncio.sleep(0.05)


async def test_a_retroactive_change_corrects_the_issued_invoice_and_tells_its_run(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = retroactive(systems)
    preview = retroactive_preview(change)
    [correction] = preview.corrections
    key = f"change-order:salesforce:{change.id}"
    async with systems.worker(temporal_client, task_queue):
        run = await start_invoice_run(temporal_client, task_queue)
        draft_id = draft_id_of(run)
        systems.corrected_drafts[correction.invoice_number] = draft_id
        handle = await start_change_order(temporal_client, task_queue, change)
        # Retroactive: finance approves, however small the change.
        status = await wait_until(handle, lambda s: s.pending_approval is not None)
        assert status.preview == preview and nothing_applied(systems)
        assert status.risks == [
            "retroactive: effective 2026-12-16, reaching back into invoiced periods (1 issued "
            "invoice corrected by credit note and re-bill)"
        ]
        await handle.execute_update(DECIDE, approve("re-bill checked"), result_type=ApprovalAck)
        result = await handle.result()
        heard = await told_until(run, lambda t: bool(t.corrected))
        await run.terminate("test over")

    assert result.status == ChangeOrderStep.APPLIED and result.digest == preview.digest
    assert result.message.endswith("; 1 invoice(s) corrected by credit note and re-bill")
    assert [n for n in systems.sequence if n in CORRECTION_STEPS] == [
        "apply_psa_terms",
        "record_contract",
        "update_billing_plan",
        "correct_billing_invoice",
        "correct_erp_invoice",
        "record_correction",
        "write_back_change_order",
        "write_back_deal",
    ]
    [billed] = systems.called("correct_billing_invoice")
    assert (billed.draft_id, billed.correction) == (draft_id, correction)
    assert (billed.billing_customer_id, billed.days_until_due) == ("cus_TEST1", 30)
    assert (billed.change_order, billed.change_order_name) == (change.key, change.name)
    assert billed.idempotency_key == f"{key}:correct:INV-2"
    # The re-bill names the invoice's run, so its payment events reach that run.
    assert billed.metadata == {"q2c_workflow_id": run.id, "q2c_run_id": run.result_run_id}
    [erp] = systems.called("correct_erp_invoice")
    assert (erp.draft_id, erp.correction) == (draft_id, correction)
    assert erp.idempotency_key == f"{key}:correct:INV-2"
    assert erp.reason == f"Change order {change.name} ({change.key})"
    made = BillingCorrection(
        credit_note_id="cn_INV-2", rebill_invoice_id="in_INV-2_rebill", rebill_number="INV-2-R1"
    )
    [recorded] = systems.called("record_correction")
    assert (recorded.draft_id, recorded.change_order) == (draft_id, change.key)
    assert (recorded.billing, recorded.correction) == (made, correction)
    assert (recorded.erp.credit_note_id, recorded.erp.rebill_id) == ("701", "702")
    [fix] = heard.corrected
    assert fix.change_order == change.key
    assert (fix.credit_note_id, fix.rebill_invoice_id, fix.rebill_number) == (
        "cn_INV-2",
        "in_INV-2_rebill",
        "INV-2-R1",
    )
    assert (fix.rebill_total, fix.currency) == (Decimal("1044.00"), "USD")
    assert (fix.erp_credit_note_id, fix.erp_rebill_id) == ("701", "702")
    assert heard.contract_changed == []
    assert not systems.called("void_billing_correction")
    assert systems.crm_statuses() == [ChangeOrderStatus.APPLIED]


async def test_an_erp_correction_refused_voids_the_billing_correction_and_undoes_the_rest(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders(fail_erp="tryton: the period is closed")
    change = retroactive(systems)
    key = f"change-order:salesforce:{change.id}"
    async with systems.worker(temporal_client, task_queue):
        run = await start_invoice_run(temporal_client, task_queue)
        systems.corrected_drafts["INV-2"] = draft_id_of(run)
        handle = await start_change_order(temporal_client, task_queue, change)
        await wait_until(handle, lambda s: s.pending_approval is not None)
        await handle.execute_update(DECIDE, approve(), result_type=ApprovalAck)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        status = await status_of(handle)
        heard = await told(run)
        await run.terminate("test over")

    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ChangeOrderFailed"
    assert cause.message.startswith("correct_erp_invoices: ")
    assert "the period is closed" in cause.message
    # Undone newest first: the billing correction, the plan, the version, the PSA; then the CRM.
    assert [n for n in systems.sequence if n in CORRECTION_STEPS] == [
        "apply_psa_terms",
        "record_contract",
        "update_billing_plan",
        "correct_billing_invoice",
        "correct_erp_invoice",
        "void_billing_correction",
        "restore_billing_plan",
        "remove_contract_version",
        "restore_psa_terms",
        "write_back_change_order",
    ]
    [void] = systems.called("void_billing_correction")
    assert void.correction == BillingCorrection(
        credit_note_id="cn_INV-2", rebill_invoice_id="in_INV-2_rebill", rebill_number="INV-2-R1"
    )
    assert void.idempotency_key == f"{key}:correct:INV-2:void"
    [plan] = systems.called("restore_billing_plan")
    assert (plan.before, plan.idempotency_key) == ("plan v1", f"{key}:plan:undo")
    [removed] = systems.called("remove_contract_version")
    assert (removed.version, removed.source) == (2, key)
    [restored] = systems.called("restore_psa_terms")
    assert (restored.project_id, restored.idempotency_key) == ("42", key)
    [written] = systems.called("write_back_change_order")
    assert written.status is ChangeOrderStatus.FAILED
    assert "the period is closed" in (written.message or "")
    assert not systems.called("record_correction") and not systems.called("write_back_deal")
    # The invoice's run still follows the invoice: nothing corrected it.
    assert heard.corrected == []
    assert status.step == ChangeOrderStep.FAILED


async def test_a_draft_awaiting_approval_has_its_run_told_the_contract_changed_once(
    temporal_client: Client, task_queue: str
):
    systems = FakeChangeOrders()
    change = systems.add(change_order(opportunity_id=new_deal()))
    async with systems.worker(temporal_client, task_queue):
        run = await start_invoice_run(temporal_client, task_queue, period="2027-01")
        systems.draft_runs[draft_id_of(run)] = run.id
        handle = await start_change_order(temporal_client, task_queue, change)
        result = await handle.result()
        heard = await told_until(run, lambda t: bool(t.contract_changed))
        history = await handle.fetch_history()
        await run.terminate("test over")

    assert result.status == ChangeOrderStep.APPLIED and result.contract_version == 2
    assert heard.contract_changed == [
        ContractChanged(change_order=change.key, version=2, effective_from=change.effective_date)
    ]
    assert heard.corrected == []
    signalled = [
        e.signal_external_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.HasField("signal_external_workflow_execution_initiated_event_attributes")
    ]
    # Once: the deal's queue is told the run finished; the invoice run, only that.
    assert [(s.signal_name, s.workflow_execution.workflow_id) for s in signalled] == [
        ("contract_changed", run.id),
        ("finished", queue_workflow_id(change.crm, change.opportunity_id)),
    ]
