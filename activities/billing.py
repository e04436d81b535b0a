"""The billing role: billing accounts (and, in time-to-invoice, invoices)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.invoicing import stored_invoice
from activities.ports import BillingPort
from canonical import Customer, InvoiceStatus
from store import Store

#: The store's name for the billing system's customer ids.
BILLING_SYSTEM = "billing"
ACTIVE = "active"
INACTIVE = "inactive"


class ProvisionBillingInput(ActivityModel):
    customer: Customer
    idempotency_key: str


class ProvisionBillingResult(ActivityModel):
    billing_customer_id: str
    created: bool


class DeactivateBillingInput(ActivityModel):
    billing_customer_id: str
    reason: str
    idempotency_key: str


class CreateBillingInvoiceInput(ActivityModel):
    draft_id: str
    billing_customer_id: str
    #: What billing keeps on the invoice: its payment webhooks name the run through it.
    metadata: dict[str, str]
    days_until_due: int
    idempotency_key: str


class BillingInvoiceResult(ActivityModel):
    billing_invoice_id: str


class FinalizeBillingInvoiceInput(ActivityModel):
    draft_id: str
    billing_invoice_id: str
    idempotency_key: str


class FinalizedInvoice(ActivityModel):
    billing_invoice_id: str
    number: str
    total: Decimal
    currency: str
    due_date: date | None


class VoidBillingInvoiceInput(ActivityModel):
    draft_id: str
    billing_invoice_id: str
    reason: str
    idempotency_key: str


class BillingActivities:
    def __init__(self, billing: BillingPort, store: Store) -> None:
        self.billing = billing
        self.store = store

    @activity.defn
    @translate_connector_errors
    async def provision_billing_customer(
        self, request: ProvisionBillingInput
    ) -> ProvisionBillingResult:
        """One billing account per customer, for good: the store remembers it past the
        vendor's idempotency window (Stripe keeps keys for 24 hours)."""
        customer = request.customer
        known = await self.store.external_id("customer", customer.id, BILLING_SYSTEM)
        if known is not None:
            # The key protects the account's creation; an update is this run's own request
            # (a later run's update must not get this one's answer from the vendor's cache).
            run = activity.info().workflow_run_id
            await self.billing.update_customer(
                known, customer, idempotency_key=f"{request.idempotency_key}:update:{run}"
            )
            await self.billing.set_customer_status(
                known, ACTIVE, idempotency_key=f"{request.idempotency_key}:status:{run}"
            )
            return ProvisionBillingResult(billing_customer_id=known, created=False)
        created = await self.billing.create_customer(
            customer, idempotency_key=request.idempotency_key
        )
        await self.store.link("customer", customer.id, BILLING_SYSTEM, created)
        return ProvisionBillingResult(billing_customer_id=created, created=True)

    @activity.defn
    @translate_connector_errors
    async def deactivate_billing_customer(self, request: DeactivateBillingInput) -> None:
        """Compensation: the account stays (invoices may refer to it) but is marked inactive."""
        activity.logger.info(
            "deactivating billing customer %s: %s", request.billing_customer_id, request.reason
        )
        await self.billing.set_customer_status(
            request.billing_customer_id, INACTIVE, idempotency_key=request.idempotency_key
        )

    @activity.defn
    @translate_connector_errors
    async def create_billing_invoice(
        self, request: CreateBillingInvoiceInput
    ) -> BillingInvoiceResult:
        row, invoice = await stored_invoice(self.store, request.draft_id)
        if row.billing_invoice_id is not None:
            # Made by an earlier attempt: the store remembers past Stripe's 24-hour window.
            return BillingInvoiceResult(billing_invoice_id=row.billing_invoice_id)
        invoice_id = await self.billing.create_invoice(
            invoice,
            customer_id=request.billing_customer_id,
            idempotency_key=request.idempotency_key,
            days_until_due=request.days_until_due,
            metadata=request.metadata,
        )
        await self.store.update_draft(request.draft_id, billing_invoice_id=invoice_id)
        return BillingInvoiceResult(billing_invoice_id=invoice_id)

    @activity.defn
    @translate_connector_errors
    async def finalize_billing_invoice(
        self, request: FinalizeBillingInvoiceInput
    ) -> FinalizedInvoice:
        """Numbered and open; its total must be the draft's, or billing and q2c disagree."""
        _, draft = await stored_invoice(self.store, request.draft_id)
        final = await self.billing.finalize_invoice(
            request.billing_invoice_id, idempotency_key=request.idempotency_key
        )
        if final.total != draft.total:
            raise ApplicationError(
                f"billing invoice {request.billing_invoice_id} totals {final.total.amount} "
                f"{final.currency}, the approved draft {draft.total.amount} {draft.currency}",
                type="TotalsDisagree",
                non_retryable=True,
            )
        assert final.number is not None  # a finalized invoice is numbered
        await self.store.update_draft(
            request.draft_id, status="billed", invoice_number=final.number
        )
        return FinalizedInvoice(
            billing_invoice_id=request.billing_invoice_id,
            number=final.number,
            total=final.total.amount,
            currency=final.currency,
            due_date=final.due_date,
        )

    @activity.defn
    @translate_connector_errors
    async def void_billing_invoice(self, request: VoidBillingInvoiceInput) -> None:
        """Compensation: the customer must not be asked to pay what the ERP does not hold.

        Registered before finalize, so it may find the invoice still a draft: a draft is
        deleted (Stripe voids only finalized invoices); a void one stays void."""
        activity.logger.info("voiding %s: %s", request.billing_invoice_id, request.reason)
        current = await self.billing.get_invoice(request.billing_invoice_id)
        if current.status == InvoiceStatus.DRAFT:
            await self.billing.delete_draft_invoice(
                request.billing_invoice_id, idempotency_key=request.idempotency_key
            )
        elif current.status != InvoiceStatus.VOID:
            await self.billing.void_invoice(
                request.billing_invoice_id, idempotency_key=request.idempotency_key
            )
        await self.store.update_draft(request.draft_id, status="void")
