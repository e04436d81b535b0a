"""Fake systems for time-to-invoice workflow tests: the real workflow on the real dev server,
with activities that record what they were asked and answer what a test scripts."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.billing import (
    BillingInvoiceResult,
    CreateBillingInvoiceInput,
    FinalizeBillingInvoiceInput,
    FinalizedInvoice,
    VoidBillingInvoiceInput,
)
from activities.crm import CrmInvoiceInput
from activities.deal import DealPolicyInput
from activities.erp import (
    CreditErpInvoiceInput,
    DiscardErpDraftInput,
    ErpCredited,
    ErpPosted,
    PostErpInvoiceInput,
    RecordErpPaymentInput,
)
from activities.invoicing import (
    AdjustInput,
    ContractContext,
    DraftInput,
    DraftStatusInput,
    LoadContractInput,
    ProjectsInput,
)
from activities.psa import TimeBillingInput
from canonical import (
    ApprovalPolicy,
    BillingContract,
    BillingType,
    Contract,
    ContractLine,
    ContractVersion,
    DealPolicy,
    DraftLine,
    DraftView,
    Money,
    OutagePolicy,
    PaymentTerms,
    TaskProgress,
)
from tests.workflows.fakes import FakeLedger, Unavailable, serving
from workflows.invoice_cycle import InvoiceCycleWorkflow
from workflows.time_to_invoice import TimeToInvoiceInput, TimeToInvoiceWorkflow, workflow_id

APPROVER = "finance@northwind.example"


def sold(*lines: ContractLine) -> Contract:
    """Initech's contract: Development by the hour at 160.00 GBP, and any ``lines`` more."""
    development = ContractLine(
        id="00k1",
        task="Development",
        role="Developer",
        billing_type=BillingType.TIME_AND_MATERIALS,
        rate=Money.of("160", "GBP"),
        hours=Decimal(100),
        amount=Money.of("16000", "GBP"),
    )
    everything = [development, *lines]
    version = ContractVersion(
        contract_id="salesforce:006000000000001AAA",
        version=1,
        effective_from=date(2026, 10, 1),
        source="opportunity:006000000000001AAA",
        currency="GBP",
        start_date=date(2026, 10, 1),
        lines=everything,
        payment_terms=PaymentTerms(net_days=30),
        value=Money.of(sum((ln.amount.amount for ln in everything), Decimal(0)), "GBP"),
    )
    return Contract(versions=[version])


def contract(*lines: ContractLine, tasks: list[TaskProgress] | None = None) -> BillingContract:
    return BillingContract(
        project_id="42",
        customer_id="salesforce:001000000000001AAA",
        customer_name="Initech UK Ltd",
        currency="GBP",
        contract=sold(*lines),
        tasks=tasks or [TaskProgress(id="7", name="Development")],
        tax_rate=Decimal("0.20"),
        payment_terms=PaymentTerms(net_days=30),
        legal_entity_code="NW-UK",
    )


def draft_view(draft_id: str, hours: str = "12.5", rate: str = "160") -> DraftView:
    net = Decimal(hours) * Decimal(rate)
    tax = (net * Decimal("0.20")).quantize(Decimal("0.01"))
    return DraftView(
        draft_id=draft_id,
        currency="GBP",
        lines=[
            DraftLine(
                description="Development — Developer",
                quantity=Decimal(hours),
                unit_price=Decimal(rate),
                net=net,
                tax=tax,
                total=net + tax,
                contract_version=1,
                sources=["1001", "1002", "1003"],
                source_count=3,
            )
        ],
        subtotal=net,
        tax=tax,
        total=net + tax,
        hours=Decimal(hours),
        overage=Decimal(0),
        time_entries=3,
        rejected_entries=0,
    )


