"""Invoicing a project's period: its billing contract, the rated draft, finance's adjustments.

The draft lives in q2c's store (`InvoiceDraft`): a period of 20,000 time entries would not fit
in a workflow payload. Activities hand the workflow a small `DraftView` and the draft's id;
billing and the ERP build their invoices from the stored draft, so both get the same lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._base import ActivityModel
from activities.contracts import stored_contract
from activities.errors import translate_connector_errors
from activities.ports import CrmPort
from canonical import (
    AdjustmentKind,
    BillingContract,
    BillingPeriod,
    BillingType,
    Contract,
    ContractLine,
    ContractVersion,
    Customer,
    DealRules,
    DraftLine,
    DraftView,
    Invoice,
    InvoiceAdjustment,
    InvoiceLine,
    LegalEntity,
    Money,
    PaymentTerms,
    RatedPeriod,
    Rater,
    RejectedEntry,
    TaskProgress,
    billed_so_far,
    plan_deal,
    rate_upfront,
)
from canonical.invoicing import SOURCES_LISTED
from connectors.errors import ConnectorError
from store import InvoiceDraft, Store

#: Time entries per PSA request while drafting; each page is heartbeated.
PAGE_SIZE = 1000
#: Rejected entries listed in an exception's detail (the count is always complete).
REJECTED_LISTED = 200
ERP = "erp"
PSA = "psa"
BILLING = "billing"


class InvoicingPsaPort(Protocol):
    """The PSA as invoicing reads it: a project with its tasks, and its time page by page."""

    async def get_project(self, project_id: int) -> Any: ...

    async def list_time_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> Any: ...

    async def list_expense_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> Any: ...


class CustomerSource(Protocol):
    async def get_customer(
        self, party_id: int, legal_entity: LegalEntity | None = None
    ) -> Customer: ...


class LoadContractInput(ActivityModel):
    project_id: str


class ContractFacts(ActivityModel):
    """What a worker from before contracts-as-sold loaded: a run in flight may still carry it
    in its history. The workflow reads only these facts; `draft_invoice` loads the contract
    afresh for such a run."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project_id: str
    customer_id: str
    customer_name: str
    currency: str
    tax_rate: Decimal
    payment_terms: PaymentTerms
    legal_entity_code: str
    po_number: str | None = None


class ContractContext(ActivityModel):
    #: Left to right: today's contract when it validates, else an earlier worker's facts.
    contract: Annotated[BillingContract | ContractFacts, Field(union_mode="left_to_right")]
    crm: str | None
    opportunity_id: str | None
    erp_customer_id: str
    billing_customer_id: str
    customer_country: str


class DraftInput(ActivityModel):
    draft_id: str
    workflow_id: str
    period: str
    context: ContractContext
    #: "period": the month's time, fees due, milestones done and expenses. "upfront": the
    #: fixed fees' upfront shares (the provisioning invoice), filed under ``period``.
    kind: Literal["period", "upfront"] = "period"


class ProjectsInput(ActivityModel):
    calendar: str


class AdjustInput(ActivityModel):
    draft_id: str
    adjustment: InvoiceAdjustment


class DraftStatusInput(ActivityModel):
    draft_id: str
    #: "uncollectible" (billing wrote it off) or "void" (billing voided it: its time is free).
    status: str


