"""The ERP role: the customer financial master."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.invoicing import stored_invoice
from activities.ports import ErpPort
from canonical import BillingPeriod, Customer, Entity, Money, System, survive
from store import Store


class UpsertCustomerInput(ActivityModel):
    customer: Customer
    #: Which system the customer data comes from: it wins only the fields it owns.
    source: System = System.CRM


class UpsertCustomerResult(ActivityModel):
    erp_customer_id: str
    created: bool


class PostErpInvoiceInput(ActivityModel):
    draft_id: str
    erp_customer_id: str
    #: The billing invoice's number: the ERP invoice refers to it.
    reference: str
    payment_net_days: int
    idempotency_key: str


class ErpPosted(ActivityModel):
    erp_invoice_id: str
    number: str | None
    total: Decimal


class DiscardErpDraftInput(ActivityModel):
    draft_id: str


class CreditErpInvoiceInput(ActivityModel):
    draft_id: str
    reason: str


class ErpCredited(ActivityModel):
    erp_invoice_id: str | None
    credit_note_id: str | None


class RecordErpPaymentInput(ActivityModel):
    draft_id: str
    erp_invoice_id: str
    amount: Decimal
    currency: str
    paid_on: date
    reference: str
    idempotency_key: str


class ErpActivities:
    def __init__(self, erp: ErpPort, store: Store) -> None:
        self.erp = erp
        self.store = store

    @activity.defn
    @translate_connector_errors
    async def upsert_customer(self, request: UpsertCustomerInput) -> UpsertCustomerResult:
        """Match by the canonical id (the CRM account): never a second customer for one account.

        An existing customer keeps what the ERP owns (legal entity, tax id, terms...) and takes
        from the source what the source owns, by the survivorship rules in `canonical`.
        """
        incoming = request.customer
        current = await self.erp.find_customer_record(incoming.id, incoming.legal_entity)
        merged = incoming
        if current is not None:
            merged = survive(Entity.CUSTOMER, current, incoming, request.source)
        party_id = await self.erp.upsert_customer(merged, incoming.id)
        return UpsertCustomerResult(erp_customer_id=str(party_id), created=current is None)

    @activity.defn
    @translate_connector_errors
    async def post_erp_invoice(self, request: PostErpInvoiceInput) -> ErpPosted:
        """The customer invoice with the same lines as billing's, posted; totals must agree."""
        row, invoice = await stored_invoice(self.store, request.draft_id)
        created = await self.erp.create_invoice(
            invoice,
            party_id=int(request.erp_customer_id),
            reference=request.reference,
            idempotency_key=request.idempotency_key,
            payment_net_days=request.payment_net_days,
        )
        await self.store.update_draft(
            request.draft_id, erp_invoice_id=str(created.id), erp_line_ids=list(created.line_ids)
        )
        posted = await self.erp.post_invoice(created.id)
        if posted.total != invoice.total:
            raise ApplicationError(
                f"ERP invoice {created.id} totals {posted.total.amount} {posted.currency}, "
                f"billing {invoice.total.amount} {invoice.currency}",
                type="TotalsDisagree",
                non_retryable=True,
            )
        if invoice.legal_entity_code is not None:
            # Deferred revenue is recognized month by month as months are invoiced: up to
            # this invoice's period, for every deferral of its legal entity (idempotent).
            period = BillingPeriod.parse(row.period)
            await self.erp.recognize_revenue(invoice.legal_entity_code, up_to=period.end)
        return ErpPosted(
            erp_invoice_id=str(created.id), number=posted.number, total=posted.total.amount
        )

    @activity.defn
    @translate_connector_errors
    async def discard_erp_draft(self, request: DiscardErpDraftInput) -> None:
        """Compensation: the ERP holds no receivable that billing voided. An invoice never
        posted is deleted; one posted (its total disagreed with billing's) is credited."""
        row, _ = await stored_invoice(self.store, request.draft_id)
        if row.erp_invoice_id is not None:
            await self.erp.credit_invoice(
                int(row.erp_invoice_id), reason="billing voided its invoice"
            )

    @activity.defn
    @translate_connector_errors
    async def credit_erp_invoice(self, request: CreditErpInvoiceInput) -> ErpCredited:
        """Billing voided an issued invoice: the ERP's receivable goes too, by a credit note
        (the books keep both). Repeating it finds the credit note made before."""
        row, _ = await stored_invoice(self.store, request.draft_id)
        credit = None
        if row.erp_invoice_id is not None:
            credit = await self.erp.credit_invoice(int(row.erp_invoice_id), reason=request.reason)
        return ErpCredited(
            erp_invoice_id=row.erp_invoice_id,
            credit_note_id=str(credit) if credit is not None else None,
        )

    @activity.defn
    @translate_connector_errors
    async def record_erp_payment(self, request: RecordErpPaymentInput) -> None:
        await self.erp.record_payment(
            int(request.erp_invoice_id),
            amount=Money.of(request.amount, request.currency),
            paid_on=request.paid_on,
            reference=request.reference,
            idempotency_key=request.idempotency_key,
        )
        await self.store.update_draft(request.draft_id, status="paid")
