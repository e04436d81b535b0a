"""Delivering the work: projects, tasks, time, expenses, and the change orders that reshape them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
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
    RateCardEntry,
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
    "ChangeOrder",
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


class ChangeOrder(CanonicalModel):
    """An agreed change to a running engagement: budget, rates, milestones, scope."""

    id: NonEmpty
    project_id: NonEmpty
    opportunity_id: str | None = None
    reason: NonEmpty
    effective_date: date
    budget_delta: Money  # may be negative: scope can shrink
    rate_changes: list[RateCardEntry] = Field(default_factory=list)
    milestone_changes: list[Milestone] = Field(default_factory=list)
    added_tasks: list[Task] = Field(default_factory=list)
    requested_by: NonEmpty
    approved: bool = False
    approved_by: str | None = None
    approved_at: AwareDatetime | None = None

    @field_validator("rate_changes")
    @classmethod
    def _rates(cls, value: list[RateCardEntry], info: ValidationInfo) -> list[RateCardEntry]:
        delta = info.data.get("budget_delta")
        if delta is not None:
            check_same_currency(
                delta.currency, ((f"rate_changes[{i}].rate", e.rate) for i, e in enumerate(value))
            )
        return value

    @field_validator("milestone_changes")
    @classmethod
    def _milestones(cls, value: list[Milestone], info: ValidationInfo) -> list[Milestone]:
        delta = info.data.get("budget_delta")
        if delta is not None:
            check_same_currency(
                delta.currency,
                ((f"milestone_changes[{i}].amount", m.amount) for i, m in enumerate(value)),
            )
        return value

    @field_validator("added_tasks")
    @classmethod
    def _tasks(cls, value: list[Task], info: ValidationInfo) -> list[Task]:
        delta = info.data.get("budget_delta")
        if delta is not None:
            check_same_currency(
                delta.currency,
                (
                    (f"added_tasks[{i}].rate", t.rate)
                    for i, t in enumerate(value)
                    if t.rate is not None
                ),
            )
        return value

    @property
    def currency(self) -> str:
        return self.budget_delta.currency

    def apply_to(self, project: Project) -> Project:
        """The project as it stands once this change order is in force.

        A new rate for a role closes that role's open entry the day before it takes effect
        (and supersedes entries starting on or after it), so the card never overlaps.
        Milestones are replaced by id or appended; tasks are appended. Applying the same
        change order twice is a no-op, so a retried step cannot double a budget.
        """
        if self.id in project.applied_change_orders:
            return project
        if not self.approved:
            raise ValueError(f"change order {self.id} is not approved")
        if project.id != self.project_id:
            raise ValueError(
                f"change order {self.id} is for project {self.project_id}, not {project.id}"
            )
        budget = project.budget + self.budget_delta
        if budget.amount < 0:
            raise ValueError(f"change order {self.id} would make the budget negative: {budget}")
        card = project.rate_card
        if self.rate_changes:
            entries = list(card.entries) if card else []
            for new in self.rate_changes:
                entries = [_close_before(e, new) for e in entries if not _superseded(e, new)]
                entries.append(new)
            card = RateCard(
                currency=project.currency,
                entries=entries,
                id=card.id if card else None,
                name=card.name if card else None,
            )
        milestones = {m.id: m for m in project.milestones}
        for m in self.milestone_changes:
            milestones[m.id] = m
        return Project.model_validate(
            {
                **dict(project),
                "budget": budget,
                "rate_card": card,
                "milestones": list(milestones.values()),
                "tasks": [*project.tasks, *self.added_tasks],
                "applied_change_orders": [*project.applied_change_orders, self.id],
            }
        )


def _superseded(entry: RateCardEntry, new: RateCardEntry) -> bool:
    return entry.role == new.role and entry.effective_from >= new.effective_from


def _close_before(entry: RateCardEntry, new: RateCardEntry) -> RateCardEntry:
    if entry.role != new.role or not entry.overlaps(new):
        return entry
    return entry.model_copy(update={"effective_to": new.effective_from - timedelta(days=1)})
