"""Delivering the work: projects, tasks, time and expenses."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from canonical._base import CanonicalModel, NonEmpty
from canonical.commercial import (
    BillingType,
    Milestone,
    RateCard,
    check_rate_card_currency,
)
from canonical.money import (
    CurrencyCode,
    Money,
    NonNegativeMoney,
    Percent,
    PositiveDecimal,
    PositiveMoney,
    check_same_currency,
    sum_money,
    to_decimal,
)

__all__ = [
    "Expense",
    "Hours",
    "Project",
    "Task",
    "TimeEntry",
    "rate_time",
]

Hours = Annotated[Decimal, BeforeValidator(to_decimal), Field(gt=0, le=24, allow_inf_nan=False)]
"""Hours worked by one person on one day: more than 0, at most 24."""


class Task(CanonicalModel):
    name: NonEmpty
    role: str | None = None
    planned_hours: PositiveDecimal | None = None
    rate: NonNegativeMoney | None = None  # overrides the rate card for this task when set
    id: str | None = None  # None until the PSA has created it
    billable: bool = True
    milestone_id: str | None = None  # the milestone whose completion this task contributes to
    #: How the line this task delivers is billed; only time-and-materials hours are billed.
    billing_type: BillingType = BillingType.TIME_AND_MATERIALS


class Project(CanonicalModel):
    id: NonEmpty
    name: NonEmpty
    customer_id: NonEmpty
    legal_entity_code: NonEmpty
    currency: CurrencyCode
    budget: NonNegativeMoney
    rate_card: RateCard | None = None
    tasks: list[Task] = Field(default_factory=list)
    milestones: list[Milestone] = Field(default_factory=list)
    billing_type: BillingType
    start_date: date
    end_date: date | None = None
    opportunity_id: str | None = None
    po_number: str | None = None
    external_ids: dict[str, str] = Field(default_factory=dict)
    applied_change_orders: list[str] = Field(default_factory=list)

    @field_validator("budget")
    @classmethod
    def _budget_currency(cls, budget: Money, info: ValidationInfo) -> Money:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(currency, [("budget", budget)])
        return budget

    @field_validator("rate_card")
    @classmethod
    def _rate_card_currency(cls, card: RateCard | None, info: ValidationInfo) -> RateCard | None:
        return check_rate_card_currency(card, info.data.get("currency"), "project")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[Task], info: ValidationInfo) -> list[Task]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                ((f"tasks[{i}].rate", t.rate) for i, t in enumerate(tasks) if t.rate is not None),
            )
        ids = [t.id for t in tasks if t.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("task ids must be unique within a project")
        return tasks

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

    @field_validator("end_date")
    @classmethod
    def _end_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value < start:
            raise ValueError(f"end_date {value} is before start_date {start}")
        return value

    def task(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"project {self.id} has no task {task_id!r}")

    def planned_hours(self) -> Decimal:
        return sum((t.planned_hours or Decimal(0) for t in self.tasks), Decimal(0))


class TimeEntry(CanonicalModel):
    id: NonEmpty
    project_id: NonEmpty
    task_id: str | None = None
    employee: NonEmpty
    role: NonEmpty
    work_date: date
    hours: Hours
    billable: bool = True
    approved: bool = False
    billed: bool = False
    description: str | None = None
    updated_at: AwareDatetime | None = None

    @field_validator("billed")
    @classmethod
    def _billed_needs_approval(cls, billed: bool, info: ValidationInfo) -> bool:
        if billed and info.data.get("approved") is False:
            raise ValueError("an entry cannot be billed before it is approved")
        return billed

    @property
    def ready_to_bill(self) -> bool:
        return self.billable and self.approved and not self.billed

    def amount(self, rate_card: RateCard) -> Money:
        """Price this entry at the rate effective on the day the work was done."""
        return (rate_card.rate_for(self.role, self.work_date) * self.hours).rounded()


def rate_time(entries: Iterable[TimeEntry], rate_card: RateCard) -> Money:
    """Value of the approved, billable, unbilled time, each entry rounded as its invoice line."""
    return sum_money((e.amount(rate_card) for e in entries if e.ready_to_bill), rate_card.currency)


class Expense(CanonicalModel):
    id: NonEmpty
    project_id: NonEmpty
    employee: NonEmpty
    incurred_on: date
    category: NonEmpty  # "travel", "lodging", "meals"...
    amount: PositiveMoney
    description: str | None = None
    billable: bool = True
    approved: bool = False
    billed: bool = False
    markup_percent: Percent = Decimal(0)
    receipt_url: str | None = None

    @field_validator("billed")
    @classmethod
    def _billed_needs_approval(cls, billed: bool, info: ValidationInfo) -> bool:
        if billed and info.data.get("approved") is False:
            raise ValueError("an expense cannot be billed before it is approved")
        return billed

    @property
    def billable_amount(self) -> Money:
        return (self.amount * (1 + self.markup_percent / 100)).rounded()