@dataclass
class FakeInvoicing(FakeLedger):
    hours: str = "12.5"
    fail_erp: str | None = None
    #: Billing finalizes at a total this much above the draft's (a disagreeing total).
    finalize_surcharge: Decimal = Decimal(0)
    #: A permanent refusal from these steps ("mark_time_billed", "write_invoice_status"...).
    refuse: set[str] = field(default_factory=set)
    #: Steps whose system answers 503 (retryable) while named here.
    down: set[str] = field(default_factory=set)
    #: Finalize never answers (until the worker stops): a run can be cancelled mid-billing.
    hang_finalize: bool = False
    #: When billing says the invoice is due.
    due: date = date(2026, 12, 31)
    #: Invoice numbers the draft is supplementary to.
    supplementary_to: list[str] = field(default_factory=list)
    policy: DealPolicy = field(
        default_factory=lambda: DealPolicy(
            approval=ApprovalPolicy(
                approvers=[APPROVER],
                remind_after=timedelta(hours=4),
                expire_after=timedelta(hours=10),
            ),
            correction_deadline=timedelta(hours=6),
            outage=OutagePolicy(
                notice_after=timedelta(seconds=1), default_deadline=timedelta(hours=1)
            ),
        )
    )
    view: DraftView | None = None
    projects: list[str] = field(default_factory=list)
    #: Development's hourly rate as the store's contract has it (a change order raises it).
    rate: str = "160"
    #: Draft calls (numbered from 1) that wait for their event: a test holds a re-draft.
    hold_drafts: dict[int, asyncio.Event] = field(default_factory=dict)
    #: Set as each draft call (numbered from 1) begins.
    draft_began: dict[int, asyncio.Event] = field(
        default_factory=lambda: {n: asyncio.Event() for n in (1, 2, 3)}
    )

    @activity.defn(name="deal_policy")
    async def deal_policy(self, request: DealPolicyInput) -> DealPolicy:
        return self.policy

    @activity.defn(name="load_billing_contract")
    async def load_billing_contract(self, request: LoadContractInput) -> ContractContext:
        self._record("load_billing_contract", request)
        return ContractContext(
            contract=contract(),
            crm="salesforce",
            opportunity_id="006000000000001AAA",
            erp_customer_id="17",
            billing_customer_id="cus_TEST1",
            customer_country="GB",
        )

    @activity.defn(name="list_invoiceable_projects")
    async def list_invoiceable_projects(self, request: ProjectsInput) -> list[str]:
        return list(self.projects)

    @activity.defn(name="draft_invoice")
    async def draft_invoice(self, request: DraftInput) -> DraftView:
        self._record("draft_invoice", request)
        call = len(self.called("draft_invoice"))
        if call in self.draft_began:
            self.draft_began[call].set()
        if call in self.hold_drafts:
            await self.hold_drafts[call].wait()
        if call > 1:
            self._refuse("redraft")
        if self.hours == "0":
            self.view = DraftView(
                draft_id=request.draft_id,
                currency="GBP",
                lines=[],
                subtotal=Decimal(0),
                tax=Decimal(0),
                total=Decimal(0),
                hours=Decimal(0),
                overage=Decimal(0),
                time_entries=0,
                rejected_entries=0,
            )
        else:
            self.view = draft_view(request.draft_id, self.hours, self.rate)
        self.view = self.view.model_copy(update={"supplementary_to": self.supplementary_to})
        return self.view

    def _refuse(self, name: str) -> None:
        if name in self.down:
            raise Unavailable(name)
        if name in self.refuse:
            raise ApplicationError(f"{name} refused", type="ValidationFailed", non_retryable=True)

    @activity.defn(name="adjust_draft")
    async def adjust_draft(self, request: AdjustInput) -> DraftView:
        self._record("adjust_draft", request)
        assert self.view is not None
        if any(a.adjustment_id == request.adjustment.adjustment_id for a in self.view.adjustments):
            return self.view
        cut = sum((line.amount for line in request.adjustment.lines), Decimal(0))
        if cut > self.view.subtotal:  # as the store's draft refuses it
            raise ApplicationError(
                f"adjustment: the invoice would be negative; write off at most "
                f"{self.view.subtotal}",
                type="InvalidAdjustment",
                non_retryable=True,
            )
        tax = (cut * Decimal("0.20")).quantize(Decimal("0.01"))
        self.view = self.view.model_copy(
            update={
                "subtotal": self.view.subtotal - cut,
                "tax": self.view.tax - tax,
                "total": self.view.total - cut - tax,
                "adjustments": [*self.view.adjustments, request.adjustment],
            }
        )
        return self.view

    @activity.defn(name="create_billing_invoice")
    async def create_billing_invoice(
        self, request: CreateBillingInvoiceInput
    ) -> BillingInvoiceResult:
        self._record("create_billing_invoice", request)
        return BillingInvoiceResult(billing_invoice_id="in_TEST1")

    @activity.defn(name="finalize_billing_invoice")
    async def finalize_billing_invoice(
        self, request: FinalizeBillingInvoiceInput
    ) -> FinalizedInvoice:
        self._record("finalize_billing_invoice", request)
        assert self.view is not None
        if self.hang_finalize:
            await asyncio.Event().wait()
        if self.finalize_surcharge:
            raise ApplicationError(
                f"billing invoice {request.billing_invoice_id} totals "
                f"{self.view.total + self.finalize_surcharge} GBP, the approved draft "
                f"{self.view.total} GBP",
                type="TotalsDisagree",
                non_retryable=True,
            )
        return FinalizedInvoice(
            billing_invoice_id=request.billing_invoice_id,
            number="Q2CTEST-0001",
            total=self.view.total,
            currency="GBP",
            due_date=self.due,
        )

    @activity.defn(name="void_billing_invoice")
    async def void_billing_invoice(self, request: VoidBillingInvoiceInput) -> None:
        self._record("void_billing_invoice", request)

    @activity.defn(name="post_erp_invoice")
    async def post_erp_invoice(self, request: PostErpInvoiceInput) -> ErpPosted:
        self._record("post_erp_invoice", request)
        if self.fail_erp:
            raise ApplicationError(self.fail_erp, type="ValidationFailed", non_retryable=True)
        assert self.view is not None
        return ErpPosted(erp_invoice_id="88", number="NW-UK-INV2026-0001", total=self.view.total)

    @activity.defn(name="discard_erp_draft")
    async def discard_erp_draft(self, request: DiscardErpDraftInput) -> None:
        self._record("discard_erp_draft", request)

    @activity.defn(name="credit_erp_invoice")
    async def credit_erp_invoice(self, request: CreditErpInvoiceInput) -> ErpCredited:
        self._record("credit_erp_invoice", request)
        return ErpCredited(erp_invoice_id="88", credit_note_id="89")

    @activity.defn(name="set_draft_status")
    async def set_draft_status(self, request: DraftStatusInput) -> None:
        self._record("set_draft_status", request)

    @activity.defn(name="record_erp_payment")
    async def record_erp_payment(self, request: RecordErpPaymentInput) -> None:
        self._record("record_erp_payment", request)
        self._refuse("record_erp_payment")

    @activity.defn(name="mark_time_billed")
    async def mark_time_billed(self, request: TimeBillingInput) -> int:
        self._record("mark_time_billed", request)
        self._refuse("mark_time_billed")
        return 3

    @activity.defn(name="unmark_time_billed")
    async def unmark_time_billed(self, request: TimeBillingInput) -> int:
        self._record("unmark_time_billed", request)
        return 3

    @activity.defn(name="write_invoice_status")
    async def write_invoice_status(self, request: CrmInvoiceInput) -> None:
        self._record("write_invoice_status", request)
        self._refuse("write_invoice_status")

    def worker(self, client: Client, task_queue: str) -> AbstractAsyncContextManager[None]:
        """As production runs it: workflows and local activities on the run's queue, each
        system's activities on that system's queue."""
        return serving(
            client,
            task_queue,
            workflows=[TimeToInvoiceWorkflow, InvoiceCycleWorkflow],
            local=[
                self.deal_policy,
                self.adjust_draft,
                self.set_draft_status,
                *self.ledger_activities(),
            ],
            systems=[
                self.load_billing_contract,
                self.list_invoiceable_projects,
                self.draft_invoice,
                self.create_billing_invoice,
                self.finalize_billing_invoice,
                self.void_billing_invoice,
                self.post_erp_invoice,
                self.discard_erp_draft,
                self.credit_erp_invoice,
                self.record_erp_payment,
                self.mark_time_billed,
                self.unmark_time_billed,
                self.write_invoice_status,
            ],
        )

    def crm_statuses(self) -> list[str]:
        return [c.status for c in self.called("write_invoice_status")]


def start_args() -> tuple[TimeToInvoiceInput, str]:
    project = f"p{uuid.uuid4().hex[:8]}"
    return TimeToInvoiceInput(project_id=project, period="2026-11", trigger="test"), workflow_id(
        project, "2026-11"
    )
