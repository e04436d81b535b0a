"""Fake systems for change-order workflow tests: the real workflows (the run and the deal's
queue) on the real dev server, with a CRM, PSA, billing and store that record what they were
asked and answer what a test scripts. The queue's run activities are the real ones: they only
start and describe workflows with the worker's Temporal client. A stand-in time-to-invoice
run (`FakeInvoiceRun`) records what a change-order run tells it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.change_orders import (
    ApplyPsaTermsInput,
    BillingCorrection,
    BillingPlanChange,
    BillingPlanInput,
    ChangeImpact,
    ChangeOrderRunActivities,
    ChangeRules,
    ChangeRulesInput,
    CorrectBillingInput,
    CorrectErpInput,
    ErpCorrection,
    PreviewInput,
    PsaTermsApplied,
    RecordCorrectionInput,
    RemoveVersionInput,
    RestoreBillingPlanInput,
    RestorePsaTermsInput,
    VoidBillingCorrectionInput,
)
from activities.crm import (
    ApprovedChangeOrdersInput,
    ChangeOrderSnapshot,
    ChangeOrderWriteBackInput,
    FetchChangeOrderInput,
    WriteBackInput,
)
from canonical import (
    BillingType,
    ChangeOrder,
    ChangeOrderStatus,
    ChangePolicy,
    ContractLine,
    ContractVersion,
    Money,
    OutagePolicy,
    PaymentTerms,
)
from canonical.impact import ImpactPreview, IssuedInvoice
from tests.fixtures.change_orders import december_invoice, retroactive_preview
from tests.workflows.fakes import APPROVER, FakeLedger, serving
from workflows.change_order import (
    STATUS,
    ChangeOrderInput,
    ChangeOrderQueueWorkflow,
    ChangeOrderResult,
    ChangeOrderView,
    ChangeOrderWorkflow,
    workflow_id,
)
from workflows.time_to_invoice import (
    CONTRACT_CHANGED,
    INVOICE_CORRECTED,
    ContractChanged,
    InvoiceCorrected,
)
from workflows.time_to_invoice import workflow_id as invoice_workflow_id

__all__ = [
    "APPROVER",
    "BUDGET",
    "STEP_WAIT_S",
    "TOLD",
    "FakeChangeOrders",
    "FakeInvoiceRun",
    "Handle",
    "InvoiceRunTold",
    "change_order",
    "draft_id_of",
    "new_deal",
    "preview_of",
    "start_change_order",
    "start_invoice_run",
    "status_of",
    "told",
    "wait_until",
]

Handle = WorkflowHandle[ChangeOrderWorkflow, ChangeOrderResult]
BUDGET = Decimal("30000")
#: The time a test polls a run's `status` query for, at most (a bound, not a sleep).
STEP_WAIT_S = 15


def change_order(
    *,
    change_order_id: str | None = None,
    opportunity_id: str = "006000000000001AAA",
    amount_delta: str = "2400",
    status: ChangeOrderStatus = ChangeOrderStatus.APPROVED,
    approved_at: datetime | None = None,
) -> ChangeOrder:
    """A change order on the deal: 16 more hours of development (2,400 USD by default)."""
    return ChangeOrder(
        id=change_order_id or f"a0X{uuid.uuid4().hex[:15].upper()}",
        crm="salesforce",
        opportunity_id=opportunity_id,
        name="CO-001 more development",
        status=status,
        currency="USD",
        effective_date=date(2026, 12, 1),
        amount_delta=Money.of(amount_delta, "USD"),
        approved_at=approved_at or datetime(2026, 11, 25, tzinfo=UTC),
    )


def preview_of(change: ChangeOrder) -> ImpactPreview:
    """What the change does to the deal's 30,000 USD contract: its amount delta is the
    budget's increase (over 10,000 USD: finance approves). Another delta, another digest."""
    after = BUDGET + change.amount_delta.amount
    return ImpactPreview(
        change_order=change.key,
        contract_id=f"{change.crm}:{change.opportunity_id}",
        currency="USD",
        effective_from=change.effective_date,
        retroactive=False,
        version_before=1,
        after=ContractVersion(
            contract_id=f"{change.crm}:{change.opportunity_id}",
            version=2,
            effective_from=change.effective_date,
            source=f"change-order:{change.key}",
            currency="USD",
            start_date=date(2026, 10, 1),
            lines=[
                ContractLine(
                    id="L1",
                    task="Development",
                    task_id="101",
                    billing_type=BillingType.FIXED_FEE,
                    amount=Money.of(after, "USD"),
                )
            ],
            payment_terms=PaymentTerms(net_days=30),
            value=Money.of(after, "USD"),
        ),
        budget_before=Money.of(BUDGET, "USD"),
        budget_after=Money.of(after, "USD"),
    )


