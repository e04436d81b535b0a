"""Time-to-invoice: a project's billing period becomes a paid invoice, with finance in control.

One run per project and period (`time-to-invoice:<psa project id>:<YYYY-MM>`), started by the
billing schedule, by a milestone-completed event, or from the CLI. The run pulls the period's
approved, unbilled time from the PSA and rates it (page by page, outside the workflow's
history), holds the draft for finance (approve, reject, adjust), then creates and finalizes
the invoice in billing, posts the matching receivable in the ERP, marks the time billed in
the PSA, reports to the CRM and follows the invoice until it is paid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from pydantic import Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.approvals import ApprovalDecision as ApprovalDecision
from workflows.approvals import Decision as Decision
from workflows.approvals import DecisionRecord, Message

with workflow.unsafe.imports_passed_through():
    # The draft as finance sees and adjusts it; one class for the workflow and its activities.
    from canonical import DraftView, InvoiceAdjustment

LIFECYCLE = "time-to-invoice"
R = TypeVar("R")


def workflow_id(project_id: str, period: str) -> str:
    """The business key: one invoice run per project and billing period."""
    return f"{LIFECYCLE}:{project_id}:{period}"


def upfront_workflow_id(project_id: str) -> str:
    """The business key of a project's upfront invoice: one per project, ever."""
    return f"{LIFECYCLE}:{project_id}:upfront"


class InvoiceKind(StrEnum):
    PERIOD = "period"  # a month's time, fees due, milestones done and expenses
    UPFRONT = "upfront"  # the fixed fees' upfront shares, invoiced at provisioning


#: Messages accept an added field during a rolling deploy (`Message`: extra="ignore").
_Message = Message


class TimeToInvoiceInput(_Message):
    project_id: str = Field(min_length=1, max_length=64)  # the PSA's project id
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")  # "2026-11"
    trigger: str | None = None
    kind: InvoiceKind = InvoiceKind.PERIOD
    #: How long after the due date the run follows an unpaid invoice before it ends with
    #: an exception for finance (the default is `PAYMENT_FOLLOW_UP`).
    payment_follow_up_days: int | None = Field(default=None, ge=0, le=3650)


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
    AWAITING_OPERATOR = "awaiting_operator"  # a system stayed down past its deadline
    PAID = "paid"
    VOIDED = "voided"
    UNCOLLECTIBLE = "uncollectible"
    UNPAID = "unpaid"  # followed past the due date for the configured time, never paid
    NOTHING_TO_INVOICE = "nothing_to_invoice"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PaymentEvent(_Message):
    """What billing told q2c about the invoice (from its webhook): the `payment` signal."""

    event_id: str
    kind: str  # "paid", "payment_failed", "voided" or "uncollectible"
    billing_invoice_id: str
    amount: Decimal | None = None  # in the invoice's currency, for "paid"
    occurred_at: datetime
    reason: str | None = None  # why a payment failed


#: A decision or adjustment as the run recorded it (`ref`: an adjustment's id).
InvoiceRecord = DecisionRecord


class ContractChanged(_Message):
    """A change order made a new version of the project's contract: the `contract_changed`
    signal, sent by the change-order run after it recorded the version in q2c's store."""

    change_order: str = Field(min_length=3, max_length=255)  # "<crm>:<change order id>"
    version: int = Field(ge=1)  # the contract version the change order made
    effective_from: date


class Rerate(_Message):
    """A `contract_changed` signal as the run took it: the draft re-rated (its total before
    and after), or recorded and ignored (`ignored_because`), like a refused decision."""

    change_order: str
    version: int
    effective_from: date
    at: datetime
    rerated: bool
    currency: str | None = None
    total_before: Decimal | None = None
    total_after: Decimal | None = None
    #: Finance's adjustments the re-rated draft could not take ("<id>: why"). The others
    #: were applied again to the re-rated draft.
    dropped_adjustments: list[str] = Field(default_factory=list)
    ignored_because: str | None = None


class InvoiceCorrected(_Message):
    """A change order corrected the issued invoice (it reached back into its period): a
    credit note on the invoice, which stays as it was, and a re-bill at the amended terms.
    The `invoice_corrected` signal; from then on the run follows the re-bill's payment."""

    change_order: str = Field(min_length=3, max_length=255)
    credit_note_id: str | None = None
    rebill_invoice_id: str | None = None
    rebill_number: str | None = None
    rebill_total: Decimal | None = None
    currency: str | None = None
    erp_credit_note_id: str | None = None
    erp_rebill_id: str | None = None
    #: Set by the run: when it took the signal, and whether it now follows the re-bill.
    at: datetime | None = None
    followed: bool = False


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
    #: The system the run waits on while it is down (an outage), if any.
    waiting_on: str | None = None
    #: Numbers of the period's earlier invoices when this run bills a supplementary one.
    supplementary_to: list[str] = Field(default_factory=list)
    #: What went wrong after the invoice was issued (recorded as exceptions; the run goes on).
    issues: list[str] = Field(default_factory=list)
    #: Change orders that reached the run: the draft re-rated while finance had it, or not.
    rerates: list[Rerate] = Field(default_factory=list)
    #: Change orders that corrected the issued invoice by credit note and re-bill.
    corrections: list[InvoiceCorrected] = Field(default_factory=list)


