"""Deals in the CRM, made through the Salesforce REST API: for the demo and the tests.

Every record is upserted on `Q2C_External_Id__c`, so seeding the same deal twice changes
nothing: the demo can run again on a stack that already has its deals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from connectors.errors import NotFound
from connectors.salesforce import SalesforceClient

EXTERNAL_ID = "Q2C_External_Id__c"
OPEN_STAGE = "Negotiation/Review"
WON_STAGE = "Closed Won"

#: `OpportunityLineItem.Billing_Type__c`; a line without one is billed as the catalogue says.
BillingTypeValue = Literal["Time and Materials", "Fixed Fee", "Milestone"]
#: `OpportunityLineItem.Fee_Schedule__c`: how a fixed fee's part not invoiced up front is.
FeeScheduleValue = Literal["On Completion", "Monthly Instalments"]


@dataclass(frozen=True)
class DealLine:
    """One line item, in Salesforce's own values (picklist labels, percent as 20 for 20 %)."""

    product: str
    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal | None = None
    role: str | None = None
    description: str | None = None
    billing_type: BillingTypeValue | None = None
    fee_schedule: FeeScheduleValue | None = None
    instalments: int | None = None
    not_to_exceed: Decimal | None = None


@dataclass(frozen=True)
class DealMilestone:
    """A `Milestone__c` of the deal, on the line at index `line` of `DealSpec.lines`."""

    name: str
    line: int
    amount: Decimal
    planned_date: date | None = None


@dataclass(frozen=True)
class DealSpec:
    """One account and one opportunity with its line items and milestones, and the contract's
    terms held on the opportunity. `key` makes them idempotent."""

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
    milestones: Sequence[DealMilestone] = ()
    not_to_exceed: Decimal | None = None  # the whole contract's cap
    upfront_percent: Decimal | None = None  # of each fixed fee, invoiced at provisioning
    end_date: date | None = None  # the contract's last day
    expense_markup_percent: Decimal | None = None
    billable_expense_categories: Sequence[str] = ()


@dataclass(frozen=True)
class SeededDeal:
    account_id: str
    opportunity_id: str
    line_ids: tuple[str, ...] = ()  # in the order of `DealSpec.lines`
    milestone_ids: tuple[str, ...] = ()  # in the order of `DealSpec.milestones`


async def ensure_products(sf: SalesforceClient, names: set[str]) -> dict[str, str]:
    ids = {}
    for name in sorted(names):
        result = await sf.upsert(
            "Product2", EXTERNAL_ID, f"product:{name}", {"Name": name, "IsActive": True}
        )
        ids[name] = result.id
    return ids


async def seed_deal(sf: SalesforceClient, spec: DealSpec) -> SeededDeal:
    """The account, a billing contact, the opportunity (open), its line items and its
    milestones. The contract's fields are written even when empty, so seeding a changed spec
    again leaves the deal as the spec says."""
    for milestone in spec.milestones:
        if not 0 <= milestone.line < len(spec.lines):
            raise ValueError(f"milestone {milestone.name!r}: no line {milestone.line} in the deal")
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
        "Not_To_Exceed__c": spec.not_to_exceed,
        "Upfront_Percent__c": spec.upfront_percent,
        "Contract_End_Date__c": spec.end_date.isoformat() if spec.end_date else None,
        "Expense_Markup_Percent__c": spec.expense_markup_percent,
        # A multi-select picklist travels as one string, its values separated by ";".
        "Billable_Expense_Categories__c": ";".join(spec.billable_expense_categories) or None,
    }
    if not await _exists(sf, "Opportunity", opportunity_key):
        # A new deal starts open; an existing one keeps its stage (a won deal stays won).
        opportunity["StageName"] = OPEN_STAGE
    opportunity_id = (await sf.upsert("Opportunity", EXTERNAL_ID, opportunity_key, opportunity)).id
    products = await ensure_products(sf, {line.product for line in spec.lines})
    line_ids: list[str] = []
    for n, line in enumerate(spec.lines):
        line_key = f"{spec.key}:line:{n}"
        fields: dict[str, Any] = {
            "Quantity": line.quantity,  # Decimals go out as exact JSON numbers
            "UnitPrice": line.unit_price,
            "Billing_Type__c": line.billing_type,
            "Fee_Schedule__c": line.fee_schedule,
            "Instalments__c": line.instalments,
            "Not_To_Exceed__c": line.not_to_exceed,
        }
        if line.discount_percent is not None:
            fields["Discount"] = line.discount_percent
        if line.role is not None:
            fields["Role__c"] = line.role
        if line.description is not None:
            fields["Description"] = line.description
        if not await _exists(sf, "OpportunityLineItem", line_key):
            # The parent and the product can be set on create only, as in Salesforce.
            fields |= {"OpportunityId": opportunity_id, "Product2Id": products[line.product]}
        line_ids.append((await sf.upsert("OpportunityLineItem", EXTERNAL_ID, line_key, fields)).id)
    milestone_ids = []
    for n, milestone in enumerate(spec.milestones):
        planned = milestone.planned_date
        fields = {
            "Name": milestone.name,
            "Opportunity__c": opportunity_id,
            # Salesforce cannot look up a line item: its id is kept as text.
            "Line_Item_Id__c": line_ids[milestone.line],
            "Amount__c": milestone.amount,
            "Planned_Date__c": planned.isoformat() if planned else None,
            # A lookup child keeps its own currency: the deal's, set explicitly.
            "CurrencyIsoCode": spec.currency,
        }
        key = f"{spec.key}:milestone:{n}"
        milestone_ids.append((await sf.upsert("Milestone__c", EXTERNAL_ID, key, fields)).id)
    return SeededDeal(
        account_id=account_id,
        opportunity_id=opportunity_id,
        line_ids=tuple(line_ids),
        milestone_ids=tuple(milestone_ids),
    )


async def _exists(sf: SalesforceClient, sobject: str, key: str) -> bool:
    try:
        await sf.get_by_external_id(sobject, EXTERNAL_ID, key, fields=["Id"])
    except NotFound:
        return False
    return True


async def close_won(sf: SalesforceClient, opportunity_id: str) -> None:
    """What a salesperson does; the CRM then notifies q2c (the Closed Won webhook)."""
    await sf.update("Opportunity", opportunity_id, {"StageName": WON_STAGE})