class InvoicingActivities:
    def __init__(
        self,
        *,
        psa: InvoicingPsaPort,
        erp: CustomerSource,
        crms: Mapping[str, CrmPort],
        rules: DealRules,
        tax_rates: Mapping[str, Decimal],
        store: Store,
    ) -> None:
        self.psa = psa
        self.erp = erp
        self.crms = crms
        self.rules = rules
        self.tax_rates = tax_rates
        self.store = store

    @activity.defn
    @translate_connector_errors
    async def load_billing_contract(self, request: LoadContractInput) -> ContractContext:
        """What invoicing this project needs, from where each fact is owned: the project and
        its tasks' progress from the PSA, the customer (terms, country) from the ERP, the
        contract as sold from the CRM deal, the tax from the customer's jurisdiction. What
        was billed before is read when drafting, from q2c's store."""
        _, context = await self._load(request.project_id)
        return context

    async def _load(self, project_id: str) -> tuple[BillingContract, ContractContext]:
        project = await self.psa.get_project(int(project_id))
        if project.party_id is None:
            raise _permanent(f"project {project.id} has no customer", "NoCustomer")
        erp_customer_id = str(project.party_id)
        customer_id = await self.store.canonical_id("customer", ERP, erp_customer_id)
        billing_customer_id = (
            await self.store.external_id("customer", customer_id, BILLING) if customer_id else None
        )
        if customer_id is None or billing_customer_id is None:
            raise _permanent(
                f"project {project.id}'s customer has no billing account: provision it with "
                "opportunity-to-project first",
                "NoBillingAccount",
            )
        entity = self.rules.legal_entities.get(project.legal_entity_code)
        customer = await self.erp.get_customer(project.party_id, entity)
        country = customer.addresses[0].country
        if country not in self.tax_rates:
            raise _permanent(
                f"tax_rates: no tax rate for customers in {country} (customer {customer.name})",
                "NoTaxRate",
            )
        # The contract as provisioned, every version; a project provisioned before q2c kept
        # contracts is billed as its deal sells it today, else by the PSA's tasks and rates.
        prefix = customer_id.split(":", 1)[0]
        crm = prefix if prefix in self.crms else None
        kept = await stored_contract(self.store, str(project.id))
        if kept is None:
            crm, sold = await self._sold(customer_id, project.opportunity_id)
            kept = Contract(versions=[sold or _contract_from_psa(project)])
        contract = BillingContract(
            project_id=str(project.id),
            customer_id=customer_id,
            customer_name=customer.name,
            currency=project.currency,
            contract=kept,
            tasks=[
                TaskProgress(id=str(task.id), name=task.name, done_on=_done_on(task))
                for task in project.tasks
            ],
            tax_rate=self.tax_rates[country],
            payment_terms=customer.payment_terms,
            legal_entity_code=project.legal_entity_code,
            po_number=kept.current.po_number,
        )
        return contract, ContractContext(
            contract=contract,
            crm=crm,
            opportunity_id=project.opportunity_id,
            erp_customer_id=erp_customer_id,
            billing_customer_id=billing_customer_id,
            customer_country=country,
        )

    async def _sold(
        self, customer_id: str, opportunity_id: str | None
    ) -> tuple[str | None, ContractVersion | None]:
        """The contract as the deal sold it; None without a deal, or when the deal cannot
        be read or planned (then the PSA's tasks and rates stand in for it)."""
        crm = customer_id.split(":", 1)[0]
        port = self.crms.get(crm)
        if port is None or opportunity_id is None:
            return None, None
        try:
            opportunity = await port.fetch_opportunity(opportunity_id)
            account = await port.fetch_account(opportunity.account_id)
        except ConnectorError as exc:
            if exc.retryable:
                raise
            activity.logger.warning("deal %s unreadable, using PSA rates: %s", opportunity_id, exc)
            return crm, None
        plan = plan_deal(opportunity, account, self.rules)
        if plan.contract is None:
            activity.logger.warning(
                "deal %s has no billable contract, using PSA rates: %s",
                opportunity_id,
                "; ".join(plan.issues),
            )
        return crm, plan.contract

    @activity.defn
    async def list_invoiceable_projects(self, request: ProjectsInput) -> list[str]:
        """The PSA projects q2c provisioned (the store's cross-references), by PSA id."""
        return sorted(await self.store.external_ids("project", PSA), key=_numeric_first)

    @activity.defn
    @translate_connector_errors
    async def draft_invoice(self, request: DraftInput) -> DraftView:
        """Rate the period (its unbilled time pulled page by page) or the upfront shares,
        minus what issued invoices billed, and keep the draft in the store."""
        loaded = request.context.contract
        if not isinstance(loaded, BillingContract):
            # Loaded by a worker from before contracts-as-sold: load the contract now.
            loaded, _ = await self._load(loaded.project_id)
        period = BillingPeriod.parse(request.period)
        # What issued invoices billed is billed, whether or not the PSA shows it yet (marking
        # may have failed, or may still be to come): their entries are never billed twice,
        # nor their fees, instalments, milestones and expenses, and they count toward caps.
        issued = [
            d for d in await self.store.billed_drafts(loaded.project_id) if d.id != request.draft_id
        ]
        earlier_periods = [issued_rated(d) for d in issued]
        contract = loaded.model_copy(update={"billed": billed_so_far(earlier_periods)})
        earlier: list[str] = []
        if request.kind == "upfront":
            rated = rate_upfront(contract, on=period.start)
        else:
            earlier = [
                d.invoice_number or d.id
                for d, rated in zip(issued, earlier_periods, strict=True)
                if d.period == period.key and rated.kind == "period"
            ]
            held = {entry for rated in earlier_periods for entry in rated.billed_time_entry_ids}
            held |= {e for rated in earlier_periods for e in rated.billed_expense_ids}
            rated = await self._rate_period(contract, period, held)
        invoice = rated.to_invoice(
            invoice_id=request.draft_id,
            customer_id=contract.customer_id,
            project_id=contract.project_id,
            legal_entity_code=contract.legal_entity_code,
            po_number=contract.po_number,
            memo=(
                f"Supplementary invoice for billing period {period.key}: time not billed on "
                f"{', '.join(earlier)}"
                if earlier
                else None
            ),
        )
        await self.store.save_draft(
            InvoiceDraft(
                id=request.draft_id,
                workflow_id=request.workflow_id,
                project_id=contract.project_id,
                period=period.key,
                kind=request.kind,
                currency=contract.currency,
                rated={
                    "period": rated.model_dump(mode="json"),
                    "invoice": invoice.model_dump(mode="json"),
                    "supplementary_to": earlier,
                },
            )
        )
        if rated.rejected:
            await self._record_rejections(request, rated.rejected)
        return draft_view(request.draft_id, rated, invoice, [], earlier)

    async def _rate_period(
        self, contract: BillingContract, period: BillingPeriod, held: set[str]
    ) -> RatedPeriod:
        """The period's unbilled time and expenses, pulled page by page (each page
        heartbeated), rated; `held`: entry and expense ids issued invoices billed."""
        rater = Rater(contract, period)
        pulled = 0
        for read, add in (
            (self.psa.list_time_page, rater.add_time),
            (self.psa.list_expense_page, rater.add_expenses),
        ):
            async for page in period_pages(read, int(contract.project_id), period):
                add([e for e in page.entries if e.id not in held])
                pulled += len(page.entries)
                activity.heartbeat(pulled)
        return rater.finish()

    async def _record_rejections(self, request: DraftInput, rejected: list[RejectedEntry]) -> None:
        contract = request.context.contract
        reasons = sorted({r.reason for r in rejected})
        await self.store.record_exception(
            dedupe_key=f"{request.draft_id}:rejected",
            kind="rejected_time",
            message=(
                f"{len(rejected)} entries of project {contract.project_id} "
                f"({contract.customer_name}) in {request.period} were not billed: "
                + "; ".join(reasons[:5])
            ),
            workflow_id=request.workflow_id,
            lifecycle="time-to-invoice",
            step="draft",
            detail={"rejected": [r.model_dump(mode="json") for r in rejected[:REJECTED_LISTED]]},
        )

    @activity.defn
    async def adjust_draft(self, request: AdjustInput) -> DraftView:
        """Add finance's write-off or discount lines; the adjusted draft must stay valid."""
        row = await self.store.draft(request.draft_id)
        if row is None:
            raise _permanent(f"no invoice draft {request.draft_id}", "NoDraft")
        rated = RatedPeriod.model_validate(row.rated["period"])
        invoice = Invoice.model_validate(row.rated["invoice"])
        adjustments = [InvoiceAdjustment.model_validate(a) for a in row.adjustments]
        earlier = list(row.rated.get("supplementary_to", []))
        wanted = request.adjustment.adjustment_id
        if wanted is not None and any(a.adjustment_id == wanted for a in adjustments):
            # Applied already (a retried activity, or the same adjustment delivered again).
            return draft_view(request.draft_id, rated, invoice, adjustments, earlier)
        adjusted = with_adjustment(invoice, request.adjustment)
        if adjusted.subtotal.amount < 0:
            raise _permanent(
                f"adjustment: the invoice would be negative ({adjusted.subtotal.amount} "
                f"{adjusted.currency}); write off at most {invoice.subtotal.amount}",
                "InvalidAdjustment",
            )
        adjustments.append(request.adjustment)
        await self.store.update_draft(
            request.draft_id,
            status="adjusted",
            rated={**row.rated, "invoice": adjusted.model_dump(mode="json")},
            adjustments=[a.model_dump(mode="json") for a in adjustments],
        )
        return draft_view(request.draft_id, rated, adjusted, adjustments, earlier)

    @activity.defn
    async def set_draft_status(self, request: DraftStatusInput) -> None:
        """Record how billing ended the invoice; a void draft no longer holds its entries."""
        await self.store.update_draft(request.draft_id, status=request.status)


