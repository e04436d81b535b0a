"""The parts of Stripe's v1 objects q2c reads, parsed from the raw JSON of each answer.

Parsing the response body ourselves (not the library's objects) keeps JSON numbers such
as a tax rate's `percentage` exact: pydantic reads them straight into `Decimal`.
Unknown fields are ignored, so newer API versions do not break the mapping.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T", bound=BaseModel)

InvoiceStatusWire = Literal["draft", "open", "paid", "uncollectible", "void"]


#: Stripe's own limits on metadata: keys up to 40 characters, values up to 500.
Metadata = dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=500)]]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ListObject(Wire, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    url: str | None = None


class Address(Wire):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Customer(Wire):
    id: str
    object: Literal["customer"] = "customer"
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: Address | None = None
    currency: str | None = None
    invoice_prefix: str | None = None
    #: Minor units; negative is credit (a credit note's `credit_amount` lands here).
    balance: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)
    created: int


class TaxRate(Wire):
    id: str
    object: Literal["tax_rate"] = "tax_rate"
    display_name: str
    percentage: Decimal
    inclusive: bool
    active: bool = True
    metadata: dict[str, str] = Field(default_factory=dict)


class TaxRateDetails(Wire):
    tax_rate: str


class LineTax(Wire):
    amount: int
    tax_behavior: str = "exclusive"
    tax_rate_details: TaxRateDetails | None = None
    taxable_amount: int | None = None


class Pricing(Wire):
    unit_amount_decimal: Decimal | None = None


class LineItem(Wire):
    id: str
    object: Literal["line_item"] = "line_item"
    amount: int
    currency: str
    description: str | None = None
    quantity: int | None = None
    quantity_decimal: Decimal | None = None
    pricing: Pricing | None = None
    taxes: list[LineTax] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


class StatusTransitions(Wire):
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None


class Invoice(Wire):
    id: str = Field(min_length=1)
    object: Literal["invoice"] = "invoice"
    customer: str = Field(min_length=1)
    customer_name: str | None = None
    currency: str = Field(min_length=3, max_length=3)
    status: InvoiceStatusWire | None
    number: str | None = None
    created: int
    due_date: int | None = None
    collection_method: str | None = None
    description: str | None = None
    amount_due: int
    amount_paid: int
    amount_remaining: int
    subtotal: int
    total: int
    status_transitions: StatusTransitions = Field(default_factory=StatusTransitions)
    hosted_invoice_url: str | None = None
    lines: ListObject[LineItem]
    metadata: Metadata = Field(default_factory=dict)


class InvoiceItem(Wire):
    id: str
    object: Literal["invoiceitem"] = "invoiceitem"
    invoice: str | None = None
    amount: int
    currency: str


class EventData(Wire):
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class Event(Wire):
    id: str = Field(min_length=1)
    object: Literal["event"] = "event"
    type: str = Field(min_length=1)
    #: Unix seconds that a datetime can hold (year 9999 at most).
    created: int = Field(ge=0, le=253_402_300_799)
    livemode: bool
    api_version: str | None = None
    data: EventData


CreditNoteStatusWire = Literal["issued", "void"]


class CreditNoteLine(Wire):
    id: str
    object: Literal["credit_note_line_item"] = "credit_note_line_item"
    amount: int
    description: str | None = None
    quantity: int | None = None
    type: str
    unit_amount_decimal: Decimal | None = None
    taxes: list[LineTax] = Field(default_factory=list)


class CreditNote(Wire):
    id: str = Field(min_length=1)
    object: Literal["credit_note"] = "credit_note"
    number: str
    invoice: str
    customer: str
    currency: str = Field(min_length=3, max_length=3)
    status: CreditNoteStatusWire
    #: `pre_payment` lowers what the invoice asks for; `post_payment` credits after payment.
    type: Literal["pre_payment", "post_payment"]
    amount: int
    subtotal: int
    total: int
    out_of_band_amount: int | None = None
    pre_payment_amount: int = 0
    post_payment_amount: int = 0
    customer_balance_transaction: str | None = None
    memo: str | None = None
    reason: str | None = None
    created: int
    voided_at: int | None = None
    lines: ListObject[CreditNoteLine]
    metadata: Metadata = Field(default_factory=dict)
