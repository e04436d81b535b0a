"""Change orders: the impact of an approved amendment, and applying it downstream.

The preview is computed here, beside the data it reads (the contract as provisioned, the PSA
project, drafts awaiting approval, issued invoices), by `canonical.preview_change`: a period's
time entries never enter a workflow's history, only the preview does. Each apply step is
idempotent under the change order's key and returns what it changed, so a saga can put it
back: the PSA's terms (tasks, rates, budget, the ERP's contract value), the billing plan
(on the billing account), the contract's new version (in q2c's store).

The run activities (`enqueue_change_order`, `start_change_order`, `run_is_open`) run on the
workflow queue with the worker's Temporal client: they serialise a deal's change orders
through its queue workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.invoicing import (
    InvoicingActivities,
    issued_rated,
    period_pages,
    stored_invoice,
)
from canonical import (
    BillingPeriod,
    BillingType,
    ChangeOrder,
    ChangePolicy,
    DealRules,
    Invoice,
    InvoiceLine,
    Money,
    OutagePolicy,
    RatedPeriod,
    Task,
    TimeEntry,
    billed_so_far,
    project_id_for,
)
from canonical.impact import (
    Correction,
    ImpactPreview,
    InvalidChange,
    IssuedInvoice,
    PendingDraft,
    PsaProject,
    preview_change,
)
from connectors.errors import ConnectorError
from store import InvoiceDraft, Store

__all__ = [
    "ApplyPsaTermsInput",
    "BillingPlanChange",
    "BillingPlanInput",
    "ChangeImpact",
    "ChangeOrderActivities",
    "ChangeOrderRunActivities",
    "ChangeRules",
    "ChangeRulesInput",
    "EnqueueInput",
    "PreviewInput",
    "PsaTermsApplied",
    "RemoveVersionInput",
    "RestoreBillingPlanInput",
    "RestorePsaTermsInput",
    "RunOpenInput",
    "StartChangeOrderInput",
    "billing_plan_key",
    "billing_plan_text",
]


class ChangeRulesInput(ActivityModel):
    crm: str


class ChangeRules(ActivityModel):
    policy: ChangePolicy
    outage: OutagePolicy


class PreviewInput(ActivityModel):
    change_order: ChangeOrder


class ChangeImpact(ActivityModel):
    """The change order's impact as of now, or why there is none."""

    #: The PSA project the deal was provisioned as; None: not provisioned yet (wait).
    project_id: str | None = None
    contract_id: str | None = None
    #: A version this change order made already (a rerun after it was applied).
    applied_version: int | None = None
    preview: ImpactPreview | None = None
    #: "field: reason" lines when the change cannot apply to the contract.
    problems: list[str] = []
    billing_customer_id: str | None = None
    payment_net_days: int = 30
    #: The time-to-invoice runs whose drafts the change re-rates, by draft id.
    draft_runs: dict[str, str] = {}
    #: The issued drafts the preview's corrections correct, by invoice number.
    corrected_drafts: dict[str, str] = {}


class ApplyPsaTermsInput(ActivityModel):
    project_id: str
    preview: ImpactPreview
    idempotency_key: str


class PsaTermsApplied(ActivityModel):
    #: What `update_project_terms` changed, with the values before (for the undo).
    change: dict[str, Any]
    #: Tasks added, PSA id by task name.
    added_task_ids: dict[str, str]


class RestorePsaTermsInput(ActivityModel):
    project_id: str
    #: The key `apply_psa_terms` ran under: the PSA recorded what it changed under it.
    idempotency_key: str


class RemoveVersionInput(ActivityModel):
    contract_id: str
    version: int
    source: str


class BillingPlanInput(ActivityModel):
    billing_customer_id: str
    project_id: str
    plan: str
    idempotency_key: str


class BillingPlanChange(ActivityModel):
    #: The plan the billing account held before ("": none).
    before: str


class RestoreBillingPlanInput(ActivityModel):
    billing_customer_id: str
    project_id: str
    before: str
    idempotency_key: str


class CorrectBillingInput(ActivityModel):
    #: The issued draft whose invoice is corrected.
    draft_id: str
    correction: Correction
    billing_customer_id: str
    days_until_due: int
    #: The change order's key (`<crm>:<id>`) and name, as the documents show them.
    change_order: str
    change_order_name: str
    #: What the re-bill carries so its payment events reach the run following the invoice.
    metadata: dict[str, str] = {}
    idempotency_key: str


