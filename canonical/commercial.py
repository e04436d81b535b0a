"""What was sold and on which terms: opportunities, their lines, rate cards, milestones.

The contract q2c keeps once a deal is provisioned is `canonical.contract`; these are the
deal's own shapes, as the CRM holds them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import (
    AwareDatetime,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from canonical._base import CanonicalModel, NonEmpty
from canonical.errors import NoRate
from canonical.money import (
    CurrencyCode,
    Money,
    NonNegativeMoney,
    Percent,
    PositiveDecimal,
    PositiveMoney,
    check_same_currency,
    sum_money,
)
from canonical.party import PaymentTerms

__all__ = [
    "BillingType",
    "ExpensePolicy",
    "FeeRemainder",
    "Milestone",
    "MilestoneStatus",
    "Opportunity",
    "OpportunityLine",
    "RateCard",
    "RateCardEntry",
]


class BillingType(StrEnum):
    TIME_AND_MATERIALS = "time_and_materials"
    FIXED_FEE = "fixed_fee"
    MILESTONE = "milestone"


class FeeRemainder(StrEnum):
    """How the part of a fixed fee not invoiced up front is invoiced."""

    ON_COMPLETION = "on_completion"
    INSTALMENTS = "instalments"


class ExpensePolicy(CanonicalModel):
    """Which expense categories the customer pays for, and the markup on them."""

    billable_categories: list[NonEmpty] = Field(default_factory=list)
    markup_percent: Percent = Decimal(0)

    def billable(self, category: str) -> bool:
        wanted = category.casefold()
        return any(c.casefold() == wanted for c in self.billable_categories)


class OpportunityLine(CanonicalModel):
    id: NonEmpty
    service: NonEmpty
    role: str | None = None  # None for a fixed-fee deliverable that no single role delivers
    quantity: PositiveDecimal  # hours for time and materials, units otherwise
    unit_rate: NonNegativeMoney
    #: None: the service catalogue decides (`DealRules.entry_for`).
    billing_type: BillingType | None = None
    discount_percent: Percent = Decimal(0)
    description: str | None = None
    #: A fixed fee's part not invoiced up front: on completion (None) or in instalments.
    fee_remainder: FeeRemainder | None = None
    instalments: int | None = Field(default=None, ge=1, le=120)  # None: one per month of term
    not_to_exceed: NonNegativeMoney | None = None  # this line's cap (time and materials)

    @property
    def amount(self) -> Money:
        """Quantity times rate less discount, rounded to the minor unit like a quote would print."""
        gross = self.unit_rate * self.quantity
        return (gross * (1 - self.discount_percent / 100)).rounded()


class RateCardEntry(CanonicalModel):
    """The price of one role over a date range; ``effective_to`` is inclusive, None = open."""

    role: NonEmpty
    rate: NonNegativeMoney
    effective_from: date
    effective_to: date | None = None

    @field_validator("effective_to")
    @classmethod
    def _ends_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("effective_from")
        if value is not None and start is not None and value < start:
            raise ValueError(f"effective_to {value} is before effective_from {start}")
        return value

    def covers(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def overlaps(self, other: RateCardEntry) -> bool:
        return (other.effective_to is None or self.effective_from <= other.effective_to) and (
            self.effective_to is None or other.effective_from <= self.effective_to
        )


class RateCard(CanonicalModel):
    """Prices per role over time. At most one entry per role is effective on any date."""

    currency: CurrencyCode
    entries: list[RateCardEntry] = Field(default_factory=list)
    id: str | None = None
    name: str | None = None

    @field_validator("entries")
    @classmethod
    def _one_currency_no_overlap(
        cls, entries: list[RateCardEntry], info: ValidationInfo
    ) -> list[RateCardEntry]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency, ((f"entries[{i}].rate", e.rate) for i, e in enumerate(entries))
            )
        for i, entry in enumerate(entries):
            for j in range(i):
                other = entries[j]
                if other.role == entry.role and other.overlaps(entry):
                    raise ValueError(
                        f"entries[{j}] and entries[{i}] for role {entry.role!r} overlap "
                        f"({_span(other)} and {_span(entry)}); one rate per role per day"
                    )
        return entries

    def rate_for(self, role: str, on: date) -> Money:
        for entry in self.entries:
            if entry.role == role and entry.covers(on):
                return entry.rate
        raise NoRate(role, on)

    def roles(self) -> set[str]:
        return {e.role for e in self.entries}


def check_rate_card_currency(
    card: RateCard | None, currency: str | None, owner: str
) -> RateCard | None:
    """A document's rate card prices in the document's own currency."""
    if card is not None and currency is not None and card.currency != currency:
        raise ValueError(
            f"rate card currency {card.currency} differs from {owner} currency {currency}"
        )
    return card


def _span(entry: RateCardEntry) -> str:
    end = entry.effective_to.isoformat() if entry.effective_to else "open"
    return f"{entry.effective_from.isoformat()}..{end}"


class MilestoneStatus(StrEnum):
    PLANNED = "planned"
    COMPLETED = "completed"  # delivery done (PSA); may now be invoiced
    INVOICED = "invoiced"
    CANCELLED = "cancelled"


class Milestone(CanonicalModel):
    id: NonEmpty
    name: NonEmpty
    amount: PositiveMoney
    due_date: date | None = None  # the planned date
    line_id: str | None = None  # the opportunity line (a milestone line) it belongs to
    status: MilestoneStatus = MilestoneStatus.PLANNED
    completed_on: date | None = None

    @property
    def billable(self) -> bool:
        return self.status is MilestoneStatus.COMPLETED


class Opportunity(CanonicalModel):
    """A deal as the CRM holds it.

    ``amount`` is kept as the CRM states it: CRMs let it drift from the sum of the lines, and
    correcting it is the CRM owner's call. It must still be in the opportunity's currency.
    """

    id: NonEmpty
    crm: NonEmpty  # which CRM adapter holds it ("salesforce", "hubspot"); ids are per CRM
    name: NonEmpty
    account_id: NonEmpty
    stage: NonEmpty
    close_date: date
    currency: CurrencyCode
    lines: list[OpportunityLine] = Field(default_factory=list)
    amount: Money
    payment_terms: PaymentTerms | None = None
    po_number: str | None = None
    won: bool = False
    probability: Percent | None = None
    owner: str | None = None
    description: str | None = None
    #: The customer's negotiated rates (an MSA), when they and not the lines' prices decide.
    rate_card: RateCard | None = None
    updated_at: AwareDatetime | None = None
    #: The contract's own terms beyond the lines (custom fields and objects in the CRM).
    milestones: list[Milestone] = Field(default_factory=list)
    not_to_exceed: NonNegativeMoney | None = None  # the whole contract's cap
    upfront_percent: Percent = Decimal(0)  # of each fixed fee, invoiced at provisioning
    end_date: date | None = None  # the contract term's last day (instalments spread over it)
    expense_policy: ExpensePolicy | None = None  # None: the firm's default policy

    @model_validator(mode="before")
    @classmethod
    def _earlier_shape(cls, data: Any) -> Any:
        """Runs in flight hold deals read before the contract got its own fields, with an
        empty ``contract_terms`` (no CRM ever filled it): that empty field is dropped."""
        if isinstance(data, dict) and "contract_terms" in data and data["contract_terms"] is None:
            return {k: v for k, v in data.items() if k != "contract_terms"}
        return data

    @field_validator("lines")
    @classmethod
    def _lines(cls, lines: list[OpportunityLine], info: ValidationInfo) -> list[OpportunityLine]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                [
                    *((f"lines[{i}].unit_rate", ln.unit_rate) for i, ln in enumerate(lines)),
                    *(
                        (f"lines[{i}].not_to_exceed", ln.not_to_exceed)
                        for i, ln in enumerate(lines)
                        if ln.not_to_exceed is not None
                    ),
                ],
            )
        _unique_ids("lines", [ln.id for ln in lines])
        return lines

    @field_validator("amount")
    @classmethod
    def _amount(cls, amount: Money, info: ValidationInfo) -> Money:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(currency, [("amount", amount)])
        return amount

    @field_validator("rate_card")
    @classmethod
    def _rate_card(cls, card: RateCard | None, info: ValidationInfo) -> RateCard | None:
        return check_rate_card_currency(card, info.data.get("currency"), "opportunity")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, milestones: list[Milestone], info: ValidationInfo) -> list[Milestone]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                ((f"milestones[{i}].amount", m.amount) for i, m in enumerate(milestones)),
            )
        return milestones

    @field_validator("not_to_exceed")
    @classmethod
    def _cap(cls, cap: Money | None, info: ValidationInfo) -> Money | None:
        currency = info.data.get("currency")
        if cap is not None and currency is not None:
            check_same_currency(currency, [("not_to_exceed", cap)])
        return cap

    def total(self) -> Money:
        """Sum of the line amounts: what the deal is actually worth line by line."""
        return sum_money((ln.amount for ln in self.lines), self.currency)

    def billing_types(self) -> set[BillingType]:
        return {ln.billing_type for ln in self.lines if ln.billing_type is not None}

    def booking_issues(self, *, default_payment_terms: bool = False) -> list[str]:
        """Why this deal cannot become a project yet; empty when it can.

        A list, not an exception, so a workflow can report every problem to a human at once.
        With `default_payment_terms`, a deal that states no terms gets the firm's standard ones.
        """
        issues: list[str] = []
        if not self.won:
            issues.append(f"won: opportunity is in stage {self.stage!r}, not won")
        if not self.lines:
            issues.append("lines: no line items to deliver or bill")
        for i, ln in enumerate(self.lines):
            if ln.billing_type is BillingType.TIME_AND_MATERIALS and not ln.role:
                issues.append(f"lines[{i}].role: time-and-materials line needs a role")
        if self.payment_terms is None and not default_payment_terms:
            issues.append("payment_terms: no payment terms on the deal or its contract")
        return issues


def _unique_ids(field: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ValueError(f"{field}[{i}] repeats id {ident!r}; ids must be unique")
        seen.add(ident)