TOLD = "told"  # the stand-in invoice run's query


class InvoiceRunTold(BaseModel):
    """What a stand-in time-to-invoice run was told, in order."""

    corrected: list[InvoiceCorrected] = Field(default_factory=list)
    contract_changed: list[ContractChanged] = Field(default_factory=list)


@workflow.defn(name="TimeToInvoiceWorkflow", sandboxed=False)  # its module imports the fakes
class FakeInvoiceRun:
    """A period's time-to-invoice run as a change-order run sees it: a workflow of that name
    that takes `invoice_corrected` and `contract_changed`, and answers what it was told."""

    def __init__(self) -> None:
        self._told = InvoiceRunTold()

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)  # open until the test terminates it

    @workflow.signal(name=INVOICE_CORRECTED)
    def invoice_corrected(self, fix: InvoiceCorrected) -> None:
        self._told.corrected.append(fix)

    @workflow.signal(name=CONTRACT_CHANGED)
    def contract_changed(self, change: ContractChanged) -> None:
        self._told.contract_changed.append(change)

    @workflow.query(name=TOLD)
    def told(self) -> InvoiceRunTold:
        return self._told


async def start_invoice_run(
    client: Client, task_queue: str, period: str = "2026-12"
) -> WorkflowHandle[FakeInvoiceRun, None]:
    """A stand-in invoice run of the deal's project (a project of its own: one dev server
    serves every test). Its draft id is `<workflow id>/<run id>`, as the real run's."""
    return await client.start_workflow(
        FakeInvoiceRun.run,
        id=invoice_workflow_id(f"42-{uuid.uuid4().hex[:8]}", period),
        task_queue=task_queue,
    )


def draft_id_of(handle: WorkflowHandle[Any, Any]) -> str:
    """The draft id a time-to-invoice run gives its draft: `<workflow id>/<run id>`."""
    return f"{handle.id}/{handle.result_run_id}"


async def told(handle: WorkflowHandle[Any, Any]) -> InvoiceRunTold:
    result: InvoiceRunTold = await handle.query(TOLD, result_type=InvoiceRunTold)
    return result