class BillingCorrection(ActivityModel):
    credit_note_id: str | None = None
    rebill_invoice_id: str | None = None
    rebill_number: str | None = None


class VoidBillingCorrectionInput(ActivityModel):
    correction: BillingCorrection
    idempotency_key: str


class CorrectErpInput(ActivityModel):
    draft_id: str
    correction: Correction
    reason: str
    idempotency_key: str


class ErpCorrection(ActivityModel):
    credit_note_id: str
    credit_note_number: str | None
    rebill_id: str
    rebill_number: str | None


class RecordCorrectionInput(ActivityModel):
    draft_id: str
    change_order: str
    correction: Correction
    billing: BillingCorrection
    erp: ErpCorrection


class EnqueueInput(ActivityModel):
    crm: str
    opportunity_id: str
    change_order_id: str
    workflow_id: str


class StartChangeOrderInput(ActivityModel):
    crm: str
    change_order_id: str
    trigger: str


class RunOpenInput(ActivityModel):
    workflow_id: str


def billing_plan_key(project_id: str) -> str:
    """The billing account's metadata key holding a project's plan (Stripe: 40 chars)."""
    return f"q2c_plan_{project_id}"[:40]


def billing_plan_text(preview: ImpactPreview) -> str:
    """The plan as the billing account shows it: version, since when, value and rates."""
    after = preview.after
    rates = ", ".join(
        f"{ln.task} {ln.rate.amount}/h"
        for ln in sorted(after.lines, key=lambda ln: ln.id)
        if ln.rate is not None
    )
    text = (
        f"v{after.version} from {after.effective_from.isoformat()}: value "
        f"{after.value.amount} {after.currency}" + (f"; {rates}" if rates else "")
    )
    return text[:500]  # Stripe's limit for a metadata value


# -- ports -----------------------------------------------------------------------------------


class ChangePsaPort(Protocol):
    async def get_project(self, project_id: int) -> Any: ...

    async def update_project_terms(
        self,
        project_id: int,
        *,
        task_rates: Mapping[int, Money] | None = None,
        task_hours: Mapping[int, Decimal] | None = None,
        task_billing: Mapping[int, BillingType] | None = None,
        add_tasks: Sequence[Task] = (),
        close_tasks: Sequence[int] = (),
        budget: Money | None = None,
        contract_value: Money | None = None,
        idempotency_key: str,
    ) -> Any: ...

    async def restore_project_terms(self, project_id: int, before: Any) -> None: ...

    async def recorded_terms_change(self, project_id: int, idempotency_key: str) -> Any: ...

    async def list_time_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> Any: ...

    async def list_expense_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> Any: ...

    async def list_time_entries(self, project_id: int) -> list[TimeEntry]: ...


class ChangeBillingPort(Protocol):
    async def get_customer_metadata(self, customer_id: str, key: str) -> str: ...

    async def create_credit_note(
        self,
        invoice_id: str,
        lines: Sequence[InvoiceLine],
        *,
        memo: str | None,
        idempotency_key: str,
        reason: str = ...,
    ) -> Any: ...

    async def void_credit_note(self, credit_note_id: str, *, idempotency_key: str) -> Any: ...

    async def create_invoice(
        self,
        invoice: Invoice,
        *,
        customer_id: str,
        idempotency_key: str,
        days_until_due: int,
        metadata: Mapping[str, str] | None = None,
    ) -> str: ...

    async def finalize_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice: ...

    async def void_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice: ...

    async def set_customer_metadata(
        self, customer_id: str, values: Mapping[str, str], *, idempotency_key: str
    ) -> None: ...


class ChangeErpPort(Protocol):
    async def correct_invoice(
        self,
        invoice_id: int,
        new_prices: Mapping[int, Money] | None = None,
        *,
        rebill: Mapping[int, Sequence[InvoiceLine]] | None = None,
        reason: str,
        idempotency_key: str,
    ) -> Any: ...


