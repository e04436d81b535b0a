"""Change orders: an approved amendment to a contract, as the CRM holds it.

A change order names the lines it adds, removes or re-prices, the milestones it adds,
removes or changes, a budget change and an optional new end date, and the day it takes
effect. It makes the contract's next version (`canonical.contract`); nothing else does.
Issued invoices are never edited: a change that reaches back before periods already invoiced
(`retroactive`) corrects them with a credit note and a re-bill, and is always approved by
finance first. Validating, applying, previewing and undoing one: `canonical.impact`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.commercial import BillingType
from canonical.contract import FeeSchedule
from canonical.money import (
    CurrencyCode,
    Money,
    NonNegativeMoney,
    PositiveDecimal,
    PositiveMoney,
    TaxRate,
    check_same_currency,
)

__all__ = [
    "ChangeAction",
    "ChangeOrder",
    "ChangeOrderStatus",
    "LineChange",
    "LineField",
    "MilestoneChange",
    "TermField",
]

#: A line's terms a change may clear (set to None): "left None keeps" cannot say that.
LineField = Literal["role", "hours", "schedule", "not_to_exceed"]
#: The contract's terms a change may clear.
TermField = Literal["end_date", "not_to_exceed"]


class ChangeOrderStatus(StrEnum):
    """As the CRM shows it; q2c writes the last three back."""

    DRAFT = "draft"
    APPROVED = "approved"  # signed by the customer: q2c may apply it
    APPLIED = "applied"
    REJECTED = "rejected"  # finance refused the previewed impact
    FAILED = "failed"


class ChangeAction(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"  # a line re-priced (rate, amount, hours), a milestone changed


class LineChange(CanonicalModel):
    """One contract line added, removed or re-priced.

    ``line_id``: the contract line removed or re-priced; for an added line, its new id (the
    CRM record's). Fields left None keep what the line had (an added line needs its task,
    billing type and a rate or amount); ``unset`` names the ones cleared. A re-priced
    time-and-materials line with sold hours and no new ``amount`` is worth hours x rate.
    A line that changes billing type drops what the new type cannot have (a fee's schedule,
    an hourly line's rate and cap).
    """

    action: ChangeAction
    line_id: NonEmpty
    task: str | None = None
    task_id: str | None = None  # the PSA task of a line added back (an undone removal)
    role: str | None = None
    billing_type: BillingType | None = None
    rate: NonNegativeMoney | None = None
    amount: NonNegativeMoney | None = None
    hours: PositiveDecimal | None = None
    schedule: FeeSchedule | None = None  # a fixed fee's schedule
    not_to_exceed: NonNegativeMoney | None = None  # the line's cap
    unset: list[LineField] = Field(default_factory=list)


class MilestoneChange(CanonicalModel):
    """One milestone added, removed or changed (amount, planned date, name)."""

    action: ChangeAction
    milestone_id: NonEmpty
    line_id: str | None = None  # the milestone line; needed to add one
    name: str | None = None
    amount: PositiveMoney | None = None
    planned_date: date | None = None
    unset: list[Literal["planned_date"]] = Field(default_factory=list)


class ChangeOrder(CanonicalModel):
    """A change order as the CRM holds it (`Change_Order__c` in Salesforce)."""

    id: NonEmpty
    crm: NonEmpty
    opportunity_id: NonEmpty
    name: NonEmpty
    status: ChangeOrderStatus
    currency: CurrencyCode
    effective_date: date
    amount_delta: Money  # what the contract value changes by, as the CRM states it
    lines: list[LineChange] = Field(default_factory=list)
    milestones: list[MilestoneChange] = Field(default_factory=list)
    budget_delta: Money | None = None  # the project's budget; None: unchanged
    new_end_date: date | None = None
    not_to_exceed: NonNegativeMoney | None = None  # the contract's cap; None: unchanged
    #: Contract terms the change clears (an end date or cap removed).
    unset: list[TermField] = Field(default_factory=list)
    #: A tax rate the CRM overrides for this contract (a fraction): always needs finance.
    tax_rate: TaxRate | None = None
    #: Reaches back before periods already invoiced: allowed only with this flag, and
    #: always approved by finance (credit notes and re-bills follow).
    retroactive: bool = False
    #: When the CRM approved it: change orders of one project apply in this order.
    approved_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        check_same_currency(
            self.currency,
            [
                ("amount_delta", self.amount_delta),
                *([("budget_delta", self.budget_delta)] if self.budget_delta else []),
                *([("not_to_exceed", self.not_to_exceed)] if self.not_to_exceed else []),
                *(
                    (f"lines[{i}].{name}", money)
                    for i, ln in enumerate(self.lines)
                    for name, money in (
                        ("rate", ln.rate),
                        ("amount", ln.amount),
                        ("not_to_exceed", ln.not_to_exceed),
                    )
                    if money is not None
                ),
                *(
                    (f"milestones[{i}].amount", m.amount)
                    for i, m in enumerate(self.milestones)
                    if m.amount is not None
                ),
            ],
        )
        return self

    @property
    def key(self) -> str:
        """The business key: `<crm>:<change order id>`."""
        return f"{self.crm}:{self.id}"

    def budget_change(self) -> Decimal:
        return self.budget_delta.amount if self.budget_delta else Decimal(0)
