"""The billing role: billing accounts (and, in time-to-invoice, invoices)."""

from __future__ import annotations

from temporalio import activity

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.ports import BillingPort
from canonical import Customer
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
            await self.billing.update_customer(
                known, customer, idempotency_key=f"{request.idempotency_key}:update"
            )
            await self.billing.set_customer_status(
                known, ACTIVE, idempotency_key=f"{request.idempotency_key}:status"
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