class ChangeOrderActivities:
    def __init__(
        self,
        *,
        psa: ChangePsaPort,
        billing: ChangeBillingPort,
        erp: ChangeErpPort,
        invoicing: InvoicingActivities,
        rules: DealRules,
        budget_threshold: Decimal,
        store: Store,
    ) -> None:
        self.psa = psa
        self.billing = billing
        self.erp = erp
        self.invoicing = invoicing
        self.rules = rules
        self.budget_threshold = budget_threshold
        self.store = store

    @activity.defn
    async def change_rules(self, request: ChangeRulesInput) -> ChangeRules:
        approval = self.rules.approval
        return ChangeRules(
            policy=ChangePolicy(
                budget_threshold=self.budget_threshold,
                approvers=approval.approvers,
                remind_after=approval.remind_after,
                expire_after=approval.expire_after,
            ),
            outage=self.rules.outage,
        )

    @activity.defn
    @translate_connector_errors
    async def preview_change_order(self, request: PreviewInput) -> ChangeImpact:
        change = request.change_order
        contract_id = project_id_for(change.crm, change.opportunity_id)
        rows = await self.store.contract_versions(contract_id=contract_id)
        if not rows:
            return ChangeImpact(contract_id=contract_id)
        project_id = rows[0].project_id
        made = [r.version for r in rows if r.source == change_source(change)]
        if made:
            return ChangeImpact(
                project_id=project_id, contract_id=contract_id, applied_version=made[0]
            )
        billing, context = await self.invoicing._load(project_id)
        issued_rows = await self.store.billed_drafts(project_id)
        issued, problems = await self._issued(project_id, change, issued_rows)
        if problems:
            return ChangeImpact(project_id=project_id, contract_id=contract_id, problems=problems)
        billing = billing.model_copy(update={"billed": billed_so_far([i.rated for i in issued])})
        project = await self.psa.get_project(int(project_id))
        psa = PsaProject(
            budget=project.budget,
            tasks=[
                Task(
                    id=str(t.id),
                    name=t.name,
                    role=t.role,
                    rate=t.rate,
                    planned_hours=t.planned_hours,
                    billing_type=t.billing_type,
                )
                for t in project.tasks
            ],
        )
        # Drafts awaiting finance: their run is still open (a rejected one's has ended).
        open_drafts = [
            d
            for d in await self.store.open_drafts(project_id)
            if d.kind == "period" and await run_open(activity.client(), d.workflow_id)
        ]
        drafts = [
            await self._pending(project_id, d.id, RatedPeriod.model_validate(d.rated["period"]))
            for d in open_drafts
        ]
        try:
            preview = preview_change(change, billing, psa=psa, drafts=drafts, issued=issued)
        except InvalidChange as exc:
            return ChangeImpact(
                project_id=project_id, contract_id=contract_id, problems=exc.problems
            )
        # Every correction must be possible everywhere before anything is applied: a refusal
        # after billing corrected an invoice would leave the ERP and billing apart.
        by_number = {(d.invoice_number or d.id): d for d in issued_rows}
        unfit = []
        for fix in preview.corrections:
            row = by_number.get(fix.invoice_number)
            if row is None:
                unfit.append(f"retroactive: invoice {fix.invoice_number} is not q2c's")
                continue
            _, problem = erp_rebill_plan(row, Invoice.model_validate(row.rated["invoice"]), fix)
            if problem is not None:
                unfit.append(problem)
        if unfit:
            return ChangeImpact(project_id=project_id, contract_id=contract_id, problems=unfit)
        return ChangeImpact(
            project_id=project_id,
            contract_id=contract_id,
            preview=preview,
            billing_customer_id=context.billing_customer_id,
            payment_net_days=billing.payment_terms.net_days,
            draft_runs={d.id: d.workflow_id for d in open_drafts},
            corrected_drafts={
                c.invoice_number: d.id
                for c in preview.corrections
                for d in issued_rows
                if (d.invoice_number or d.id) == c.invoice_number
            },
        )

    async def _issued(
        self, project_id: str, change: ChangeOrder, rows: Sequence[InvoiceDraft]
    ) -> tuple[list[IssuedInvoice], list[str]]:
        """The project's issued invoices as they bill now; for a retroactive change, those
        it reaches back into with the time entries they billed (to re-rate them), or why
        one of them cannot be corrected by a credit note and a re-bill."""
        issued: list[IssuedInvoice] = []
        problems: list[str] = []
        entries: dict[str, TimeEntry] | None = None
        for row in rows:
            rated = issued_rated(row)
            reached = (
                change.retroactive
                and rated.kind == "period"
                and rated.period.end >= change.effective_date
            )
            number = row.invoice_number or row.id
            billed: list[TimeEntry] = []
            if reached:
                where = f"retroactive: invoice {number} ({rated.period.key})"
                if row.rated.get("corrected"):
                    problems.append(f"{where} was corrected by a change order before")
                elif row.adjustments:
                    problems.append(f"{where} was adjusted by finance before it was issued")
                elif rated.billed_expense_ids:
                    problems.append(f"{where} bills expenses, which q2c does not re-rate")
                if entries is None:
                    entries = {e.id: e for e in await self.psa.list_time_entries(int(project_id))}
                billed = [entries[i] for i in rated.billed_time_entry_ids if i in entries]
            issued.append(
                IssuedInvoice(
                    number=number, invoice_id=row.billing_invoice_id, rated=rated, entries=billed
                )
            )
        return issued, problems

    async def _pending(self, project_id: str, draft_id: str, rated: RatedPeriod) -> PendingDraft:
        """A draft with its period's unbilled time and expenses, to re-rate it."""
        period: BillingPeriod = rated.period
        found: list[list[Any]] = [[], []]
        for i, read in enumerate((self.psa.list_time_page, self.psa.list_expense_page)):
            async for page in period_pages(read, int(project_id), period):
                found[i].extend(page.entries)
                activity.heartbeat(draft_id)
        return PendingDraft(draft_id=draft_id, rated=rated, entries=found[0], expenses=found[1])

    @activity.defn
    @translate_connector_errors
    async def apply_psa_terms(self, request: ApplyPsaTermsInput) -> PsaTermsApplied:
        """The project's tasks, rates and budget, and the contract value the ERP keeps with
        it, as the preview says; only what the preview changes is touched."""
        preview = request.preview
        after = preview.after
        task_rates: dict[int, Money] = {}
        task_hours: dict[int, Decimal] = {}
        task_billing: dict[int, BillingType] = {}
        add: list[Task] = []
        close: list[int] = []
        for change in preview.tasks:
            line = after.line(change.line_id)
            if change.action == "close" and change.task_id is not None:
                close.append(int(change.task_id))
            elif change.action == "add" and line is not None:
                add.append(
                    Task(
                        name=line.task,
                        role=line.role,
                        rate=line.rate,
                        planned_hours=line.hours,
                        billing_type=line.billing_type,
                    )
                )
            elif line is not None and change.task_id is not None:
                fields = {c.field for c in change.changes}
                if line.rate is not None and "rate" in fields:
                    task_rates[int(change.task_id)] = line.rate
                if line.hours is not None and "planned hours" in fields:
                    task_hours[int(change.task_id)] = line.hours
                if "billing type" in fields:
                    task_billing[int(change.task_id)] = line.billing_type
        value_changed = any(
            c.subject == "Contract" and c.field == "value" for c in preview.contract
        )
        made = await self.psa.update_project_terms(
            int(request.project_id),
            task_rates=task_rates,
            task_hours=task_hours,
            task_billing=task_billing,
            add_tasks=add,
            close_tasks=close,
            budget=preview.psa_budget.after if preview.psa_budget is not None else None,
            contract_value=after.value if value_changed else None,
            idempotency_key=request.idempotency_key,
        )
        return PsaTermsApplied(
            change=made.model_dump(mode="json"),
            added_task_ids={name: str(i) for name, i in made.added_task_ids.items()},
        )

    @activity.defn
    @translate_connector_errors
    async def restore_psa_terms(self, request: RestorePsaTermsInput) -> None:
        """Put back what `apply_psa_terms` changed under the key, even if it failed midway
        (the PSA records the change before making it); nothing when it never got that far."""
        project_id = int(request.project_id)
        before = await self.psa.recorded_terms_change(project_id, request.idempotency_key)
        if before is not None:
            await self.psa.restore_project_terms(project_id, before)

    @activity.defn
    async def remove_contract_version(self, request: RemoveVersionInput) -> None:
        """Undo a version this change order recorded (only one it made: `source` says so)."""
        await self.store.remove_contract_version(
            request.contract_id, request.version, source=request.source
        )

    @activity.defn
    @translate_connector_errors
    async def update_billing_plan(self, request: BillingPlanInput) -> BillingPlanChange:
        key = billing_plan_key(request.project_id)
        before = await self.billing.get_customer_metadata(request.billing_customer_id, key)
        await self.billing.set_customer_metadata(
            request.billing_customer_id,
            {key: request.plan},
            idempotency_key=request.idempotency_key,
        )
        # A retry after the write reads the new plan as "before": the saga's undo then
        # keeps it, so the first attempt's reading is what the workflow keeps (it gets
        # only one result); the undo is told the plan to restore explicitly.
        return BillingPlanChange(before="" if before == request.plan else before)

    @activity.defn
    @translate_connector_errors
    async def restore_billing_plan(self, request: RestoreBillingPlanInput) -> None:
        await self.billing.set_customer_metadata(
            request.billing_customer_id,
            {billing_plan_key(request.project_id): request.before},
            idempotency_key=request.idempotency_key,
        )

    # -- corrections of issued invoices (retroactive changes) ------------------------------

    @activity.defn
    @translate_connector_errors
    async def correct_billing_invoice(self, request: CorrectBillingInput) -> BillingCorrection:
        """A credit note for the invoice's lines the new terms change, on the invoice itself
        (which stays as it was), and a re-bill of them at the new terms, finalized."""
        correction = request.correction
        row, issued = await stored_invoice(self.store, request.draft_id)
        if correction.invoice_id is None:
            raise ApplicationError(
                f"invoice {correction.invoice_number} has no billing invoice to credit",
                type="NothingToCredit",
                non_retryable=True,
            )
        why = f"Change order {request.change_order_name} ({request.change_order})"
        made = BillingCorrection()
        if correction.credit_lines:
            note = await self.billing.create_credit_note(
                correction.invoice_id,
                correction.credit_lines,
                memo=f"{why}: credit of invoice {correction.invoice_number}",
                idempotency_key=f"{request.idempotency_key}:credit",
            )
            made = made.model_copy(update={"credit_note_id": note.id})
        if correction.rebill_lines:
            rebill = issued.model_copy(
                update={
                    "id": f"{row.id}:rebill:{request.change_order}",
                    "lines": correction.rebill_lines,
                    "due_date": None,
                    "memo": f"{why}: re-bill of invoice {correction.invoice_number} "
                    f"({correction.period}) at the amended terms",
                }
            )
            try:
                invoice_id = await self.billing.create_invoice(
                    rebill,
                    customer_id=request.billing_customer_id,
                    idempotency_key=f"{request.idempotency_key}:rebill",
                    days_until_due=request.days_until_due,
                    metadata={**request.metadata, "q2c_corrects": correction.invoice_number},
                )
                final = await self.billing.finalize_invoice(
                    invoice_id, idempotency_key=f"{request.idempotency_key}:rebill:finalize"
                )
            except ConnectorError as exc:
                # Refused for good: the credit note must not stand without its re-bill (the
                # saga never saw this step succeed, so it would not void it).
                if not exc.retryable and made.credit_note_id is not None:
                    await self.billing.void_credit_note(
                        made.credit_note_id, idempotency_key=f"{request.idempotency_key}:undo"
                    )
                raise
            made = made.model_copy(
                update={"rebill_invoice_id": invoice_id, "rebill_number": final.number}
            )
        return made

    @activity.defn
    @translate_connector_errors
    async def void_billing_correction(self, request: VoidBillingCorrectionInput) -> None:
        """Undo a correction in billing: the credit note and the re-bill voided."""
        made = request.correction
        if made.credit_note_id is not None:
            await self.billing.void_credit_note(
                made.credit_note_id, idempotency_key=f"{request.idempotency_key}:credit"
            )
        if made.rebill_invoice_id is not None:
            await self.billing.void_invoice(
                made.rebill_invoice_id, idempotency_key=f"{request.idempotency_key}:rebill"
            )

    @activity.defn
    @translate_connector_errors
    async def correct_erp_invoice(self, request: CorrectErpInput) -> ErpCorrection:
        """The same correction in the ERP: a posted credit note of the changed lines and a
        posted re-bill at the new terms (`erp_rebill_plan`); the posted invoice stays as it
        was. The preview checked the plan before anything was applied."""
        correction = request.correction
        row, issued = await stored_invoice(self.store, request.draft_id)
        plan, problem = erp_rebill_plan(row, issued, correction)
        if problem is not None or row.erp_invoice_id is None:
            raise ApplicationError(
                problem or "no ERP invoice", type="NotCorrectable", non_retryable=True
            )
        made = await self.erp.correct_invoice(
            int(row.erp_invoice_id),
            rebill=plan,
            reason=request.reason,
            idempotency_key=request.idempotency_key,
        )
        return ErpCorrection(
            credit_note_id=str(made.credit_note.id),
            credit_note_number=made.credit_note.number,
            rebill_id=str(made.rebill.id),
            rebill_number=made.rebill.number,
        )

    @activity.defn
    async def record_correction(self, request: RecordCorrectionInput) -> None:
        """Keep with the issued invoice what it bills now, and the documents that say so:
        later periods count its entries, items and amounts toward caps as corrected."""
        row = await self.store.draft(request.draft_id)
        if row is None:
            raise ApplicationError(f"no invoice draft {request.draft_id}", non_retryable=True)
        corrected = {
            "change_order": request.change_order,
            "period": request.correction.rerated.model_dump(mode="json"),
            "billing": request.billing.model_dump(mode="json"),
            "erp": request.erp.model_dump(mode="json"),
        }
        await self.store.update_draft(request.draft_id, rated={**row.rated, "corrected": corrected})