def with_adjustment(invoice: Invoice, adjustment: InvoiceAdjustment) -> Invoice:
    """The invoice with a negative line per adjustment line, taxed like the rest."""
    tax_rate = invoice.lines[0].tax_rate if invoice.lines else Decimal(0)
    label = {AdjustmentKind.WRITE_OFF: "Write-off", AdjustmentKind.DISCOUNT: "Discount"}
    extra = [
        InvoiceLine(
            description=f"{label[line.kind]}: {line.description} ({adjustment.reason})",
            quantity=Decimal(1),
            unit_price=Money.of(-line.amount, invoice.currency),
            tax_rate=tax_rate,
        )
        for line in adjustment.lines
    ]
    return invoice.model_copy(update={"lines": [*invoice.lines, *extra]})


def draft_view(
    draft_id: str,
    rated: RatedPeriod,
    invoice: Invoice,
    adjustments: list[InvoiceAdjustment],
    supplementary_to: list[str] | None = None,
) -> DraftView:
    return DraftView(
        draft_id=draft_id,
        currency=invoice.currency,
        lines=[
            DraftLine(
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price.amount,
                net=line.net.amount,
                tax=line.tax.amount,
                total=line.total.amount,
                contract_version=line.contract_version,
                sources=sources[:SOURCES_LISTED],
                source_count=len(sources),
            )
            for line in invoice.lines
            for sources in [rated.line_entries.get(line.id or "", line.source_ids)]
        ],
        subtotal=invoice.subtotal.amount,
        tax=invoice.tax.amount,
        total=invoice.total.amount,
        hours=rated.hours,
        overage=rated.overage.amount,
        time_entries=len(rated.billed_time_entry_ids),
        rejected_entries=len(rated.rejected),
        adjustments=adjustments,
        supplementary_to=supplementary_to or [],
    )