@dataclass
class FakeChangeOrders(FakeLedger):
    """What the CRM holds (change orders, in approval order), what the store knows of the
    deal's contract, and every call each system received."""

    #: The CRM's change orders, in the order the CRM approved them.
    changes: dict[str, ChangeOrder] = field(default_factory=dict)
    policy: ChangePolicy = field(
        default_factory=lambda: ChangePolicy(
            budget_threshold=Decimal("10000"),
            approvers=[APPROVER],
            remind_after=timedelta(hours=4),
            expire_after=timedelta(hours=10),
        )
    )
    outage: OutagePolicy = field(
        default_factory=lambda: OutagePolicy(
            notice_after=timedelta(seconds=2), default_deadline=timedelta(hours=1)
        )
    )
    #: The deal's project exists (False: previews answer project None, as before provisioning).
    provisioned: bool = True
    #: Contract versions change orders already made (a rerun after it was applied), by id.
    applied_versions: dict[str, int] = field(default_factory=dict)
    #: The billing plan update is refused for good.
    fail_plan: str | None = None
    #: Removing the contract version is refused for good (the compensation fails).
    fail_remove: str | None = None
    #: The ERP refuses invoice corrections for good.
    fail_erp: str | None = None
    #: The deal's issued invoices, which a retroactive change order corrects (by default,
    #: `december_invoice`).
    issued: list[IssuedInvoice] = field(default_factory=list)
    #: The issued drafts' ids (`<workflow id>/<run id>`), by invoice number.
    corrected_drafts: dict[str, str] = field(default_factory=dict)
    #: The time-to-invoice runs (workflow ids) of drafts awaiting approval, by draft id.
    draft_runs: dict[str, str] = field(default_factory=dict)
    #: Change orders whose preview does not answer until the test lets it (by id).
    hold: set[str] = field(default_factory=set)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, change: ChangeOrder) -> ChangeOrder:
        self.changes[change.id] = change
        return change

    def edit(self, change_order_id: str, **update: Any) -> None:
        """The CRM's change order edited (a new record: change orders are frozen)."""
        changed = self.changes[change_order_id].model_dump() | update
        self.changes[change_order_id] = ChangeOrder.model_validate(changed)

    # -- q2c's rules and store (local activities) -------------------------------------------

    @activity.defn(name="change_rules")
    async def change_rules(self, request: ChangeRulesInput) -> ChangeRules:
        return ChangeRules(policy=self.policy, outage=self.outage)

    @activity.defn(name="remove_contract_version")
    async def remove_contract_version(self, request: RemoveVersionInput) -> None:
        self._record("remove_contract_version", request)
        if self.fail_remove:
            raise ApplicationError(self.fail_remove, type="StoreError", non_retryable=True)

    # -- the CRM --------------------------------------------------------------------------------

    @activity.defn(name="fetch_change_order")
    async def fetch_change_order(self, request: FetchChangeOrderInput) -> ChangeOrderSnapshot:
        self._record("fetch_change_order", request)
        change = self.changes.get(request.change_order_id)
        if change is None:
            return ChangeOrderSnapshot(problems=[f"id: no change order {request.change_order_id}"])
        return ChangeOrderSnapshot(change_order=change)

    @activity.defn(name="approved_change_orders")
    async def approved_change_orders(self, request: ApprovedChangeOrdersInput) -> list[str]:
        self._record("approved_change_orders", request)
        return [
            c.id
            for c in self.changes.values()
            if c.opportunity_id == request.opportunity_id and c.status is ChangeOrderStatus.APPROVED
        ]

    @activity.defn(name="write_back_change_order")
    async def write_back_change_order(self, request: ChangeOrderWriteBackInput) -> None:
        self._record("write_back_change_order", request)
        if request.change_order_id in self.changes:
            self.edit(request.change_order_id, status=request.status)

    @activity.defn(name="write_back_deal")
    async def write_back_deal(self, request: WriteBackInput) -> None:
        self._record("write_back_deal", request)

    # -- the PSA and the store, through the preview --------------------------------------------

    @activity.defn(name="preview_change_order")
    async def preview_change_order(self, request: PreviewInput) -> ChangeImpact:
        self._record("preview_change_order", request)
        change = request.change_order
        if change.id in self.hold:
            self.held.set()
            await self.release.wait()
        contract_id = f"{change.crm}:{change.opportunity_id}"
        if not self.provisioned:
            return ChangeImpact(contract_id=contract_id)
        if change.id in self.applied_versions:
            return ChangeImpact(
                project_id="42",
                contract_id=contract_id,
                applied_version=self.applied_versions[change.id],
            )
        if change.retroactive:  # canonical's preview, with its corrections of issued invoices
            issued = self.issued or [december_invoice(change.opportunity_id)]
            preview = retroactive_preview(change, *issued)
        else:
            preview = preview_of(change)
        return ChangeImpact(
            project_id="42",
            contract_id=contract_id,
            preview=preview,
            billing_customer_id="cus_TEST1",
            draft_runs=self.draft_runs,
            corrected_drafts={
                c.invoice_number: self.corrected_drafts[c.invoice_number]
                for c in preview.corrections
            },
        )

    @activity.defn(name="apply_psa_terms")
    async def apply_psa_terms(self, request: ApplyPsaTermsInput) -> PsaTermsApplied:
        self._record("apply_psa_terms", request)
        return PsaTermsApplied(change={"budget": "30000"}, added_task_ids={})

    @activity.defn(name="restore_psa_terms")
    async def restore_psa_terms(self, request: RestorePsaTermsInput) -> None:
        self._record("restore_psa_terms", request)

    # -- billing --------------------------------------------------------------------------------

    @activity.defn(name="update_billing_plan")
    async def update_billing_plan(self, request: BillingPlanInput) -> BillingPlanChange:
        self._record("update_billing_plan", request)
        if self.fail_plan:
            raise ApplicationError(self.fail_plan, type="ValidationFailed", non_retryable=True)
        return BillingPlanChange(before="plan v1")

    @activity.defn(name="restore_billing_plan")
    async def restore_billing_plan(self, request: RestoreBillingPlanInput) -> None:
        self._record("restore_billing_plan", request)

    @activity.defn(name="correct_billing_invoice")
    async def correct_billing_invoice(self, request: CorrectBillingInput) -> BillingCorrection:
        """A credit note on the issued invoice and a finalized re-bill, named after it."""
        self._record("correct_billing_invoice", request)
        number = request.correction.invoice_number
        return BillingCorrection(
            credit_note_id=f"cn_{number}",
            rebill_invoice_id=f"in_{number}_rebill",
            rebill_number=f"{number}-R1",
        )

    @activity.defn(name="void_billing_correction")
    async def void_billing_correction(self, request: VoidBillingCorrectionInput) -> None:
        self._record("void_billing_correction", request)

    # -- the ERP and the store ------------------------------------------------------------------

    @activity.defn(name="correct_erp_invoice")
    async def correct_erp_invoice(self, request: CorrectErpInput) -> ErpCorrection:
        self._record("correct_erp_invoice", request)
        if self.fail_erp:
            raise ApplicationError(self.fail_erp, type="ValidationFailed", non_retryable=True)
        number = request.correction.invoice_number
        return ErpCorrection(
            credit_note_id="701",
            credit_note_number=f"CN-{number}",
            rebill_id="702",
            rebill_number=f"{number}-R1",
        )

    @activity.defn(name="record_correction")
    async def record_correction(self, request: RecordCorrectionInput) -> None:
        self._record("record_correction", request)

    def worker(self, client: Client, task_queue: str) -> AbstractAsyncContextManager[None]:
        runs = ChangeOrderRunActivities(task_queue)
        return serving(
            client,
            task_queue,
            workflows=[ChangeOrderWorkflow, ChangeOrderQueueWorkflow, FakeInvoiceRun],
            local=[
                self.change_rules,
                self.remove_contract_version,
                self.record_correction,
                *self.ledger_activities(),
                runs.enqueue_change_order,
                runs.start_change_order,
                runs.run_is_open,
            ],
            systems=[
                self.fetch_change_order,
                self.approved_change_orders,
                self.write_back_change_order,
                self.write_back_deal,
                self.preview_change_order,
                self.apply_psa_terms,
                self.restore_psa_terms,
                self.update_billing_plan,
                self.restore_billing_plan,
                self.correct_billing_invoice,
                self.void_billing_correction,
                self.correct_erp_invoice,
            ],
        )

    def crm_statuses(self, change_order_id: str | None = None) -> list[ChangeOrderStatus]:
        """What was written back to the CRM's change orders (to one of them), in order."""
        return [
            w.status
            for w in self.called("write_back_change_order")
            if change_order_id is None or w.change_order_id == change_order_id
        ]


async def start_change_order(
    client: Client, task_queue: str, change: ChangeOrder, trigger: str = "test"
) -> Handle:
    request = ChangeOrderInput(change_order_id=change.id, crm=change.crm, trigger=trigger)
    return await client.start_workflow(
        ChangeOrderWorkflow.run,
        request,
        id=workflow_id(change.crm, change.id),
        task_queue=task_queue,
    )


async def status_of(handle: WorkflowHandle[Any, Any]) -> ChangeOrderView:
    view: ChangeOrderView = await handle.query(STATUS, result_type=ChangeOrderView)
    return view


async def wait_until(
    handle: WorkflowHandle[Any, Any], done: Callable[[ChangeOrderView], bool]
) -> ChangeOrderView:
    """Poll the `status` query until `done` holds (a bound on polling, not a timed assertion)."""
    deadline = asyncio.get_running_loop().time() + STEP_WAIT_S
    while True:
        view = await status_of(handle)
        if done(view):
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run never got there; it is at {view}")
        await asyncio.sleep(0.05)


def new_deal() -> str:
    """An opportunity id of its own: one dev server (and one queue per deal) serves every test."""
    return f"006{uuid.uuid4().hex[:15].upper()}"