def erp_rebill_plan(
    row: InvoiceDraft, issued: Invoice, correction: Correction
) -> tuple[dict[int, list[InvoiceLine]], str | None]:
    """Each credited line's ERP line id with the lines it is re-billed as, or why the
    correction cannot be made in the ERP. A re-billed line belongs to the credited line
    whose entries it bills (a line split at the effective date has two), so it takes that
    line's account and taxes there."""
    number = correction.invoice_number
    if row.erp_invoice_id is None or len(row.erp_line_ids) != len(issued.lines):
        return {}, f"retroactive: invoice {number} has no ERP invoice matching its lines"
    original = issued_rated(row)

    def billed_by(line: InvoiceLine, rated: RatedPeriod) -> set[str]:
        """What a line bills: its time entries (a grouped time line lists them apart)."""
        return set(rated.line_entries.get(line.id or "", [])) | set(line.source_ids)

    plan: dict[int, list[InvoiceLine]] = {}
    owners: list[tuple[set[str], int]] = []
    used: set[int] = set()
    for credited in correction.credit_lines:
        index = next(
            (i for i, ln in enumerate(issued.lines) if i not in used and ln == credited), None
        )
        if index is None:
            return {}, f"retroactive: invoice {number} does not hold {credited.description!r}"
        used.add(index)
        line_id = int(row.erp_line_ids[index])
        plan[line_id] = []
        owners.append((billed_by(credited, original), line_id))
    for line in correction.rebill_lines:
        sources = billed_by(line, correction.rerated)
        # A line the change leaves as it was (a fee, an instalment) has its twin credited.
        twin = next(
            (
                i
                for c, (_, i) in zip(correction.credit_lines, owners, strict=True)
                if _same(c, line)
            ),
            None,
        )
        owner = twin or next((i for own, i in owners if sources and sources <= own), None)
        if owner is None:
            return {}, (
                f"retroactive: the re-bill of invoice {number} has {line.description!r}, "
                "which no credited line bills; the ERP re-bills credited lines only"
            )
        plan[owner].append(line)
    return plan, None


