"""The contract as provisioned: q2c's record of what was sold, versioned and effective-dated.

The CRM owns the deal; once the deal is provisioned, q2c keeps what it became. Each version
holds the lines (task, role, billing type, rate or amount), each fixed fee's schedule, the
milestones, the not-to-exceed caps, the expense policy, the payment terms and the contract
value. Version 1 is made at provisioning; only a change order makes the next one, effective
from its own date. Invoicing reads the version in force on each entry's date.

Every amount q2c bills under a contract is a *billable item* with a stable key (see
`item_key`): a fee's upfront share, its completion share, one instalment, one milestone, one
expense. A key is billed once across every period and rerun; the drafts that billed them are
the record (see `canonical.rating`).

Decisions worth knowing:

- A fixed fee's schedule is a share up front (a mobilization invoice at provisioning) and the
  rest either on completion (when its task is Done in the PSA) or in equal monthly
  instalments over the contract term; the last instalment takes the rounding, so the parts
  always add up to the fee.
- A milestone belongs to a milestone line, and a milestone line's milestones add up to it.
- A line's cap covers that line's time; the contract's cap covers all time and materials
  and expenses (the fixed prices are fixed already). Both are cumulative across periods.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.commercial import BillingType, ExpensePolicy, FeeRemainder
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
    "Contract",
    "ContractLine",
    "ContractMilestone",
    "ContractVersion",
    "ExpensePolicy",
    "FeeRemainder",
    "FeeSchedule",
    "Instalment",
    "ItemKind",
    "item_key",
    "months_between",
]


class FeeSchedule(CanonicalModel):
    """A fixed fee's schedule: `upfront_percent` at provisioning, the rest by `remainder`.

    ``instalments``: how many equal monthly amounts; None means one per month of the term.
    """

    upfront_percent: Percent = Decimal(0)
    remainder: FeeRemainder = FeeRemainder.ON_COMPLETION
    instalments: int | None = Field(default=None, ge=1, le=120)


class ContractLine(CanonicalModel):
    """One line as sold. ``id`` is the CRM line's id and stays the same across versions."""

    id: NonEmpty
    task: NonEmpty  # the PSA task that delivers it, by name
    task_id: str | None = None  # the PSA's id for that task, once provisioned
    role: str | None = None
    billing_type: BillingType
    rate: NonNegativeMoney | None = None  # per hour; time and materials only
    hours: PositiveDecimal | None = None  # hours sold: the budget of effort
    amount: NonNegativeMoney  # the line's value: the fee, its milestones, or hours x rate
    schedule: FeeSchedule | None = None  # fixed fee only; None is all on completion
    not_to_exceed: NonNegativeMoney | None = None  # time and materials only

    @model_validator(mode="after")
    def _by_type(self) -> Self:
        money = [
            ("amount", self.amount),
            ("rate", self.rate),
            ("not_to_exceed", self.not_to_exceed),
        ]
        check_same_currency(self.amount.currency, [(n, m) for n, m in money if m is not None])
        for problem in self.problems():
            raise ValueError(f"line {self.id}: {problem}")
        return self

    def problems(self) -> list[str]:
        """Why this line cannot be billed as sold, each as ``field: reason``.

        Also answers on an unvalidated line (`model_construct`), so a deal can be checked
        before its contract is made: `ContractVersion.problems` reports these under
        ``lines[i].``.
        """
        issues: list[str] = []
        hourly = self.billing_type is BillingType.TIME_AND_MATERIALS
        kind = self.billing_type.value
        if hourly and self.rate is None:
            issues.append("rate: a time-and-materials line needs a rate")
        if not hourly and self.rate is not None:
            issues.append(f"rate: only time-and-materials lines have a rate, not {kind}")
        if self.schedule is not None and self.billing_type is not BillingType.FIXED_FEE:
            issues.append(f"schedule: only fixed-fee lines have a fee schedule, not {kind}")
        if (
            self.schedule is not None
            and self.schedule.instalments is not None
            and self.schedule.remainder is not FeeRemainder.INSTALMENTS
        ):
            issues.append(
                f"schedule.instalments: {self.schedule.instalments} instalments, but the "
                f"remainder is paid {self.schedule.remainder.value}"
            )
        if self.not_to_exceed is not None and not hourly:
            issues.append(f"not_to_exceed: only time-and-materials lines have a cap, not {kind}")
        return issues

    @property
    def fee_schedule(self) -> FeeSchedule:
        return self.schedule or FeeSchedule()


