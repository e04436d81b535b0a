"""Deals and their change orders in the CRM, made through the Salesforce REST API: for the
demo and the tests.

Every record is upserted on `Q2C_External_Id__c`, so seeding the same deal twice changes
nothing: the demo can run again on a stack that already has its deals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from connectors.errors import NotFound
from connectors.salesforce import SalesforceClient, soql_datetime, soql_literal

EXTERNAL_ID = "Q2C_External_Id__c"
OPEN_STAGE = "Negotiation/Review"
WON_STAGE = "Closed Won"

#: `OpportunityLineItem.Billing_Type__c`; a line without one is billed as the catalogue says.
BillingTypeValue = Literal["Time and Materials", "Fixed Fee", "Milestone"]
#: `OpportunityLineItem.Fee_Schedule__c`: how a fixed fee's part not invoiced up front is.
FeeScheduleValue = Literal["On Completion", "Monthly Instalments"]
#: `Change_Order_Line__c.Action__c` and `Change_Order_Milestone__c.Action__c`.
ChangeActionValue = Literal["Add", "Remove", "Change"]
APPROVED_STATUS = "Approved"


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


# ---------------------------------------------------------------- change orders


@dataclass(frozen=True)
class ChangeOrderLine:
    """A `Change_Order_Line__c`, in Salesforce's values. `line` names the deal's line removed
    or re-priced: an index into `SeededDeal.line_ids`, or an id (a line an earlier change
    order added); None for an added line."""

    action: ChangeActionValue
    line: int | str | None = None
    product: str | None = None  # the product or task of an added line
    role: str | None = None
    billing_type: BillingTypeValue | None = None
    rate: Decimal | None = None
    amount: Decimal | None = None
    hours: Decimal | None = None


@dataclass(frozen=True)
class ChangeOrderMilestone:
    """A `Change_Order_Milestone__c`. `milestone` names the one changed or removed (an index
    into `SeededDeal.milestone_ids`, or an id); `line` the milestone line of an added one (an
    index into `SeededDeal.line_ids`, or an id). `name` is required by Salesforce: a change
    that keeps the name repeats it."""

    action: ChangeActionValue
    name: str
    milestone: int | str | None = None
    line: int | str | None = None
    amount: Decimal | None = None
    planned_date: date | None = None


@dataclass(frozen=True)
class ChangeOrderSpec:
    """One `Change_Order__c` of a seeded deal with its lines and milestones. `key` makes it
    idempotent; `currency` None takes the deal's. Seeded in Draft; `approve` then moves it
    to Approved (the CRM's webhook) once its details are in."""

    key: str
    name: str
    effective_date: date
    amount_delta: Decimal
    lines: Sequence[ChangeOrderLine] = ()
    milestones: Sequence[ChangeOrderMilestone] = ()
    budget_delta: Decimal | None = None
    new_end_date: date | None = None
    retroactive: bool = False
    description: str | None = None
    currency: str | None = None
    approve: bool = False
    approved_at: datetime | None = None  # None: the CRM stamps the moment of approval


@dataclass(frozen=True)
class SeededChangeOrder:
    change_order_id: str
    opportunity_id: str
    line_ids: tuple[str, ...] = ()  # in the order of `ChangeOrderSpec.lines`
    milestone_ids: tuple[str, ...] = ()  # in the order of `ChangeOrderSpec.milestones`


def _pick(ref: int | str | None, ids: Sequence[str], what: str) -> str | None:
    if ref is None or isinstance(ref, str):
        return ref
    if not 0 <= ref < len(ids):
        raise ValueError(f"no {what} {ref} in the deal (it has {len(ids)})")
    return ids[ref]


async def seed_change_order(
    sf: SalesforceClient, deal: SeededDeal, spec: ChangeOrderSpec
) -> SeededChangeOrder:
    """The change order on `deal`, its lines and milestones, each upserted on its key: seeding
    again leaves it as the spec says (details the spec no longer has are deleted) and keeps
    its status. With `spec.approve`, a Draft one is then approved."""
    key = f"change-order:{spec.key}"
    currency = spec.currency
    if currency is None:
        opportunity = await sf.get("Opportunity", deal.opportunity_id, fields=["CurrencyIsoCode"])
        currency = str(opportunity["CurrencyIsoCode"])
    fields: dict[str, Any] = {
        "Name": spec.name,
        "Opportunity__c": deal.opportunity_id,
        "CurrencyIsoCode": currency,
        "Effective_Date__c": spec.effective_date.isoformat(),
        "Amount_Delta__c": spec.amount_delta,
        "Budget_Delta__c": spec.budget_delta,
        "New_End_Date__c": spec.new_end_date.isoformat() if spec.new_end_date else None,
        "Retroactive__c": spec.retroactive,
        "Description__c": spec.description,
    }
    change_order_id = (await sf.upsert("Change_Order__c", EXTERNAL_ID, key, fields)).id
    line_ids: list[str] = []
    for n, line in enumerate(spec.lines):
        line_fields: dict[str, Any] = {
            "Action__c": line.action,
            "Line_Item_Id__c": _pick(line.line, deal.line_ids, "line"),
            "Product__c": line.product,
            "Role__c": line.role,
            "Billing_Type__c": line.billing_type,
            "Rate__c": line.rate,
            "Amount__c": line.amount,
            "Hours__c": line.hours,
        }
        line_ids.append(
            await _upsert_detail(
                sf, "Change_Order_Line__c", f"{key}:line:{n}", change_order_id, line_fields
            )
        )
    milestone_ids: list[str] = []
    for n, milestone in enumerate(spec.milestones):
        planned = milestone.planned_date
        milestone_fields: dict[str, Any] = {
            "Action__c": milestone.action,
            "Name": milestone.name,
            "Milestone__c": _pick(milestone.milestone, deal.milestone_ids, "milestone"),
            "Line_Item_Id__c": _pick(milestone.line, deal.line_ids, "line"),
            "Amount__c": milestone.amount,
            "Planned_Date__c": planned.isoformat() if planned else None,
        }
        milestone_ids.append(
            await _upsert_detail(
                sf,
                "Change_Order_Milestone__c",
                f"{key}:milestone:{n}",
                change_order_id,
                milestone_fields,
            )
        )
    for sobject, kept in (
        ("Change_Order_Line__c", line_ids),
        ("Change_Order_Milestone__c", milestone_ids),
    ):
        async for stale in sf.query(
            f"SELECT Id FROM {sobject} WHERE Change_Order__c = {soql_literal(change_order_id)}"
        ):
            if stale["Id"] not in kept:
                await sf.delete(sobject, stale["Id"])
    if spec.approve:
        current = await sf.get("Change_Order__c", change_order_id, fields=["Status__c"])
        if current["Status__c"] == "Draft":
            await approve_change_order(sf, change_order_id, approved_at=spec.approved_at)
    return SeededChangeOrder(
        change_order_id=change_order_id,
        opportunity_id=deal.opportunity_id,
        line_ids=tuple(line_ids),
        milestone_ids=tuple(milestone_ids),
    )


async def _upsert_detail(
    sf: SalesforceClient, sobject: str, key: str, change_order_id: str, fields: dict[str, Any]
) -> str:
    if not await _exists(sf, sobject, key):
        # The master of a master-detail is set on create only, as in Salesforce.
        fields = {**fields, "Change_Order__c": change_order_id}
    return (await sf.upsert(sobject, EXTERNAL_ID, key, fields)).id


async def approve_change_order(
    sf: SalesforceClient, change_order_id: str, *, approved_at: datetime | None = None
) -> None:
    """What the account manager does once the customer signed; the CRM then notifies q2c
    (the change-order webhook) and stamps `Approved_At__c` unless it is given."""
    fields: dict[str, Any] = {"Status__c": APPROVED_STATUS}
    if approved_at is not None:
        fields["Approved_At__c"] = soql_datetime(approved_at)
    await sf.update("Change_Order__c", change_order_id, fields)
