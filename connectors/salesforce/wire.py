"""Salesforce's JSON shapes, with its field API names as aliases.

Models ignore fields they do not name: an org always has more fields than q2c reads, and a
new one added by an admin must not break the integration. Numbers arrive as `Decimal`
(the client parses JSON floats as decimals), so money never passes through `float`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical import ChangeOrderStatus
from connectors.webhook_json import IsoDate, IsoDatetime


class WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class TokenResponse(WireModel):
    access_token: str
    instance_url: str
    token_type: str = "Bearer"
    issued_at: str | None = None
    id: str | None = None
    signature: str | None = None


class OAuthError(WireModel):
    error: str
    error_description: str | None = None


class ApiError(WireModel):
    """One entry of the list Salesforce answers with when it refuses a request."""

    message: str = ""
    error_code: str = Field("UNKNOWN", alias="errorCode")
    fields: list[str] = Field(default_factory=list)


class SaveResult(WireModel):
    id: str
    success: bool = True
    created: bool | None = None


class QueryPage(WireModel):
    total_size: int = Field(alias="totalSize")
    done: bool
    records: list[dict[str, Any]]
    next_records_url: str | None = Field(None, alias="nextRecordsUrl")


class AccountRecord(WireModel):
    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    billing_street: str | None = Field(None, alias="BillingStreet")
    billing_city: str | None = Field(None, alias="BillingCity")
    billing_postal_code: str | None = Field(None, alias="BillingPostalCode")
    billing_state: str | None = Field(None, alias="BillingState")
    billing_country: str | None = Field(None, alias="BillingCountry")
    billing_country_code: str | None = Field(None, alias="BillingCountryCode")
    website: str | None = Field(None, alias="Website")
    industry: str | None = Field(None, alias="Industry")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")
    tax_id: str | None = Field(None, alias="Tax_Id__c")
    last_modified_date: AwareDatetime | None = Field(None, alias="LastModifiedDate")


class ContactRecord(WireModel):
    id: str = Field(alias="Id")
    first_name: str | None = Field(None, alias="FirstName")
    last_name: str = Field(alias="LastName")
    email: str | None = Field(None, alias="Email")
    phone: str | None = Field(None, alias="Phone")
    title: str | None = Field(None, alias="Title")


class OpportunityRecord(WireModel):
    id: str = Field(alias="Id")
    name: str = Field(alias="Name")
    account_id: str | None = Field(None, alias="AccountId")
    stage_name: str = Field(alias="StageName")
    close_date: date = Field(alias="CloseDate")
    amount: Decimal | None = Field(None, alias="Amount")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")
    probability: Decimal | None = Field(None, alias="Probability")
    description: str | None = Field(None, alias="Description")
    is_won: bool = Field(False, alias="IsWon")
    payment_terms: str | None = Field(None, alias="Payment_Terms__c")
    po_number: str | None = Field(None, alias="PO_Number__c")
    not_to_exceed: Decimal | None = Field(None, alias="Not_To_Exceed__c")
    upfront_percent: Decimal | None = Field(None, alias="Upfront_Percent__c")  # 20 is 20 %
    contract_end_date: date | None = Field(None, alias="Contract_End_Date__c")
    expense_markup_percent: Decimal | None = Field(None, alias="Expense_Markup_Percent__c")
    #: A multi-select picklist: `"Travel;Lodging"`.
    billable_expense_categories: str | None = Field(None, alias="Billable_Expense_Categories__c")
    last_modified_date: AwareDatetime | None = Field(None, alias="LastModifiedDate")


class ProductRef(WireModel):
    name: str | None = Field(None, alias="Name")
    product_code: str | None = Field(None, alias="ProductCode")


class OpportunityLineItemRecord(WireModel):
    id: str = Field(alias="Id")
    product2_id: str | None = Field(None, alias="Product2Id")
    product: ProductRef | None = Field(None, alias="Product2")
    quantity: Decimal = Field(alias="Quantity")
    unit_price: Decimal = Field(alias="UnitPrice")
    total_price: Decimal | None = Field(None, alias="TotalPrice")
    discount: Decimal | None = Field(None, alias="Discount")
    description: str | None = Field(None, alias="Description")
    role: str | None = Field(None, alias="Role__c")
    billing_type: str | None = Field(None, alias="Billing_Type__c")
    fee_schedule: str | None = Field(None, alias="Fee_Schedule__c")
    instalments: Decimal | None = Field(None, alias="Instalments__c")  # a number field: 3.0
    not_to_exceed: Decimal | None = Field(None, alias="Not_To_Exceed__c")


class MilestoneRecord(WireModel):
    """A `Milestone__c`: the custom object q2c adds for milestones, a lookup to Opportunity.

    Everything but the id is optional here, so that a missing value is refused by the mapping
    naming its field, not by the wire model.
    """

    id: str = Field(alias="Id")
    name: str | None = Field(None, alias="Name")
    opportunity_id: str | None = Field(None, alias="Opportunity__c")
    line_item_id: str | None = Field(None, alias="Line_Item_Id__c")
    amount: Decimal | None = Field(None, alias="Amount__c")
    planned_date: date | None = Field(None, alias="Planned_Date__c")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")


class WriteBack(WireModel):
    """The q2c fields on Opportunity that tell sales people what became of their deal."""

    status: str = Field(alias="Q2C_Status__c", max_length=40)
    project_id: str | None = Field(None, alias="Q2C_Project_Id__c")
    billing_customer_id: str | None = Field(None, alias="Q2C_Billing_Customer_Id__c")
    run_url: str | None = Field(None, alias="Q2C_Run_Url__c")
    message: str | None = Field(None, alias="Q2C_Message__c")


class ClosedWonOpportunity(WireModel):
    """The deal as the webhook carries it; text fields must be text and, if required, not empty
    (the name becomes the run's summary: Salesforce caps it at 120 characters)."""

    id: str = Field(alias="Id", min_length=15, max_length=18)
    name: str = Field(alias="Name", min_length=1, max_length=120)
    account_id: str | None = Field(None, alias="AccountId", min_length=1, max_length=18)
    stage_name: str = Field(alias="StageName", min_length=1, max_length=255)
    amount: Decimal | None = Field(None, alias="Amount")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode", min_length=1)
    close_date: IsoDate = Field(alias="CloseDate")
    last_modified_date: IsoDatetime | None = Field(None, alias="LastModifiedDate")


class ClosedWonEvent(WireModel):
    """What the org posts when a deal is won; `event_id` is the deduplication key."""

    event_id: str = Field(alias="eventId", min_length=1)
    event_type: Literal["opportunity.closed_won"] = Field(alias="eventType")
    occurred_at: IsoDatetime = Field(alias="occurredAt")
    organization_id: str = Field(alias="organizationId", min_length=1)
    sobject: ClosedWonOpportunity


class ChangedOpportunity(WireModel):
    """A Closed Won deal as the catch-up sweep lists it: which, and when it last changed."""

    id: str = Field(alias="Id", min_length=15, max_length=18)
    last_modified_date: AwareDatetime = Field(alias="LastModifiedDate")


class ChangeOrderRecord(WireModel):
    """A `Change_Order__c`. Everything but the id is optional here, so that a missing value is
    refused by the mapping naming its field, not by the wire model."""

    id: str = Field(alias="Id")
    name: str | None = Field(None, alias="Name")
    opportunity_id: str | None = Field(None, alias="Opportunity__c")
    amount_delta: Decimal | None = Field(None, alias="Amount_Delta__c")
    effective_date: date | None = Field(None, alias="Effective_Date__c")
    budget_delta: Decimal | None = Field(None, alias="Budget_Delta__c")
    new_end_date: date | None = Field(None, alias="New_End_Date__c")
    retroactive: bool | None = Field(None, alias="Retroactive__c")
    status: str | None = Field(None, alias="Status__c")
    approved_at: AwareDatetime | None = Field(None, alias="Approved_At__c")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")
    description: str | None = Field(None, alias="Description__c")
    last_modified_date: AwareDatetime | None = Field(None, alias="LastModifiedDate")


class ChangeOrderLineRecord(WireModel):
    """A `Change_Order_Line__c`: a line added, removed (`Line_Item_Id__c`) or re-priced."""

    id: str = Field(alias="Id")
    change_order_id: str | None = Field(None, alias="Change_Order__c")
    action: str | None = Field(None, alias="Action__c")
    line_item_id: str | None = Field(None, alias="Line_Item_Id__c")
    product: str | None = Field(None, alias="Product__c")
    role: str | None = Field(None, alias="Role__c")
    billing_type: str | None = Field(None, alias="Billing_Type__c")
    rate: Decimal | None = Field(None, alias="Rate__c")
    amount: Decimal | None = Field(None, alias="Amount__c")
    hours: Decimal | None = Field(None, alias="Hours__c")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")


class ChangeOrderMilestoneRecord(WireModel):
    """A `Change_Order_Milestone__c`: a milestone added, removed or changed (`Milestone__c`)."""

    id: str = Field(alias="Id")
    change_order_id: str | None = Field(None, alias="Change_Order__c")
    action: str | None = Field(None, alias="Action__c")
    milestone_id: str | None = Field(None, alias="Milestone__c")
    line_item_id: str | None = Field(None, alias="Line_Item_Id__c")
    name: str | None = Field(None, alias="Name")
    amount: Decimal | None = Field(None, alias="Amount__c")
    planned_date: date | None = Field(None, alias="Planned_Date__c")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode")


class ChangeOrderWriteBack(WireModel):
    """What q2c writes on a change order: its outcome, why, and the run that applied it."""

    status: Literal["Applied", "Rejected", "Failed"] = Field(alias="Status__c")
    message: str | None = Field(None, alias="Q2C_Message__c")
    run_url: str | None = Field(None, alias="Q2C_Run_Url__c")


class ApprovedChangeOrder(WireModel):
    """The change order as the approval webhook carries it."""

    id: str = Field(alias="Id", min_length=15, max_length=18)
    name: str = Field(alias="Name", min_length=1, max_length=80)
    opportunity_id: str | None = Field(None, alias="Opportunity__c", min_length=15, max_length=18)
    status: str = Field(alias="Status__c", min_length=1, max_length=40)
    amount_delta: Decimal | None = Field(None, alias="Amount_Delta__c")
    currency_iso_code: str | None = Field(None, alias="CurrencyIsoCode", min_length=1)
    effective_date: IsoDate | None = Field(None, alias="Effective_Date__c")
    approved_at: IsoDatetime | None = Field(None, alias="Approved_At__c")
    last_modified_date: IsoDatetime | None = Field(None, alias="LastModifiedDate")


class ChangeOrderApprovedEvent(WireModel):
    """What the org posts when a change order is approved; `event_id` deduplicates."""

    event_id: str = Field(alias="eventId", min_length=1)
    event_type: Literal["change_order.approved"] = Field(alias="eventType")
    occurred_at: IsoDatetime = Field(alias="occurredAt")
    organization_id: str = Field(alias="organizationId", min_length=1)
    sobject: ApprovedChangeOrder


class ChangeOrderSummary(WireModel):
    """A change order of a deal as `list_change_orders` lists it: enough to apply a deal's
    change orders in the CRM's approval order (`approved_at`), then fetch each."""

    id: str = Field(alias="Id")
    name: str | None = Field(None, alias="Name")
    opportunity_id: str | None = Field(None, alias="Opportunity__c")
    status: ChangeOrderStatus = Field(alias="Status__c")
    approved_at: AwareDatetime | None = Field(None, alias="Approved_At__c")
    last_modified_date: AwareDatetime | None = Field(None, alias="LastModifiedDate")