class ContractMilestone(CanonicalModel):
    id: NonEmpty
    name: NonEmpty
    amount: PositiveMoney
    line_id: NonEmpty  # the milestone line it belongs to; its task's Done completes it
    planned_date: date | None = None


class Instalment(CanonicalModel):
    line_id: NonEmpty
    number: int = Field(ge=1)
    of: int = Field(ge=1)
    due: date  # the first day of the month it is invoiced in
    amount: Money


class ItemKind(StrEnum):
    """What a billable item is; the key of each is made by `item_key`."""

    UPFRONT = "upfront"  # a fixed fee's share invoiced at provisioning
    COMPLETION = "completion"  # a fixed fee's remainder, invoiced when its task is done
    INSTALMENT = "instalment"
    MILESTONE = "milestone"
    EXPENSE = "expense"


def item_key(kind: ItemKind, ident: str, number: int | None = None) -> str:
    """The key an item is billed once under: ``upfront:<line>``, ``completion:<line>``,
    ``instalment:<line>:<n>``, ``milestone:<id>``, ``expense:<id>``."""
    if kind is ItemKind.INSTALMENT:
        if number is None:
            raise ValueError("an instalment's key needs its number")
        return f"{kind.value}:{ident}:{number}"
    return f"{kind.value}:{ident}"


def months_between(start: date, end: date) -> int:
    """Calendar months from ``start``'s to ``end``'s, both counted: Jan..Mar is 3."""
    return (end.year - start.year) * 12 + end.month - start.month + 1


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