class DecisionAck(_Message):
    what: str
    approver: str
    step: InvoiceStep
    total: Decimal | None = None
    adjustment_id: str | None = None
    #: The adjustment had been applied before: this delivery changed nothing.
    duplicate: bool = False


class TimeToInvoiceResult(_Message):
    #: PAID, VOIDED, UNCOLLECTIBLE, UNPAID, NOTHING_TO_INVOICE, REJECTED or EXPIRED
    #: (failures raise)
    status: InvoiceStep
    invoice_number: str | None = None
    total: Decimal | None = None
    currency: str | None = None
    message: str


# Message names, shared with the CLI and the service.
DECIDE = "decide"  # signal and update
ADJUST = "adjust"  # signal and update
PAYMENT = "payment"  # signal (from billing's webhooks)
STATUS = "status"  # query
CONTRACT_CHANGED = "contract_changed"  # signal (from a change-order run)
INVOICE_CORRECTED = "invoice_corrected"  # signal (from a change-order run)
#: Runs recorded before the run took `contract_changed` replay without acting on it.
RERATE_PATCH = "rerate-on-contract-change"
#: Billing invoice metadata naming the run, so a payment webhook finds its run.
BILLING_METADATA_KEY = "q2c_workflow_id"
#: ... and the run itself: a period run again has the same workflow id.
BILLING_RUN_METADATA_KEY = "q2c_run_id"
#: After the due date, how long an unpaid invoice is followed before the run ends.
PAYMENT_FOLLOW_UP = timedelta(days=90)


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
        CreditErpInvoiceInput,
        DiscardErpDraftInput,
        ErpActivities,
        PostErpInvoiceInput,
        RecordErpPaymentInput,
    )
    from activities.invoicing import (
        AdjustInput,
        ContractContext,
        DraftInput,
        DraftStatusInput,
        InvoicingActivities,
        LoadContractInput,
    )
    from activities.psa import PsaActivities, TimeBillingInput
    from canonical import DealPolicy
    from workflows import search_attributes as sa
    from workflows._lifecycle import (
        Ending,
        Lifecycle,
        StepFailed,
        outcome_message,
    )
    from workflows.approvals import ApprovalGate, AwaitsApproval, PendingApproval
    from workflows.queues import SystemQueue

#: A period's draft may page through tens of thousands of entries: beat at least this often.
DRAFT_ATTEMPT = timedelta(minutes=10)
DRAFT_HEARTBEAT = timedelta(seconds=60)
#: After the due date passes, how often the run reminds that the invoice is unpaid.
OVERDUE_REMINDER_EVERY = timedelta(days=7)

TRYTON = SystemQueue.TRYTON
STRIPE = SystemQueue.STRIPE
SALESFORCE = SystemQueue.SALESFORCE


def adjustment_key(adjustment: InvoiceAdjustment) -> str:
    """The id an adjustment is applied once under: its own, or one made from its content
    (a message from a caller that sends no id)."""
    if adjustment.adjustment_id is not None:
        return adjustment.adjustment_id
    content = adjustment.model_dump_json(exclude={"adjustment_id"}).encode()
    return "content-" + hashlib.sha256(content).hexdigest()[:32]