def _same(a: InvoiceLine, b: InvoiceLine) -> bool:
    """The same line as the customer reads it (another contract version is no difference)."""
    return (a.description, a.quantity, a.unit_price, a.tax_rate) == (
        b.description,
        b.quantity,
        b.unit_price,
        b.tax_rate,
    )


def change_source(change: ChangeOrder) -> str:
    """What a contract version made by this change order records as its source."""
    return f"change-order:{change.key}"


class ChangeOrderRunActivities:
    """Starting and signalling change-order runs with the worker's Temporal client."""

    def __init__(self, task_queue: str) -> None:
        self.task_queue = task_queue

    # The starters import the workflows, which name these activities: imported on use.

    @activity.defn
    async def enqueue_change_order(self, request: EnqueueInput) -> None:
        from workflows.starters import enqueue_change_order

        await enqueue_change_order(
            activity.client(),
            self.task_queue,
            crm=request.crm,
            opportunity_id=request.opportunity_id,
            change_order_id=request.change_order_id,
            workflow_id=request.workflow_id,
        )

    @activity.defn
    async def start_change_order(self, request: StartChangeOrderInput) -> str:
        from workflows.starters import start_change_order_run

        started = await start_change_order_run(
            activity.client(),
            self.task_queue,
            request.change_order_id,
            crm=request.crm,
            trigger=request.trigger,
        )
        return started.workflow_id

    @activity.defn
    async def run_is_open(self, request: RunOpenInput) -> bool:
        return await run_open(activity.client(), request.workflow_id)


async def run_open(client: Client, workflow_id: str) -> bool:
    """Whether the workflow's latest run is still running."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return described.close_time is None