class ContractVersion(CanonicalModel):
    """One version of a contract, in force from ``effective_from`` until the next."""

    contract_id: NonEmpty  # the canonical project id, "salesforce:006..."
    version: int = Field(ge=1)
    effective_from: date
    source: NonEmpty  # what made it: "opportunity:<id>" or "change-order:<crm>:<id>"
    currency: CurrencyCode
    start_date: date
    end_date: date | None = None
    lines: list[ContractLine] = Field(min_length=1)
    milestones: list[ContractMilestone] = Field(default_factory=list)
    not_to_exceed: NonNegativeMoney | None = None
    expense_policy: ExpensePolicy = ExpensePolicy()
    payment_terms: PaymentTerms
    value: NonNegativeMoney  # the contract value, as the ERP keeps it
    po_number: str | None = None
    #: The project's budget where it differs from the value; None: the value is the budget
    #: (as at provisioning). A change order's budget change sets it.
    budget: NonNegativeMoney | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_same_currency(
            self.currency,
            [
                ("value", self.value),
                *((f"lines[{i}].amount", ln.amount) for i, ln in enumerate(self.lines)),
                *((f"milestones[{i}].amount", m.amount) for i, m in enumerate(self.milestones)),
                *([("not_to_exceed", self.not_to_exceed)] if self.not_to_exceed else []),
                *([("budget", self.budget)] if self.budget else []),
            ],
        )
        for problem in self.problems():
            raise ValueError(problem)
        return self

    def problems(self) -> list[str]:
        """Why these terms cannot be billed as they stand, each naming its field.

        The one statement of these rules: the validator raises the first, and a deal is
        checked before its contract exists by asking an unvalidated version
        (``ContractVersion.model_construct(...).problems()``) for all of them at once.
        """
        issues: list[str] = []
        if self.end_date is not None and self.end_date < self.start_date:
            issues.append(f"end_date: {self.end_date} is before start_date {self.start_date}")
        issues += _repeats("lines", "id", [ln.id for ln in self.lines])
        issues += _repeats("lines", "task", [ln.task for ln in self.lines])
        issues += _repeats("milestones", "id", [m.id for m in self.milestones])
        for i, ln in enumerate(self.lines):
            issues += [f"lines[{i}].{problem}" for problem in ln.problems()]
        lines = {ln.id: ln for ln in self.lines}
        for i, m in enumerate(self.milestones):
            line = lines.get(m.line_id)
            if line is None:
                issues.append(f"milestones[{i}].line_id: no line {m.line_id!r} in the contract")
            elif line.billing_type is not BillingType.MILESTONE:
                issues.append(
                    f"milestones[{i}].line_id: milestone {m.name!r} is on line {line.id}, "
                    f"which is {line.billing_type.value}, not milestone"
                )
        for i, ln in enumerate(self.lines):
            if ln.billing_type is BillingType.MILESTONE:
                own = self.milestones_of(ln.id)
                if not own:
                    issues.append(f"lines[{i}].milestones: milestone line {ln.id} has none")
                elif (total := sum_money((m.amount for m in own), self.currency)) != ln.amount:
                    issues.append(
                        f"lines[{i}].milestones: milestones of line {ln.id} add up to "
                        f"{total.amount}, not the line's {ln.amount.amount} {self.currency}"
                    )
            if (
                ln.billing_type is BillingType.FIXED_FEE
                and ln.fee_schedule.remainder is FeeRemainder.INSTALMENTS
                and ln.fee_schedule.instalments is None
                and self.end_date is None
            ):
                issues.append(
                    f"lines[{i}].schedule: instalments over the term need the contract's end_date"
                )
        return issues

    # -- reading it ------------------------------------------------------------------------

    def line(self, line_id: str) -> ContractLine | None:
        return next((ln for ln in self.lines if ln.id == line_id), None)

    def line_for_task(
        self, task_id: str | None, task_name: str | None = None
    ) -> ContractLine | None:
        """The line a PSA task delivers: by the task's id once known, else by its name."""
        for ln in self.lines:
            if task_id is not None and ln.task_id == task_id:
                return ln
        return next((ln for ln in self.lines if task_name and ln.task == task_name), None)

    def milestones_of(self, line_id: str) -> list[ContractMilestone]:
        return [m for m in self.milestones if m.line_id == line_id]

    def upfront(self, line: ContractLine) -> Money:
        """The fee's share invoiced at provisioning (zero for other lines)."""
        if line.billing_type is not BillingType.FIXED_FEE:
            return Money.zero(self.currency)
        return (line.amount * (line.fee_schedule.upfront_percent / 100)).rounded()

    def remainder(self, line: ContractLine) -> Money:
        """What is left of the fee after its upfront share."""
        return line.amount - self.upfront(line)

    def instalments(self, line: ContractLine) -> list[Instalment]:
        """The fee's remainder in equal monthly amounts from the contract's start; the last
        takes the rounding. Empty unless the line's remainder is paid in instalments."""
        schedule = line.fee_schedule
        if (
            line.billing_type is not BillingType.FIXED_FEE
            or schedule.remainder is not FeeRemainder.INSTALMENTS
        ):
            return []
        count = schedule.instalments
        if count is None:
            if self.end_date is None:
                return []
            count = months_between(self.start_date, self.end_date)
        rest = self.remainder(line)
        each = Money(amount=rest.amount / count, currency=rest.currency).rounded()
        out = []
        for n in range(1, count + 1):
            amount = each if n < count else rest - each * (count - 1)
            out.append(
                Instalment(
                    line_id=line.id,
                    number=n,
                    of=count,
                    due=_add_months(self.start_date, n - 1),
                    amount=amount,
                )
            )
        return out

    def total(self) -> Money:
        return sum_money((ln.amount for ln in self.lines), self.currency)

    @property
    def project_budget(self) -> Money:
        """The budget the PSA project carries: ``budget``, or the contract value."""
        return self.budget if self.budget is not None else self.value


class Contract(CanonicalModel):
    """Every version of one contract, oldest first."""

    versions: list[ContractVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        ids = {v.contract_id for v in self.versions}
        if len(ids) != 1:
            raise ValueError(f"versions of different contracts: {sorted(ids)}")
        for before, after in zip(self.versions, self.versions[1:], strict=False):
            if after.version != before.version + 1:
                raise ValueError(f"version {after.version} follows {before.version}")
            if after.effective_from < before.effective_from:
                raise ValueError(
                    f"version {after.version} takes effect on {after.effective_from}, "
                    f"before version {before.version} ({before.effective_from})"
                )
        return self

    @property
    def contract_id(self) -> str:
        return self.versions[0].contract_id

    @property
    def current(self) -> ContractVersion:
        return self.versions[-1]

    def in_force(self, on: date) -> ContractVersion:
        """The version in force on a day; the first version also covers days before it (time
        booked before the deal's close date is still sold under it)."""
        found = self.versions[0]
        for version in self.versions:
            if version.effective_from <= on:
                found = version
        return found


def _repeats(field: str, key: str, values: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    issues: list[str] = []
    for i, value in enumerate(values):
        if value in seen:
            issues.append(
                f"{field}[{i}].{key}: {value!r} is also {field}[{seen[value]}]'s; "
                "each must be unique"
            )
        seen.setdefault(value, i)
    return issues