async def stored_invoice(store: Store, draft_id: str) -> tuple[InvoiceDraft, Invoice]:
    """The draft's invoice as finance approved it: what billing and the ERP both receive."""
    row = await store.draft(draft_id)
    if row is None:
        raise _permanent(f"no invoice draft {draft_id}", "NoDraft")
    return row, Invoice.model_validate(row.rated["invoice"])


async def period_pages(
    read: Callable[..., Awaitable[Any]], project_id: int, period: BillingPeriod
) -> AsyncIterator[Any]:
    """A PSA listing of the period's unbilled time or expenses, page by page (by cursor)."""
    after: int | None = None
    while True:
        page = await read(
            project_id, start=period.start, end=period.end, after_id=after, limit=PAGE_SIZE
        )
        yield page
        if page.next_after is None:
            return
        after = page.next_after


def issued_rated(row: InvoiceDraft) -> RatedPeriod:
    """What an issued invoice bills now: as a change order corrected it (credit note and
    re-bill), else as it was issued."""
    corrected = row.rated.get("corrected")
    return RatedPeriod.model_validate(corrected["period"] if corrected else row.rated["period"])


def _numeric_first(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (0, text)


def _permanent(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def _done_on(task: Any) -> date | None:
    """The day the PSA set the task Done; None while open (or while the PSA cannot say)."""
    if task.state != "done":
        return None
    done_on: date | None = getattr(task, "done_on", None)
    return done_on


def _contract_from_psa(project: Any) -> ContractVersion:
    """A stand-in contract when no deal can be read: every task billed by the hour at the
    PSA's rate, except those the PSA says are fixed fee or milestone (their fee unknown here,
    so only their hours are covered)."""
    lines: Sequence[ContractLine] = [
        _line_from_psa(task, project.currency) for task in project.tasks
    ]
    if not lines:
        raise _permanent(f"project {project.id} has no tasks to bill", "NoTasks")
    today = datetime.now(UTC).date()
    zero = Money.zero(project.currency)
    return ContractVersion(
        contract_id=project.project_ref or f"psa:{project.id}",
        version=1,
        effective_from=today,
        source=f"psa:{project.id}",
        currency=project.currency,
        start_date=today,
        lines=list(lines),
        payment_terms=PaymentTerms(net_days=30),
        value=zero,
    )


def _line_from_psa(task: Any, currency: str) -> ContractLine:
    kind = BillingType(getattr(task, "billing_type", None) or BillingType.TIME_AND_MATERIALS)
    hourly = kind is BillingType.TIME_AND_MATERIALS
    return ContractLine(
        id=f"psa:{task.id}",
        task=task.name,
        task_id=str(task.id),
        role=task.role,
        billing_type=BillingType.TIME_AND_MATERIALS if hourly else BillingType.FIXED_FEE,
        rate=task.rate if hourly else None,
        amount=Money.zero(currency),
    )