@workflow.defn
class TimeToInvoiceWorkflow(Lifecycle, AwaitsApproval):
    LIFECYCLE = LIFECYCLE
    FAILURE_TYPE = "InvoicingFailed"

    @workflow.init
    def __init__(self, request: TimeToInvoiceInput) -> None:
        self._init_lifecycle()
        self._approval = ApprovalGate()
        self._request = request
        info = workflow.info()
        #: One draft per run: every key that protects the draft or its invoice derives from
        #: it, so a later run of the same period never meets this run's keys.
        self._draft_id = f"{info.workflow_id}/{info.run_id}"
        self._correlation_id: str | None = None
        self._step = InvoiceStep.LOAD_CONTRACT
        self._policy: DealPolicy | None = None
        self._context: ContractContext | None = None
        self._draft: DraftView | None = None
        self._adjustments_seen: set[str] = set()
        self._adjustments_in_flight: set[str] = set()
        #: Change orders that reached the run, and those (change order, version) re-rating now.
        self._rerates: list[Rerate] = []
        self._rerates_in_flight: set[tuple[str, int]] = set()
        #: A re-draft replaces the stored draft whole: no adjustment is applied meanwhile.
        self._redrafting = False
        self._payments: list[PaymentEvent] = []
        self._corrections: list[InvoiceCorrected] = []
        #: What the customer owes once a change order re-billed the invoice (None: its total).
        self._payable: Decimal | None = None
        self._billing_invoice_id: str | None = None
        self._invoice_number: str | None = None
        self._erp_invoice_id: str | None = None
        self._due_date: date | None = None
        #: What went wrong after the invoice was issued: recorded, and the run went on.
        self._issues: list[str] = []

    # -- the run ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, request: TimeToInvoiceInput) -> TimeToInvoiceResult:
        workflow.upsert_search_attributes([sa.LIFECYCLE.value_set(LIFECYCLE)])
        await self.audit("start", "started", detail={"trigger": request.trigger})
        result = await self.guarded(self._invoice(), self._report_ending)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _invoice(self) -> TimeToInvoiceResult:
        request = self._request
        self._policy = await self.local(
            InvoiceStep.LOAD_CONTRACT, DealActivities.deal_policy, DealPolicyInput(crm="salesforce")
        )
        self._outages = self._policy.outage
        context = await self.call(
            InvoiceStep.LOAD_CONTRACT,
            InvoicingActivities.load_billing_contract,
            LoadContractInput(project_id=request.project_id),
            system=TRYTON,
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
        draft = await self.call(
            InvoiceStep.DRAFT,
            InvoicingActivities.draft_invoice,
            DraftInput(
                draft_id=self._draft_id,
                workflow_id=workflow.info().workflow_id,
                period=request.period,
                context=context,
                kind=request.kind.value,
            ),
            system=TRYTON,
            start_to_close=DRAFT_ATTEMPT,
            heartbeat=DRAFT_HEARTBEAT,
            notice_after=DRAFT_ATTEMPT,
        )
        self._draft = draft
        await self.audit(
            InvoiceStep.DRAFT,
            "drafted",
            detail={
                "total": str(draft.total),
                "entries": draft.time_entries,
                "supplementary_to": draft.supplementary_to,
            },
        )
        if not draft.lines:
            self._set_step(InvoiceStep.NOTHING_TO_INVOICE)
            already = (
                f" (time billed on {', '.join(draft.supplementary_to)})"
                if draft.supplementary_to
                else ""
            )
            return TimeToInvoiceResult(
                status=InvoiceStep.NOTHING_TO_INVOICE,
                message=(
                    f"nothing to invoice for project {request.project_id} in "
                    f"{request.period}{already}"
                ),
            )

        self._approval.open(self._policy.approval, [f"draft invoice {draft.total}"])
        self._set_step(InvoiceStep.AWAITING_APPROVAL)
        decision = await self._approval.wait(self._remind)
        if decision is None or decision.what == Decision.REJECT:
            return await self._declined(decision)
        # A re-rate reloaded the contract: the invoice goes out on the terms it was rated on.
        return await self._bill(self._context or context)

    async def _bill(self, context: ContractContext) -> TimeToInvoiceResult:
        contract = context.contract
        info = workflow.info()
        self._set_step(InvoiceStep.BILLING_INVOICE)
        created = await self.call(
            InvoiceStep.BILLING_INVOICE,
            BillingActivities.create_billing_invoice,
            CreateBillingInvoiceInput(
                draft_id=self._draft_id,
                billing_customer_id=context.billing_customer_id,
                metadata={
                    BILLING_METADATA_KEY: info.workflow_id,
                    BILLING_RUN_METADATA_KEY: info.run_id,
                },
                days_until_due=contract.payment_terms.net_days,
                idempotency_key=f"{self._draft_id}:billing-invoice",
            ),
            system=STRIPE,
        )
        billing_invoice_id = created.billing_invoice_id
        self._billing_invoice_id = billing_invoice_id
        # Registered before finalize: whatever finalize leaves behind (an open invoice whose
        # total disagrees, a finalize that timed out) is voided, or deleted while a draft.
        self.saga.add("void billing invoice", lambda: self._void_billing(billing_invoice_id))
        final = await self.call(
            InvoiceStep.BILLING_INVOICE,
            BillingActivities.finalize_billing_invoice,
            FinalizeBillingInvoiceInput(
                draft_id=self._draft_id,
                billing_invoice_id=billing_invoice_id,
                idempotency_key=f"{billing_invoice_id}:finalize",
            ),
            system=STRIPE,
        )
        self._invoice_number = final.number
        self._due_date = final.due_date
        self.saga.add("return time to unbilled", self._unmark_time)
        await self.audit(
            InvoiceStep.BILLING_INVOICE,
            "finalized",
            system="billing",
            detail={"invoice": final.billing_invoice_id, "number": final.number},
        )

        self._set_step(InvoiceStep.ERP_POSTING)
        self.saga.add("discard ERP draft", self._discard_erp)
        posted = await self.call(
            InvoiceStep.ERP_POSTING,
            ErpActivities.post_erp_invoice,
            PostErpInvoiceInput(
                draft_id=self._draft_id,
                erp_customer_id=context.erp_customer_id,
                reference=final.number,
                payment_net_days=contract.payment_terms.net_days,
                idempotency_key=f"{self._draft_id}:erp-invoice",
            ),
            system=TRYTON,
        )
        self._erp_invoice_id = posted.erp_invoice_id
        # Billing and the ERP agree from here on: no more undoing, only reporting.
        self.saga.clear()
        await self.audit(
            InvoiceStep.ERP_POSTING,
            "posted",
            system="erp",
            detail={"erp_invoice": posted.erp_invoice_id, "number": posted.number},
        )

        self._set_step(InvoiceStep.MARK_BILLED)
        marked = await self._after_issue(
            InvoiceStep.MARK_BILLED,
            "mark the time billed in the PSA",
            self.call(
                InvoiceStep.MARK_BILLED,
                PsaActivities.mark_time_billed,
                TimeBillingInput(draft_id=self._draft_id),
                system=TRYTON,
                start_to_close=DRAFT_ATTEMPT,
                heartbeat=DRAFT_HEARTBEAT,
                notice_after=DRAFT_ATTEMPT,
            ),
        )
        if marked is not None:
            await self.audit(
                InvoiceStep.MARK_BILLED, "marked", system="psa", detail={"entries": marked}
            )
        self._set_step(InvoiceStep.CRM_UPDATE)
        await self._report_to_crm("open", final.total)

        return await self._follow_payment(final.total, final.currency)

    # -- after the invoice is issued -----------------------------------------------------------

    async def _after_issue(self, step: InvoiceStep, what: str, call: Awaitable[R]) -> R | None:
        """A step after the invoice is issued. A transient fault is waited out by the kit
        (and past its deadline a person retries it or gives it up); a permanent failure, or
        giving up, is recorded for a person and the run goes on following the payment: the
        invoice stands in billing and the ERP."""
        try:
            return await call
        except StepFailed as failure:
            self._issues.append(f"{step}: {failure.reason}")
            await self.record_exception(
                f"after-issue:{step}:{len(self._issues)}",
                kind="invoice_follow_up_failed",
                message=(
                    f"Invoice {self._invoice_number} ({self._customer_name()}) is issued, but "
                    f"q2c could not {what}: {failure.reason}. The run goes on; "
                    "do this step by hand."
                ),
                step=step,
            )
            return None

    # -- payment ----------------------------------------------------------------------------

    async def _follow_payment(self, total: Decimal, currency: str) -> TimeToInvoiceResult:
        self._set_step(InvoiceStep.AWAITING_PAYMENT)
        due = self._due_date
        follow_up = (
            timedelta(days=self._request.payment_follow_up_days)
            if self._request.payment_follow_up_days is not None
            else PAYMENT_FOLLOW_UP
        )
        give_up = datetime.combine(due, time.max, tzinfo=UTC) + follow_up if due else None
        reminders = 0
        seen = 0
        while True:
            next_check = (
                datetime.combine(due, time.max, tzinfo=UTC) + OVERDUE_REMINDER_EVERY * reminders
                if due
                else None
            )
            if next_check is not None and give_up is not None:
                next_check = min(next_check, give_up)
            timeout = (next_check - workflow.now()) if next_check else None
            try:
                await workflow.wait_condition(
                    lambda: len(self._payments) > seen,  # noqa: B023 (awaited in this iteration)
                    timeout=timeout if timeout is None or timeout > timedelta(0) else timedelta(0),
                )
            except TimeoutError:
                if give_up is not None and workflow.now() >= give_up:
                    return await self._unpaid(total, currency, follow_up)
                reminders += 1
                await self.record_exception(
                    f"overdue:{reminders}",
                    kind="invoice_overdue",
                    message=(
                        f"Invoice {self._invoice_number} to {self._customer_name()} for "
                        f"{total} {currency} is unpaid past its due date {due}"
                    ),
                    step=InvoiceStep.AWAITING_PAYMENT,
                )
                continue
            for event in self._payments[seen:]:
                seen += 1
                if event.billing_invoice_id != self._billing_invoice_id:
                    continue  # the invoice was corrected since: its re-bill is followed
                if self._payable is not None:
                    total = self._payable
                if event.kind == "paid" and event.amount == 0 and total > 0:
                    # Credited down to nothing, not paid: a change order cancels and
                    # replaces it (`invoice_corrected` names the re-bill to follow).
                    await self.audit(
                        InvoiceStep.AWAITING_PAYMENT,
                        f"settled_by_credit:{event.event_id}",
                        detail={"billing_invoice_id": event.billing_invoice_id},
                    )
                    continue
                if event.kind == "paid":
                    return await self._paid(event, total, currency)
                if event.kind == "voided":
                    return await self._voided(event, total, currency)
                if event.kind == "uncollectible":
                    return await self._uncollectible(event, total, currency)
                await self.record_exception(
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
        erp_invoice_id = self._erp_invoice_id or ""
        await self._after_issue(
            InvoiceStep.RECORD_PAYMENT,
            "record the payment in the ERP",
            self.call(
                InvoiceStep.RECORD_PAYMENT,
                ErpActivities.record_erp_payment,
                RecordErpPaymentInput(
                    draft_id=self._draft_id,
                    erp_invoice_id=erp_invoice_id,
                    amount=event.amount if event.amount is not None else total,
                    currency=currency,
                    paid_on=event.occurred_at.date(),
                    reference=event.event_id,
                    idempotency_key=f"erp-invoice:{erp_invoice_id}:payment",
                ),
                system=TRYTON,
            ),
        )
        await self._report_to_crm("paid", total)
        await self.audit(
            InvoiceStep.RECORD_PAYMENT, "paid", system="erp", detail={"event": event.event_id}
        )
        return self._ended(
            InvoiceStep.PAID, total, currency, f"invoice {self._invoice_number} paid"
        )

    async def _voided(
        self, event: PaymentEvent, total: Decimal, currency: str
    ) -> TimeToInvoiceResult:
        """Billing voided the invoice: nobody is to pay it. The ERP's receivable is credited
        (a credit note, so the books keep both) and the time returns to unbilled, to be billed
        by the period's next run if it should be."""
        self._set_step(InvoiceStep.VOIDED)
        reason = f"voided in billing ({event.event_id})"
        credited = await self._after_issue(
            InvoiceStep.VOIDED,
            "credit the ERP invoice",
            self.call(
                InvoiceStep.VOIDED,
                ErpActivities.credit_erp_invoice,
                CreditErpInvoiceInput(draft_id=self._draft_id, reason=reason),
                system=TRYTON,
            ),
        )
        if credited is not None:
            await self._after_issue(
                InvoiceStep.VOIDED,
                "return the time to unbilled",
                self.call(
                    InvoiceStep.VOIDED,
                    PsaActivities.unmark_time_billed,
                    TimeBillingInput(draft_id=self._draft_id),
                    system=TRYTON,
                    start_to_close=DRAFT_ATTEMPT,
                    heartbeat=DRAFT_HEARTBEAT,
                    notice_after=DRAFT_ATTEMPT,
                ),
            )
            await self._after_issue(
                InvoiceStep.VOIDED,
                "release the draft's time entries",
                self.local(
                    InvoiceStep.VOIDED,
                    InvoicingActivities.set_draft_status,
                    DraftStatusInput(draft_id=self._draft_id, status="void"),
                ),
            )
        credit_note = credited.credit_note_id if credited is not None else None
        await self.record_exception(
            "voided",
            kind="invoice_voided",
            message=(
                f"Invoice {self._invoice_number} to {self._customer_name()} for {total} "
                f"{currency} was voided in billing"
                + (
                    f"; ERP credit note {credit_note}, the time is unbilled again"
                    if credit_note
                    else ""
                )
            ),
            step=InvoiceStep.VOIDED,
        )
        await self._report_to_crm("void", total)
        await self.audit(
            InvoiceStep.VOIDED, "voided", system="billing", detail={"credit_note": credit_note}
        )
        return self._ended(
            InvoiceStep.VOIDED, total, currency, f"invoice {self._invoice_number} voided"
        )

    async def _uncollectible(
        self, event: PaymentEvent, total: Decimal, currency: str
    ) -> TimeToInvoiceResult:
        """Billing gave up collecting: the receivable stays in the ERP for finance to write
        off (a decision of theirs, not q2c's); the time stays billed."""
        self._set_step(InvoiceStep.UNCOLLECTIBLE)
        await self._after_issue(
            InvoiceStep.UNCOLLECTIBLE,
            "record the invoice uncollectible",
            self.local(
                InvoiceStep.UNCOLLECTIBLE,
                InvoicingActivities.set_draft_status,
                DraftStatusInput(draft_id=self._draft_id, status="uncollectible"),
            ),
        )
        await self.record_exception(
            "uncollectible",
            kind="invoice_uncollectible",
            message=(
                f"Invoice {self._invoice_number} to {self._customer_name()} for {total} "
                f"{currency} was marked uncollectible in billing ({event.event_id}): write off "
                f"the receivable of ERP invoice {self._erp_invoice_id}"
            ),
            step=InvoiceStep.UNCOLLECTIBLE,
        )
        await self._report_to_crm("uncollectible", total)
        await self.audit(InvoiceStep.UNCOLLECTIBLE, "uncollectible", system="billing")
        return self._ended(
            InvoiceStep.UNCOLLECTIBLE,
            total,
            currency,
            f"invoice {self._invoice_number} uncollectible",
        )

    async def _unpaid(
        self, total: Decimal, currency: str, follow_up: timedelta
    ) -> TimeToInvoiceResult:
        """Every run ends: past its due date and the follow-up time, finance takes over."""
        await self.record_exception(
            "unpaid",
            kind="invoice_unpaid",
            message=(
                f"Invoice {self._invoice_number} to {self._customer_name()} for {total} "
                f"{currency} is still unpaid {follow_up.days} days after its due date "
                f"{self._due_date}: q2c stops following it; record a later payment in the ERP"
            ),
            step=InvoiceStep.AWAITING_PAYMENT,
        )
        await self._report_to_crm("overdue", total)
        return self._ended(
            InvoiceStep.UNPAID, total, currency, f"invoice {self._invoice_number} unpaid"
        )

    def _ended(
        self, step: InvoiceStep, total: Decimal, currency: str, message: str
    ) -> TimeToInvoiceResult:
        self._set_step(step)
        if self._issues:
            message += f" ({len(self._issues)} follow-up step(s) failed: see exceptions)"
        return TimeToInvoiceResult(
            status=step,
            invoice_number=self._invoice_number,
            total=total,
            currency=currency,
            message=message,
        )

    async def _report_to_crm(self, status: str, total: Decimal) -> None:
        context = self._context
        if context is None or context.crm is None or context.opportunity_id is None:
            return
        if self._invoice_number is None:
            return
        await self._after_issue(
            InvoiceStep.CRM_UPDATE,
            f"show the invoice {status} in the CRM",
            self.call(
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
                system=SALESFORCE,
            ),
        )

    def _customer_name(self) -> str:
        return self._context.contract.customer_name if self._context else "?"

    # -- finance ----------------------------------------------------------------------------

    async def _remind(self, pending: PendingApproval) -> None:
        draft = self._draft
        count = pending.reminders_sent
        await self.record_exception(
            f"approval-reminder:{count}",
            kind="invoice_approval_overdue",
            message=(
                f"Draft invoice for project {self._request.project_id} "
                f"({self._customer_name()}, {self._request.period}, "
                f"{draft.total if draft else '?'} {draft.currency if draft else ''}) "
                f"waits for finance (reminder {count})"
            ),
            step=InvoiceStep.AWAITING_APPROVAL,
        )

    async def _declined(self, decision: InvoiceRecord | None) -> TimeToInvoiceResult:
        step = InvoiceStep.REJECTED if decision is not None else InvoiceStep.EXPIRED
        message = (
            f"rejected by {decision.approver}: {decision.reason}; the time stays unbilled"
            if decision is not None
            else "finance approval expired; the time stays unbilled"
        )
        await self.audit(step, step.value, detail={"message": message})
        if decision is None:
            await self.record_exception(
                "approval-expired",
                kind="invoice_approval_expired",
                message=f"Project {self._request.project_id} {self._request.period}: {message}",
                step=InvoiceStep.AWAITING_APPROVAL,
            )
        self._set_step(step)
        return TimeToInvoiceResult(status=step, message=message)

    async def _adjust(self, adjustment: InvoiceAdjustment, via: str) -> tuple[InvoiceRecord, bool]:
        """Apply finance's adjustment once per id, however often and by whatever route it
        arrives; `(record, True)` for a repeat, which changes nothing."""
        key = adjustment_key(adjustment)
        # A repeat racing the first delivery waits for it, then answers as it did; any
        # adjustment waits for a re-draft to finish, and is applied to the re-rated draft.
        await workflow.wait_condition(
            lambda: key not in self._adjustments_in_flight and not self._redrafting
        )
        gate, step = self._approval, self._step.value
        if key in self._adjustments_seen:
            record = gate.record(
                "adjust",
                adjustment.approver,
                adjustment.reason,
                via,
                step,
                ref=key,
                ignored_because=f"adjustment {key} was applied already",
            )
            return record, True
        record = gate.record("adjust", adjustment.approver, adjustment.reason, via, step, ref=key)
        if not record.accepted:
            return record, False
        gate.busy += 1
        self._adjustments_in_flight.add(key)
        try:
            self._draft = await self.local(
                InvoiceStep.AWAITING_APPROVAL,
                InvoicingActivities.adjust_draft,
                AdjustInput(
                    draft_id=self._draft_id,
                    adjustment=adjustment.model_copy(update={"adjustment_id": key}),
                ),
            )
            self._adjustments_seen.add(key)
        except StepFailed as failure:
            gate.refuse(record, failure.reason)
            raise ApplicationError(failure.reason, type="InvalidAdjustment") from None
        finally:
            gate.busy -= 1
            self._adjustments_in_flight.discard(key)
        return record, False

    @workflow.signal(name=ADJUST)
    async def adjust_by_signal(self, adjustment: InvoiceAdjustment) -> None:
        try:
            await self._adjust(adjustment, "signal")
        except ApplicationError as exc:
            workflow.logger.warning("adjustment refused: %s", exc)

    @workflow.update(name=ADJUST)
    async def adjust_by_update(self, adjustment: InvoiceAdjustment) -> DecisionAck:
        record, duplicate = await self._adjust(adjustment, "update")
        return DecisionAck(
            what=record.what,
            approver=record.approver,
            step=self._step,
            total=self._draft.total if self._draft else None,
            adjustment_id=record.ref,
            duplicate=duplicate,
        )

    @adjust_by_update.validator
    def _validate_adjustment(self, adjustment: InvoiceAdjustment) -> None:
        key = adjustment_key(adjustment)
        if key in self._adjustments_seen or key in self._adjustments_in_flight:
            return  # a repeat: answered with what the first delivery did
        if (problem := self._approval.refusal(adjustment.approver, self._step.value)) is not None:
            raise ValueError(problem)
        if self._draft is not None:
            asked = sum((line.amount for line in adjustment.lines), Decimal(0))
            if asked > self._draft.subtotal:
                raise ValueError(
                    f"adjustment of {asked} exceeds the draft's net {self._draft.subtotal} "
                    f"{self._draft.currency}"
                )

    # -- change orders ----------------------------------------------------------------------

    @workflow.signal(name=CONTRACT_CHANGED)
    async def contract_changed(self, change: ContractChanged) -> None:
        """A change order made a new contract version. While finance holds the draft, the
        run drafts it again on the new terms and finance decides on the re-rated draft; at any
        other time the signal is recorded and ignored: an issued invoice is never re-rated
        here (the change order credits and re-bills it), and a draft still being made reads
        the contract when it is made."""
        if not workflow.patched(RERATE_PATCH):
            # Replaying a run from a worker without this handler: it never acted on the signal.
            workflow.logger.warning("contract change ignored by an earlier version: %s", change)
            return
        key = (change.change_order, change.version)
        if key in self._rerates_in_flight or any(
            r.rerated and (r.change_order, r.version) == key for r in self._rerates
        ):
            workflow.logger.info("contract change delivered again, re-rated once: %s", change)
            return
        if (problem := self._rerate_refusal(change)) is not None:
            await self._rerate_ignored(change, problem)
            return
        # Held from here on: a decision that arrives while the draft is re-rated waits for
        # the re-rated draft, and is taken on it.
        gate = self._approval
        gate.busy += 1
        self._rerates_in_flight.add(key)
        try:
            await workflow.wait_condition(
                lambda: not self._redrafting and not self._adjustments_in_flight
            )
            self._redrafting = True
            try:
                await self._rerate(change)
            finally:
                self._redrafting = False
        finally:
            gate.busy -= 1
            self._rerates_in_flight.discard(key)

    def _rerate_refusal(self, change: ContractChanged) -> str | None:
        gate, step = self._approval, self._step.value
        if self._draft is None:
            return f"the draft is not made yet (step {step}): it is rated on the contract then"
        if gate.decision is not None:
            return (
                f"finance decided already ({gate.decision.what} by {gate.decision.approver}, "
                f"step {step}): the draft is no longer re-rated"
            )
        if gate.pending is None:
            return f"no approval is pending (step {step}): the draft is no longer re-rated"
        newer = [r.version for r in self._rerates if r.rerated and r.version >= change.version]
        if newer:
            return f"the draft was re-rated on contract v{max(newer)} already"
        return None

    async def _rerate_ignored(self, change: ContractChanged, because: str) -> None:
        """Record a contract change the run did not act on; the same again is recorded once."""
        key = (change.change_order, change.version)
        if any(
            (r.change_order, r.version) == key and r.ignored_because == because
            for r in self._rerates
        ):
            return
        workflow.logger.warning("contract change %s ignored: %s", change, because)
        self._rerates.append(
            Rerate(
                change_order=change.change_order,
                version=change.version,
                effective_from=change.effective_from,
                at=workflow.now(),
                rerated=False,
                ignored_because=because,
            )
        )
        await self.audit(
            self._step,
            f"contract_change_ignored:{change.change_order}:v{change.version}:{len(self._rerates)}",
            detail={**change.model_dump(mode="json"), "ignored_because": because},
        )

    async def _rerate(self, change: ContractChanged) -> None:
        """Draft again under the same id on the contract as q2c's store now holds it, then
        apply finance's adjustments again (the re-draft replaces the stored draft whole). An
        adjustment the re-rated draft cannot take is dropped and said so; sent again, it is
        checked against the re-rated draft."""
        before = self._draft
        if before is None or self._approval.pending is None:
            await self._rerate_ignored(change, "the approval ended before the re-rate began")
            return
        step = InvoiceStep.AWAITING_APPROVAL
        request = self._request
        try:
            context = await self.call(
                step,
                InvoicingActivities.load_billing_contract,
                LoadContractInput(project_id=request.project_id),
                system=TRYTON,
            )
            draft = await self.call(
                step,
                InvoicingActivities.draft_invoice,
                DraftInput(
                    draft_id=self._draft_id,
                    workflow_id=workflow.info().workflow_id,
                    period=request.period,
                    context=context,
                    kind=request.kind.value,
                ),
                system=TRYTON,
                start_to_close=DRAFT_ATTEMPT,
                heartbeat=DRAFT_HEARTBEAT,
                notice_after=DRAFT_ATTEMPT,
            )
        except StepFailed as failure:
            because = f"re-rating failed: {failure.reason}; the draft keeps its earlier terms"
            await self._rerate_ignored(change, because)
            await self.record_exception(
                f"rerate-failed:{change.change_order}:v{change.version}",
                kind="invoice_rerate_failed",
                message=(
                    f"Draft invoice for project {request.project_id} ({request.period}) was not "
                    f"re-rated for change order {change.change_order} (contract "
                    f"v{change.version}): {failure.reason}. Finance decides on the earlier terms."
                ),
                step=step,
            )
            return
        dropped: list[str] = []
        for adjustment in before.adjustments:
            try:
                draft = await self.local(
                    step,
                    InvoicingActivities.adjust_draft,
                    AdjustInput(draft_id=self._draft_id, adjustment=adjustment),
                )
            except StepFailed as failure:
                key = adjustment_key(adjustment)
                self._adjustments_seen.discard(key)
                dropped.append(f"{key}: {failure.reason}")
        self._context = context
        self._draft = draft
        rerate = Rerate(
            change_order=change.change_order,
            version=change.version,
            effective_from=change.effective_from,
            at=workflow.now(),
            rerated=True,
            currency=draft.currency,
            total_before=before.total,
            total_after=draft.total,
            dropped_adjustments=dropped,
        )
        self._rerates.append(rerate)
        await self.audit(
            step,
            f"rerated:{change.change_order}:v{change.version}",
            detail=rerate.model_dump(mode="json"),
        )

    @workflow.signal(name=INVOICE_CORRECTED)
    def invoice_corrected(self, fix: InvoiceCorrected) -> None:
        """A change order credited the issued invoice and re-billed it: the customer now
        owes the re-bill, so its payment is what the run waits for (its events carry this
        run's id); the credited invoice's later events are ignored. Once per change order."""
        if any(c.change_order == fix.change_order for c in self._corrections):
            return
        follow = self._invoice_number is not None and fix.rebill_invoice_id is not None
        if follow:
            self._billing_invoice_id = fix.rebill_invoice_id
            self._invoice_number = fix.rebill_number or self._invoice_number
            self._erp_invoice_id = fix.erp_rebill_id or self._erp_invoice_id
            self._payable = fix.rebill_total
        self._corrections.append(fix.model_copy(update={"at": workflow.now(), "followed": follow}))

    @workflow.signal(name=PAYMENT)
    def payment(self, event: PaymentEvent) -> None:
        """From billing's webhooks and sweeps; a redelivered event is ignored."""
        if event.billing_invoice_id != self._billing_invoice_id:
            workflow.logger.warning("payment event for another invoice ignored: %s", event)
            return
        if any(p.event_id == event.event_id for p in self._payments):
            return
        self._payments.append(event)

    @workflow.query(name=STATUS)
    def status(self) -> InvoiceStatus:
        pending = self._approval.pending
        return InvoiceStatus(
            workflow_id=workflow.info().workflow_id,
            project_id=self._request.project_id,
            period=self._request.period,
            step=self._step,
            customer_name=self._context.contract.customer_name if self._context else None,
            draft=self._draft,
            pending_since=pending.requested_at if pending else None,
            billing_invoice_id=self._billing_invoice_id,
            invoice_number=self._invoice_number,
            erp_invoice_id=self._erp_invoice_id,
            due_date=self._due_date,
            records=list(self._approval.records),
            payments=list(self._payments),
            last_error=self._last_error,
            waiting_on=self._waiting_on,
            supplementary_to=list(self._draft.supplementary_to) if self._draft else [],
            issues=list(self._issues),
            rerates=list(self._rerates),
            corrections=list(self._corrections),
        )

    # -- failure ----------------------------------------------------------------------------

    async def _void_billing(self, billing_invoice_id: str) -> None:
        await self.compensation(
            BillingActivities.void_billing_invoice,
            VoidBillingInvoiceInput(
                draft_id=self._draft_id,
                billing_invoice_id=billing_invoice_id,
                reason=self._last_error or "invoicing failed",
                idempotency_key=f"{billing_invoice_id}:void",
            ),
            system=STRIPE,
        )

    async def _unmark_time(self) -> None:
        await self.compensation(
            PsaActivities.unmark_time_billed,
            TimeBillingInput(draft_id=self._draft_id),
            system=TRYTON,
        )

    async def _discard_erp(self) -> None:
        await self.compensation(
            ErpActivities.discard_erp_draft,
            DiscardErpDraftInput(draft_id=self._draft_id),
            system=TRYTON,
        )

    async def _report_ending(self, ending: Ending) -> None:
        """Before the invoice was issued, a step failed for good or the run was cancelled:
        the saga undid what this run made (void billing's invoice, discard or credit the
        ERP's, return the time to unbilled); say what, so billing and the ERP never disagree
        silently."""
        step = InvoiceStep.CANCELLED if ending.cancelled else InvoiceStep.FAILED
        verb = "cancelled" if ending.cancelled else "failed"
        self._set_step(step)
        message = outcome_message(
            f"Invoicing project {self._request.project_id} for {self._request.period} {verb} "
            f"at {ending.step}: {ending.reason}",
            ending.outcome,
        )
        await self.record_exception(
            verb,
            kind=f"invoicing_{verb}",
            message=message,
            step=ending.step,
            detail={
                "billing_invoice": self._billing_invoice_id,
                "number": self._invoice_number,
                "undone": ending.outcome.undone,
                "not_undone": ending.outcome.not_undone,
                "skipped": ending.outcome.skipped,
            },
        )
