"""Deals in the CRM, made through the Salesforce REST API: for the demo and the tests.

Every record is upserted on `Q2C_External_Id__c`, so seeding the same deal twice changes
nothing: the demo can run again on a stack that already has its deals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from connectors.errors import NotFound
from connectors.salesforce import SalesforceClient

EXTERNAL_ID = "Q2C_External_Id__c"
OPEN_STAGE = "Negotiation/Review"
WON_STAGE = "Closed Won"


@dataclass(frozen=True)
class DealLine:
    product: str
    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal | None = None
    role: str | None = None


@dataclass(frozen=True)
class DealSpec:
    """One account and one opportunity with its line items. `key` makes them idempotent."""

    key: str
    account_name: str
    street: str
    city: str
    postal_code: str
    country: str  # ISO alpha-2
    deal_name: str
    currency: str
    lines: list[DealLine]
    tax_id: str | None = None
    payment_terms: str | None = "Net 30"
    po_number: str | None = None
    close_date: date = field(default_factory=date.today)
    contact_email: str | None = None


@dataclass(frozen=True)
class SeededDeal:
    account_id: str
    opportunity_id: str


async def ensure_products(sf: SalesforceClient, names: set[str]) -> dict[str, str]:
    ids = {}
    for name in sorted(names):
        result = await sf.upsert(
            "Product2", EXTERNAL_ID, f"product:{name}", {"Name": name, "IsActive": True}
        )
        ids[name] = result.id
    return ids


async def seed_deal(sf: SalesforceClient, spec: DealSpec) -> SeededDeal:
    """The account, a billing contact, the opportunity (open) and its line items."""
    account: dict[str, Any] = {
        "Name": spec.account_name,
        "BillingStreet": spec.street,
        "BillingCity": spec.city,
        "BillingPostalCode": spec.postal_code,
        "BillingCountryCode": spec.country,
        "CurrencyIsoCode": spec.currency,
        "Tax_Id__c": spec.tax_id,
    }
    account_id = (await sf.upsert("Account", EXTERNAL_ID, f"{spec.key}:account", account)).id
    if spec.contact_email:
        await sf.upsert(
            "Contact",
            EXTERNAL_ID,
            f"{spec.key}:contact",
            {"LastName": "Accounts Payable", "Email": spec.contact_email, "AccountId": account_id},
        )
    opportunity_key = f"{spec.key}:opportunity"
    opportunity = {
        "Name": spec.deal_name,
        "AccountId": account_id,
        "CloseDate": spec.close_date.isoformat(),
        "CurrencyIsoCode": spec.currency,
        "Payment_Terms__c": spec.payment_terms,
        "PO_Number__c": spec.po_number,
    }
    if not await _exists(sf, "Opportunity", opportunity_key):
        # A new deal starts open; an existing one keeps its stage (a won deal stays won).
        opportunity["StageName"] = OPEN_STAGE
    opportunity_id = (await sf.upsert("Opportunity", EXTERNAL_ID, opportunity_key, opportunity)).id
    products = await ensure_products(sf, {line.product for line in spec.lines})
    for n, line in enumerate(spec.lines):
        line_key = f"{spec.key}:line:{n}"
        fields: dict[str, Any] = {
            "Quantity": line.quantity,  # Decimals go out as exact JSON numbers
            "UnitPrice": line.unit_price,
        }
        if line.discount_percent is not None:
            fields["Discount"] = line.discount_percent
        if line.role is not None:
            fields["Role__c"] = line.role
        if not await _exists(sf, "OpportunityLineItem", line_key):
            # The parent and the product can be set on create only, as in Salesforce.
            fields |= {"OpportunityId": opportunity_id, "Product2Id": products[line.product]}
        await sf.upsert("OpportunityLineItem", EXTERNAL_ID, line_key, fields)
    return SeededDeal(account_id=account_id, opportunity_id=opportunity_id)


async def _exists(sf: SalesforceClient, sobject: str, key: str) -> bool:
    try:
        await sf.get_by_external_id(sobject, EXTERNAL_ID, key, fields=["Id"])
    except NotFound:
        return False
    return True


async def close_won(sf: SalesforceClient, opportunity_id: str) -> None:
    """What a salesperson does; the CRM then notifies q2c (the Closed Won webhook)."""
    await sf.update("Opportunity", opportunity_id, {"StageName": WON_STAGE})
