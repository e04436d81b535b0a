"""Invoices, their lifecycle, and the payments that settle them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum

from pydantic import AwareDatetime, Field, ValidationInfo, field_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.errors import InvalidTransition
from canonical.money import (
    CurrencyCode,
    Money,
    PositiveDecimal,
    PositiveMoney,
    TaxRate,
    check_same_currency,
    sum_money,
)

__all__ = [
    "Invoice",
    "InvoiceLine",
    "InvoiceStatus",
    "Payment",
    "can_transition",
]


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"  # finalised and sent: numbered, immutable, awaiting payment
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


# Stripe's lifecycle, which Tryton's draft/posted/paid/cancelled maps onto. An uncollectible
# invoice can still be paid or voided later (Stripe allows both; write-offs get reversed).
_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.OPEN, InvoiceStatus.VOID}),
    InvoiceStatus.OPEN: frozenset(
        {InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE}
    ),
    InvoiceStatus.UNCOLLECTIBLE: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
}
_NUMBERED = frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE})


def can_transition(current: InvoiceStatus | str, target: InvoiceStatus | str) -> bool:
    """Whether an invoice may move from ``current`` to ``target`` (staying put is no move)."""
    return InvoiceStatus(target) in _TRANSITIONS[InvoiceStatus(current)]


class InvoiceLine(CanonicalModel):
    description: NonEmpty
    quantity: PositiveDecimal
    unit_price: Money  # negative for a discount or credit line
    tax_rate: TaxRate  # a fraction: Decimal("0.20") is 20 %
    id: str | None = None
    source_ids: list[str] = Field(default_factory=list)  # time entries, expenses, milestones
    contract_version: int | None = None  # the contract version the line was rated under
    #: Revenue recognition: None recognizes it when invoiced; a span defers it over the
    #: span's months (a fixed fee earned over its delivery period).
    revenue_from: date | None = None
    revenue_to: date | None = None

    @property
    def net(self) -> Money:
        return (self.unit_price * self.quantity).rounded()

    @property
    def tax(self) -> Money:
        """Tax per line, rounded per line, so the invoice total is the sum of its lines."""
        return (self.net * self.tax_rate).rounded()

    @property
    def total(self) -> Money:
        return self.net + self.tax


class Invoice(CanonicalModel):
    id: NonEmpty
    customer_id: NonEmpty
    currency: CurrencyCode
    lines: list[InvoiceLine] = Field(default_factory=list)
    status: InvoiceStatus = InvoiceStatus.DRAFT
    # validate_default: an omitted number or issue time must still meet the status rules
    number: str | None = Field(default=None, validate_default=True)  # assigned when finalised
    issued_at: AwareDatetime | None = Field(default=None, validate_default=True)
    due_date: date | None = None
    project_id: str | None = None
    legal_entity_code: str | None = None
    po_number: str | None = None
    memo: str | None = None
    external_ids: dict[str, str] = Field(default_factory=dict)

    @field_validator("lines")
    @classmethod
    def _lines_currency(cls, lines: list[InvoiceLine], info: ValidationInfo) -> list[InvoiceLine]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                ((f"lines[{i}].unit_price", ln.unit_price) for i, ln in enumerate(lines)),
            )
        return lines

    @field_validator("number")
    @classmethod
    def _finalised_has_number(cls, number: str | None, info: ValidationInfo) -> str | None:
        status = info.data.get("status")
        if status in _NUMBERED and not number:
            raise ValueError(f"an invoice in status {status} must have a number")
        return number

    @field_validator("issued_at")
    @classmethod
    def _finalised_has_date(
        cls, issued_at: AwareDatetime | None, info: ValidationInfo
    ) -> AwareDatetime | None:
        status = info.data.get("status")
        if status in _NUMBERED and issued_at is None:
            raise ValueError(f"an invoice in status {status} must have an issue time")
        return issued_at

    @field_validator("due_date")
    @classmethod
    def _due_after_issue(cls, due: date | None, info: ValidationInfo) -> date | None:
        issued = info.data.get("issued_at")
        if due is not None and issued is not None and due < issued.date():
            raise ValueError(f"due_date {due} is before the issue date {issued.date()}")
        return due

    @property
    def subtotal(self) -> Money:
        return sum_money((ln.net for ln in self.lines), self.currency)

    @property
    def tax(self) -> Money:
        return sum_money((ln.tax for ln in self.lines), self.currency)

    @property
    def total(self) -> Money:
        return sum_money((ln.total for ln in self.lines), self.currency)

    def transition(self, target: InvoiceStatus | str, **changes: object) -> Invoice:
        """This invoice in ``target`` status; re-applying the current status is a no-op.

        ``changes`` carries what the move brings along (``number``/``issued_at`` when
        finalising), and the result is validated like any other invoice.
        """
        target = InvoiceStatus(target)
        if target is self.status and not changes:
            return self
        if target is not self.status and not can_transition(self.status, target):
            raise InvalidTransition("invoice", self.status, target)
        return Invoice.model_validate({**dict(self), **changes, "status": target})

    def balance(self, payments: Iterable[Payment]) -> Money:
        """What is still owed after the payments made against this invoice."""
        paid = sum_money((p.amount for p in payments if p.invoice_id == self.id), self.currency)
        return self.total - paid


class Payment(CanonicalModel):
    id: NonEmpty
    invoice_id: NonEmpty
    amount: PositiveMoney
    received_at: AwareDatetime
    reference: str | None = None  # bank or processor reference, for reconciliation
    method: str | None = None  # "card", "bank_transfer"...
    customer_id: str | None = None
