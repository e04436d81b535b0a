"""Time-to-invoice: a project's billing period becomes a paid invoice, with finance in control.

One run per project and period (`time-to-invoice:<psa project id>:<YYYY-MM>`), started by the
billing schedule, by a milestone-completed event, or from the CLI. The run pulls the period's
approved, unbilled time from the PSA and rates it (page by page, outside the workflow's
history), holds the draft for finance (approve, reject, adjust), then creates and finalizes
the invoice in billing, posts the matching receivable in the ERP, marks the time billed in
the PSA, reports to the CRM and follows the invoice until it is paid.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.approvals import ApprovalDecision as ApprovalDecision
from workflows.approvals import Decision as Decision

with workflow.unsafe.imports_passed_through():
    # The draft as finance sees and adjusts it; one class for the workflow and its activities.
    from canonical import DraftView, InvoiceAdjustment

LIFECYCLE = "time-to-invoice"


def workflow_id(project_id: str, period: str) -> str:
    """The business key: one invoice run per project and billing period."""
    return f"{LIFECYCLE}:{project_id}:{period}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeToInvoiceInput(_Message):
    project_id: str = Field(min_length=1, max_length=64)  # the PSA's project id
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")  # "2026-11"
    trigger: str | None = None


class InvoiceStep(StrEnum):
    LOAD_CONTRACT = "load_contract"
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    BILLING_INVOICE = "billing_invoice"
    ERP_POSTING = "erp_posting"
    MARK_BILLED = "mark_billed"
    CRM_UPDATE = "crm_update"
    AWAITING_PAYMENT = "awaiting_payment"
    RECORD_PAYMENT = "record_payment"
    COMPENSATING = "compensating"
    PAID = "paid"
    NOTHING_TO_INVOICE = "nothing_to_invoice"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


class PaymentEvent(_Message):
    """What billing told q2c about the invoice (from its webhook): the `payment` signal."""

    event_id: str
    kind: str  # "paid" or "payment_failed"
    billing_invoice_id: str
    amount: Decimal | None = None  # in the invoice's currency, for "paid"
    occurred_at: datetime
    reason: str | None = None  # why a payment failed


class InvoiceRecord(_Message):
    """A decision or adjustment as the run recorded it."""

    what: str  # "approve", "reject", "adjust"
    approver: str
    reason: str
    at: datetime
    via: str  # "signal" or "update"
    accepted: bool
    ignored_because: str | None = None


class InvoiceStatus(_Message):
    """The `status` query."""

    workflow_id: str
    project_id: str
    period: str
    step: InvoiceStep
    customer_name: str | None = None
    draft: DraftView | None = None
    pending_since: datetime | None = None
    billing_invoice_id: str | None = None
    invoice_number: str | None = None
    erp_invoice_id: str | None = None
    due_date: date | None = None
    records: list[InvoiceRecord] = Field(default_factory=list)
    payments: list[PaymentEvent] = Field(default_factory=list)
    last_error: str | None = None


class DecisionAck(_Message):
    what: str
    approver: str
    step: InvoiceStep
    total: Decimal | None = None


class TimeToInvoiceResult(_Message):
    status: InvoiceStep  # PAID, NOTHING_TO_INVOICE, REJECTED or EXPIRED (failures raise)
    invoice_number: str | None = None
    total: Decimal | None = None
    currency: str | None = None
    message: str


# Message names, shared with the CLI and the service.
DECIDE = "decide"  # signal and update
ADJUST = "adjust"  # signal and update
PAYMENT = "payment"  # signal (from billing's webhooks)
STATUS = "status"  # query
#: Billing invoice metadata naming the run, so a payment webhook finds its run.
BILLING_METADATA_KEY = "q2c_workflow_id"


# --------------------------------------------------------------------------- the workflow

with workflow.unsafe.imports_passed_through():
    from activities.billing import (
        BillingActivities,
        CreateBillingInvoiceInput,
        FinalizeBillingInvoiceInput,
        VoidBillingInvoiceInput,
    )
    from activities.crm import CrmActivities, CrmInvoiceInput
    from activities.deal import DealActivities, DealPolicyInput
    from activities.erp import (
        DiscardErpDraftInput,
        ErpActivities,
        PostErpInvoiceInput,
        RecordErpPaymentInput,
    )
    from activities.invoicing import (
        AdjustInput,
        ContractContext,
        DraftInput,
        InvoicingActivities,
        LoadContractInput,
    )
    from activities.psa import PsaActivities, TimeBillingInput
    from canonical import DealPolicy
    from workflows import presets
    from workflows import search_attributes as sa
    from workflows._lifecycle import LifecycleSteps, StepFailed, reason_of

#: A period's draft may page through tens of thousands of entries: beat at least this often.
DRAFT_CALL = presets.CallOptions(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=presets.SYSTEM_CALL["retry_policy"],
)
DRAFT_HEARTBEAT = timedelta(seconds=60)
#: After the due date passes, how often the run reminds that the invoice is unpaid.
OVERDUE_REMINDER_EVERY = timedelta(days=7)


@workflow.defn
class TimeToInvoiceWorkflow(LifecycleSteps):
    LIFECYCLE = LIFECYCLE

    @workflow.init
    def __init__(self, request: TimeToInvoiceInput) -> None:
        self._request = request
        self._correlation_id: str | None = None
        self._step = InvoiceStep.LOAD_CONTRACT
        self._last_error: str | None = None
        self._policy: DealPolicy | None = None
        self._context: ContractContext | None = None
        self._draft: DraftView | None = None
        self._pending_since: datetime | None = None
        self._decision: InvoiceRecord | None = None
        self._adjusting = 0
        self._records: list[InvoiceRecord] = []
        self._payments: list[PaymentEvent] = []
        self._billing_invoice_id: str | None = None
        self._invoice_number: str | None = None
        self._erp_invoice_id: str | None = None
        self._due_date: date | None = None
        self._compensations: list[tuple[str, Any]] = []

    @property
    def _draft_id(self) -> str:
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: TimeToInvoiceInput) -> TimeToInvoiceResult:
        workflow.upsert_search_attributes([sa.LIFECYCLE.value_set(LIFECYCLE)])
        await self._audit("start", "started", detail={"trigger": request.trigger})
        try:
            result = await self._invoice()
        except StepFailed as failure:
            await self._fail(failure)
            raise ApplicationError(
                f"{failure.step}: {failure.reason}", type="InvoicingFailed", non_retryable=True
            ) from None
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _invoice(self) -> TimeToInvoiceResult:
        request = self._request
        self._policy = await self._call(
            InvoiceStep.LOAD_CONTRACT,
            DealActivities.deal_policy,
            DealPolicyInput(crm="salesforce"),
            presets.LOCAL_CALL,
        )
        context = await self._call(
            InvoiceStep.LOAD_CONTRACT,
            InvoicingActivities.load_billing_contract,
            LoadContractInput(project_id=request.project_id),
        )
        self._context = context
        contract = context.contract
        self._correlation_id = context.opportunity_id or f"project:{contract.project_id}"
        workflow.upsert_search_attributes(
            [
                sa.CORRELATION_ID.value_set(self._correlation_id),
                sa.CUSTOMER.value_set(contract.customer_name),
            ]
        )

        self._set_step(InvoiceStep.DRAFT)
        try:
            self._draft = await workflow.execute_activity_method(
                InvoicingActivities.draft_invoice,
                DraftInput(
                    draft_id=self._draft_id,
                    workflow_id=workflow.info().workflow_id,
                    period=request.period,
                    context=context,
                ),
                heartbeat_timeout=DRAFT_HEARTBEAT,
                **DRAFT_CALL,
            )
        except ActivityError as exc:
            raise StepFailed(InvoiceStep.DRAFT, reason_of(exc)) from exc
        draft = self._draft
        await self._audit(
            InvoiceStep.DRAFT,
            "drafted",
            detail={"total": str(draft.total), "entries": draft.time_entries},
        )
        if not draft.lines:
            self._set_step(InvoiceStep.NOTHING_TO_INVOICE)
            return TimeToInvoiceResult(
                status=InvoiceStep.NOTHING_TO_INVOICE,
                message=f"nothing to invoice for project {request.project_id} in {request.period}",
            )

        decision = await self._approval(self._policy)
        if decision is None or decision.what == Decision.REJECT:
            return await self._declined(decision)
        return await self._bill(context)

    async def _bill(self, context: ContractContext) -> TimeToInvoiceResult:
        contract = context.contract
        wid = workflow.info().workflow_id
        self._set_step(InvoiceStep.BILLING_INVOICE)
        created = await self._call(
            InvoiceStep.BILLING_INVOICE,
            BillingActivities.create_billing_invoice,
            CreateBillingInvoiceInput(
                draft_id=self._draft_id,
                billing_customer_id=context.billing_customer_id,
                metadata={BILLING_METADATA_KEY: wid},
                days_until_due=contract.payment_terms.net_days,
                idempotency_key=self._key("billing_invoice"),
            ),
        )
        self._billing_invoice_id = created.billing_invoice_id
        final = await self._call(
            InvoiceStep.BILLING_INVOICE,
            BillingActivities.finalize_billing_invoice,
            FinalizeBillingInvoiceInput(
                draft_id=self._draft_id,
                billing_invoice_id=created.billing_invoice_id,
                idempotency_key=self._key("finalize"),
            ),
        )
        self._invoice_number = final.number
        self._due_date = final.due_date
        self._compensations.append(("void billing invoice", created.billing_invoice_id))
        self._compensations.append(("return time to unbilled", self._draft_id))
        await self._audit(
            InvoiceStep.BILLING_INVOICE,
            "finalized",
            system="billing",
            detail={"invoice": final.billing_invoice_id, "number": final.number},
        )

        self._set_step(InvoiceStep.ERP_POSTING)
        self._compensations.append(("discard ERP draft", self._draft_id))
        posted = await self._call(
            InvoiceStep.ERP_POSTING,
            ErpActivities.post_erp_invoice,
            PostErpInvoiceInput(
                draft_id=self._draft_id,
                erp_customer_id=context.erp_customer_id,
                reference=final.number,
                payment_net_days=contract.payment_terms.net_days,
                idempotency_key=self._key("erp_invoice"),
            ),
        )
        self._erp_invoice_id = posted.erp_invoice_id
        # Billing and the ERP agree from here on: no more undoing, only reporting.
        self._compensations.clear()
        await self._audit(
            InvoiceStep.ERP_POSTING,
            "posted",
            system="erp",
            detail={"erp_invoice": posted.erp_invoice_id, "number": posted.number},
        )

        self._set_step(InvoiceStep.MARK_BILLED)
        marked = await self._call(
            InvoiceStep.MARK_BILLED,
            PsaActivities.mark_time_billed,
            TimeBillingInput(draft_id=self._draft_id),
            DRAFT_CALL,
        )
        await self._audit(
            InvoiceStep.MARK_BILLED, "marked", system="psa", detail={"entries": marked}
        )
        await self._report_to_crm("open", final.total)

        return await self._follow_payment(final.total, final.currency)

    # -- payment ----------------------------------------------------------------------------

    async def _follow_payment(self, total: Decimal, currency: str) -> TimeToInvoiceResult:
        self._set_step(InvoiceStep.AWAITING_PAYMENT)
        due = self._due_date
        reminders = 0
        seen = 0
        while True:
            next_check = (
                datetime.combine(due, time.max, tzinfo=UTC) + OVERDUE_REMINDER_EVERY * reminders
                if due
                else None
            )
            timeout = (next_check - workflow.now()) if next_check else None
            try:
                await workflow.wait_condition(
                    lambda: len(self._payments) > seen,  # noqa: B023 (awaited in this iteration)
                    timeout=timeout if timeout is None or timeout > timedelta(0) else timedelta(0),
                )
            except TimeoutError:
                reminders += 1
                await self._record_exception(
                    f"overdue:{reminders}",
                    kind="invoice_overdue",
                    message=(
                        f"Invoice {self._invoice_number} to {self._customer_name()} for "
                        f"{total} {currency} is unpaid past its due date {due}"
                    ),
                    step=InvoiceStep.AWAITING_PAYMENT,
                    detail={"customer": self._customer_name(), "amount": str(total)},
                )
                continue
            for event in self._payments[seen:]:
                seen += 1
                if event.kind == "paid":
                    return await self._paid(event, total, currency)
                await self._record_exception(
                    f"payment-failed:{event.event_id}",
                    kind="payment_failed",
                    message=(
                        f"Payment of invoice {self._invoice_number} ({self._customer_name()}, "
                        f"{total} {currency}) failed: {event.reason or 'no reason given'}"
                    ),
                    step=InvoiceStep.AWAITING_PAYMENT,
                )
                await self._report_to_crm("payment_failed", total)

    async def _paid(
        self, event: PaymentEvent, total: Decimal, currency: str
    ) -> TimeToInvoiceResult:
        self._set_step(InvoiceStep.RECORD_PAYMENT)
        assert self._erp_invoice_id is not None
        await self._call(
            InvoiceStep.RECORD_PAYMENT,
            ErpActivities.record_erp_payment,
            RecordErpPaymentInput(
                draft_id=self._draft_id,
                erp_invoice_id=self._erp_invoice_id,
                amount=event.amount if event.amount is not None else total,
                currency=currency,
                paid_on=event.occurred_at.date(),
                reference=event.event_id,
                idempotency_key=self._key("payment"),
            ),
        )
        await self._report_to_crm("paid", total)
        await self._audit(
            InvoiceStep.RECORD_PAYMENT, "paid", system="erp", detail={"event": event.event_id}
        )
        self._set_step(InvoiceStep.PAID)
        return TimeToInvoiceResult(
            status=InvoiceStep.PAID,
            invoice_number=self._invoice_number,
            total=total,
            currency=currency,
            message=f"invoice {self._invoice_number} paid",
        )

    async def _report_to_crm(self, status: str, total: Decimal) -> None:
        context = self._context
        if context is None or context.crm is None or context.opportunity_id is None:
            return
        assert self._invoice_number is not None
        await self._call(
            InvoiceStep.CRM_UPDATE,
            CrmActivities.write_invoice_status,
            CrmInvoiceInput(
                crm=context.crm,
                opportunity_id=context.opportunity_id,
                number=self._invoice_number,
                amount=total,
                currency=context.contract.currency,
                status=status,
            ),
        )

    def _customer_name(self) -> str:
        return self._context.contract.customer_name if self._context else "?"

    # -- finance ----------------------------------------------------------------------------

    async def _approval(self, policy: DealPolicy) -> InvoiceRecord | None:
        approval = policy.approval
        self._pending_since = workflow.now()
        self._set_step(InvoiceStep.AWAITING_APPROVAL)
        expires = self._pending_since + approval.expire_after
        reminders = 0
        while True:
            if self._decision is not None and not self._adjusting:
                break
            now = workflow.now()
            if now >= expires:
                break
            remind = self._pending_since + approval.remind_after * (reminders + 1)
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None and not self._adjusting,
                    timeout=max(min(remind, expires) - now, timedelta(0)),
                )
            except TimeoutError:
                if workflow.now() >= expires:
                    break
                reminders += 1
                assert self._draft is not None
                await self._record_exception(
                    f"approval-reminder:{reminders}",
                    kind="invoice_approval_overdue",
                    message=(
                        f"Draft invoice for project {self._request.project_id} "
                        f"({self._customer_name()}, {self._request.period}, {self._draft.total} "
                        f"{self._draft.currency}) waits for finance (reminder {reminders})"
                    ),
                    step=InvoiceStep.AWAITING_APPROVAL,
                )
        self._pending_since = None
        return self._decision

    async def _declined(self, decision: InvoiceRecord | None) -> TimeToInvoiceResult:
        step = InvoiceStep.REJECTED if decision is not None else InvoiceStep.EXPIRED
        message = (
            f"rejected by {decision.approver}: {decision.reason}; the time stays unbilled"
            if decision is not None
            else "finance approval expired; the time stays unbilled"
        )
        await self._audit(step, step.value, detail={"message": message})
        if decision is None:
            await self._record_exception(
                "approval-expired",
                kind="invoice_approval_expired",
                message=f"Project {self._request.project_id} {self._request.period}: {message}",
                step=InvoiceStep.AWAITING_APPROVAL,
            )
        self._set_step(step)
        return TimeToInvoiceResult(status=step, message=message)

    def _refusal(self, approver: str) -> str | None:
        if self._pending_since is None or self._decision is not None:
            return f"no draft is waiting for finance (step {self._step})"
        if self._policy is None or not self._policy.approval.may_decide(approver):
            return f"{approver} is not on the finance approvers list"
        return None

    def _record(self, what: str, approver: str, reason: str, via: str) -> InvoiceRecord:
        problem = self._refusal(approver)
        record = InvoiceRecord(
            what=what,
            approver=approver,
            reason=reason,
            at=workflow.now(),
            via=via,
            accepted=problem is None,
            ignored_because=problem,
        )
        self._records.append(record)
        return record

    def _decide(self, decision: ApprovalDecision, via: str) -> InvoiceRecord:
        record = self._record(decision.decision.value, decision.approver, decision.reason, via)
        if record.accepted:
            self._decision = record
        return record

    async def _adjust(self, adjustment: InvoiceAdjustment, via: str) -> InvoiceRecord:
        record = self._record("adjust", adjustment.approver, adjustment.reason, via)
        if not record.accepted:
            return record
        self._adjusting += 1
        try:
            self._draft = await workflow.execute_activity_method(
                InvoicingActivities.adjust_draft,
                AdjustInput(draft_id=self._draft_id, adjustment=adjustment),
                **presets.LOCAL_CALL,
            )
        except ActivityError as exc:
            refused = record.model_copy(
                update={"accepted": False, "ignored_because": reason_of(exc)}
            )
            self._records[self._records.index(record)] = refused
            raise ApplicationError(reason_of(exc), type="InvalidAdjustment") from exc
        finally:
            self._adjusting -= 1
        return record

    @workflow.signal(name=DECIDE)
    def decide_by_signal(self, decision: ApprovalDecision) -> None:
        self._decide(decision, "signal")

    @workflow.update(name=DECIDE)
    def decide_by_update(self, decision: ApprovalDecision) -> DecisionAck:
        record = self._decide(decision, "update")
        return DecisionAck(what=record.what, approver=record.approver, step=self._step)

    @decide_by_update.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if (problem := self._refusal(decision.approver)) is not None:
            raise ValueError(problem)

    @workflow.signal(name=ADJUST)
    async def adjust_by_signal(self, adjustment: InvoiceAdjustment) -> None:
        try:
            await self._adjust(adjustment, "signal")
        except ApplicationError as exc:
            workflow.logger.warning("adjustment refused: %s", exc)

    @workflow.update(name=ADJUST)
    async def adjust_by_update(self, adjustment: InvoiceAdjustment) -> DecisionAck:
        record = await self._adjust(adjustment, "update")
        return DecisionAck(
            what=record.what,
            approver=record.approver,
            step=self._step,
            total=self._draft.total if self._draft else None,
        )

    @adjust_by_update.validator
    def _validate_adjustment(self, adjustment: InvoiceAdjustment) -> None:
        if (problem := self._refusal(adjustment.approver)) is not None:
            raise ValueError(problem)
        if self._draft is not None:
            asked = sum((line.amount for line in adjustment.lines), Decimal(0))
            if asked > self._draft.subtotal:
                raise ValueError(
                    f"adjustment of {asked} exceeds the draft's net {self._draft.subtotal} "
                    f"{self._draft.currency}"
                )

    @workflow.signal(name=PAYMENT)
    def payment(self, event: PaymentEvent) -> None:
        """From billing's webhooks; a redelivered event is ignored."""
        if event.billing_invoice_id != self._billing_invoice_id:
            workflow.logger.warning("payment event for another invoice ignored: %s", event)
            return
        if any(p.event_id == event.event_id for p in self._payments):
            return
        self._payments.append(event)

    @workflow.query(name=STATUS)
    def status(self) -> InvoiceStatus:
        return InvoiceStatus(
            workflow_id=workflow.info().workflow_id,
            project_id=self._request.project_id,
            period=self._request.period,
            step=self._step,
            customer_name=self._context.contract.customer_name if self._context else None,
            draft=self._draft,
            pending_since=self._pending_since,
            billing_invoice_id=self._billing_invoice_id,
            invoice_number=self._invoice_number,
            erp_invoice_id=self._erp_invoice_id,
            due_date=self._due_date,
            records=list(self._records),
            payments=list(self._payments),
            last_error=self._last_error,
        )

    # -- failure ----------------------------------------------------------------------------

    async def _fail(self, failure: StepFailed) -> None:
        """ERP posting failed after billing finalized: void the invoice, return the time to
        unbilled; never leave billing and the ERP disagreeing silently."""
        self._last_error = f"{failure.step}: {failure.reason}"
        undone: list[str] = []
        not_undone: list[str] = []
        if self._compensations:
            self._set_step(InvoiceStep.COMPENSATING)
        for name, target in reversed(self._compensations):
            try:
                if name == "discard ERP draft":
                    await workflow.execute_activity_method(
                        ErpActivities.discard_erp_draft,
                        DiscardErpDraftInput(draft_id=target),
                        **presets.COMPENSATION,
                    )
                elif name == "void billing invoice":
                    await workflow.execute_activity_method(
                        BillingActivities.void_billing_invoice,
                        VoidBillingInvoiceInput(
                            draft_id=self._draft_id,
                            billing_invoice_id=target,
                            reason=self._last_error,
                            idempotency_key=self._key("void"),
                        ),
                        **presets.COMPENSATION,
                    )
                else:
                    await workflow.execute_activity_method(
                        PsaActivities.unmark_time_billed,
                        TimeBillingInput(draft_id=target),
                        **presets.COMPENSATION,
                    )
                undone.append(name)
            except ActivityError as exc:
                not_undone.append(f"{name}: {reason_of(exc)}")
        self._set_step(InvoiceStep.FAILED)
        message = (
            f"Invoicing project {self._request.project_id} for {self._request.period} failed "
            f"at {failure.step}: {failure.reason}"
        )
        if undone:
            message += f". Undone: {', '.join(undone)}"
        if not_undone:
            message += f". NOT undone: {'; '.join(not_undone)}"
        await self._record_exception(
            "failed",
            kind="invoicing_failed",
            message=message,
            step=failure.step,
            detail={
                "billing_invoice": self._billing_invoice_id,
                "number": self._invoice_number,
                "undone": undone,
                "not_undone": not_undone,
            },
        )
