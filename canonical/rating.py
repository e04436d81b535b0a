"""Rating a billing period: time, milestones and expenses in, a small draft invoice out.

The engine is pure and streaming. A period can hold tens of thousands of time entries, so they
are fed page by page to a `Rater`, which keeps one small record per entry id (to make repeated
pages harmless and the result independent of page split and order) and returns lines grouped
by task, role and rate: no per-entry data goes into the lines, only the sorted id lists the PSA
needs to mark entries billed.

Decisions worth knowing (the tests pin each one):

- Time is billed by the hour only on a time-and-materials contract and on a task that is
  `billable`. Elsewhere (a fixed-fee or milestone contract, a fixed-fee task inside a T&M
  contract) the fee pays for the time: such entries get no line but are *covered*, listed in
  both `billed_time_entry_ids` and `covered_time_entry_ids`, so the PSA can mark them billed
  and they do not linger as unbilled work. They are filtered and rejected like any other entry.
- An entry the customer is not charged for (`billable=False`) is neither billed nor rejected;
  its hours inside the period are counted in `non_billable_hours`. Same for expenses
  (`Expense.billable=False`), which are simply skipped.
- The rate is the task's own rate, else the rate card's for the entry's role on the day worked,
  else the rate card's for the task's role (a senior booking on a task sold as "Developer" is
  billed as a developer). No rate at all rejects the entry.
- Completed milestones are billed on every contract type (a T&M contract may carry a few);
  a completed milestone without a completion date is rejected, as nobody can tell which
  period it belongs to.
- Expenses pass through on every contract type. The contract's `ExpenseRule` for the category
  (matched case-insensitively, else the `"*"` rule, else no markup) sets the markup: the
  contract, not the PSA's per-expense `markup_percent`, decides what the customer pays.
  An expense in another currency is rejected, not converted.
- The not-to-exceed cap covers everything billed (fees, milestones and expenses), net of tax.
- An entry id seen twice with the same billing-relevant content counts once; with different
  content it is rejected, whatever the order the copies came in.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import partial
from typing import Literal, NamedTuple, Self

from pydantic import Field, ValidationInfo, field_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.billing import Invoice, InvoiceLine
from canonical.commercial import (
    BillingType,
    Milestone,
    MilestoneStatus,
    RateCard,
    check_rate_card_currency,
)
from canonical.delivery import Expense, TimeEntry
from canonical.errors import NoRate
from canonical.money import (
    CurrencyCode,
    ExactDecimal,
    Money,
    NonNegativeMoney,
    Percent,
    TaxRate,
    check_same_currency,
    minor_unit,
    sum_money,
)
from canonical.party import PaymentTerms

__all__ = [
    "BillingContract",
    "BillingPeriod",
    "ContractTask",
    "ExpenseRule",
    "RatedPeriod",
    "Rater",
    "RejectedEntry",
    "rate_period",
]

ANY_CATEGORY = "*"
CAP_DESCRIPTION = "Not-to-exceed cap adjustment"
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


class BillingPeriod(CanonicalModel):
    """A calendar month, the unit invoices are run for."""

    year: int = Field(ge=1, le=9999)
    month: int = Field(ge=1, le=12)

    @classmethod
    def parse(cls, text: str) -> Self:
        found = _PERIOD.match(text.strip())
        if found is None or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
            raise ValueError(f"billing period {text!r} is not in the format YYYY-MM (e.g. 2026-11)")
        return cls(year=int(found[1]), month=int(found[2]))

    @classmethod
    def of(cls, day: date) -> Self:
        return cls(year=day.year, month=day.month)

    @property
    def key(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        """The last day, inclusive."""
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def previous(self) -> BillingPeriod:
        if self.month == 1:
            return BillingPeriod(year=self.year - 1, month=12)
        return BillingPeriod(year=self.year, month=self.month - 1)

    def __str__(self) -> str:
        return self.key


class ExpenseRule(CanonicalModel):
    """How one category of expenses is passed on to the customer."""

    category: NonEmpty  # "travel", "lodging"; "*" for every category without its own rule
    markup_percent: Percent = Decimal(0)
    billable: bool = True  # False: never passed through; such expenses are rejected

    def matches(self, category: str) -> bool:
        return self.category.casefold() == category.casefold()


class ContractTask(CanonicalModel):
    id: NonEmpty  # the PSA's task id, as on `TimeEntry.task_id`
    name: NonEmpty
    role: str | None = None
    open: bool = True  # a closed task takes no more time: its entries are rejected
    rate: NonNegativeMoney | None = None  # overrides the rate card, like `Task.rate`
    billable: bool = True  # False: a fixed-fee task; its time is covered, not billed by the hour


class BillingContract(CanonicalModel):
    """What invoicing a project needs to know; built by an activity from the PSA and the CRM.

    ``project_id`` is the id the PSA puts on time entries and expenses: entries of any other
    project are rejected rather than billed to this customer.
    """

    project_id: NonEmpty
    customer_id: NonEmpty
    customer_name: NonEmpty
    currency: CurrencyCode
    billing_type: BillingType
    rate_card: RateCard | None = None
    tasks: list[ContractTask] = Field(default_factory=list)
    milestones: list[Milestone] = Field(default_factory=list)
    not_to_exceed: NonNegativeMoney | None = None  # cap on the project's total billed, net
    billed_to_date: NonNegativeMoney | None = None  # net billed by earlier invoices; None = 0
    expense_rules: list[ExpenseRule] = Field(default_factory=list)
    tax_rate: TaxRate  # the customer's jurisdiction, from settings
    payment_terms: PaymentTerms
    legal_entity_code: NonEmpty
    po_number: str | None = None

    @field_validator("rate_card")
    @classmethod
    def _card_currency(cls, card: RateCard | None, info: ValidationInfo) -> RateCard | None:
        return check_rate_card_currency(card, info.data.get("currency"), "contract")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[ContractTask], info: ValidationInfo) -> list[ContractTask]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                ((f"tasks[{i}].rate", t.rate) for i, t in enumerate(tasks) if t.rate is not None),
            )
        _unique("tasks", [t.id for t in tasks])
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
        _unique("milestones", [m.id for m in milestones])
        return milestones

    @field_validator("not_to_exceed", "billed_to_date")
    @classmethod
    def _cap_currency(cls, money: Money | None, info: ValidationInfo) -> Money | None:
        currency = info.data.get("currency")
        if money is not None and currency is not None:
            check_same_currency(currency, [(str(info.field_name), money)])
        return money

    @field_validator("expense_rules")
    @classmethod
    def _rules(cls, rules: list[ExpenseRule]) -> list[ExpenseRule]:
        _unique("expense_rules", [r.category.casefold() for r in rules])
        return rules

    def task(self, task_id: str) -> ContractTask | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def expense_rule(self, category: str) -> ExpenseRule | None:
        """The category's own rule, else the catch-all ``"*"``, else None (no markup)."""
        own = next((r for r in self.expense_rules if r.matches(category)), None)
        return own or next((r for r in self.expense_rules if r.category == ANY_CATEGORY), None)


def _unique(field: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            raise ValueError(f"{field}[{i}] repeats {ident!r}; each must be unique")
        seen.add(ident)


class RejectedEntry(CanonicalModel):
    """An entry that could not be billed, and why: it goes to the exceptions store."""

    entry_id: NonEmpty
    kind: Literal["time", "expense", "milestone"]
    reason: NonEmpty


class RatedPeriod(CanonicalModel):
    """A period rated: the draft invoice's lines and what they settle. Small by design."""

    period: BillingPeriod
    currency: CurrencyCode
    project_id: str | None = None
    legal_entity_code: str | None = None
    po_number: str | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)  # grouped; source_ids stay empty
    billed_time_entry_ids: list[str] = Field(default_factory=list)  # sorted; includes covered
    covered_time_entry_ids: list[str] = Field(default_factory=list)  # settled by a fee, no line
    billed_expense_ids: list[str] = Field(default_factory=list)
    billed_milestone_ids: list[str] = Field(default_factory=list)
    rejected: list[RejectedEntry] = Field(default_factory=list)
    overage: Money  # what the not-to-exceed cap cut off; zero when nothing
    hours: ExactDecimal = Decimal(0)  # hours billed by the hour
    covered_hours: ExactDecimal = Decimal(0)
    non_billable_hours: ExactDecimal = Decimal(0)

    @field_validator("lines")
    @classmethod
    def _lines(cls, lines: list[InvoiceLine], info: ValidationInfo) -> list[InvoiceLine]:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(
                currency,
                ((f"lines[{i}].unit_price", ln.unit_price) for i, ln in enumerate(lines)),
            )
        return lines

    @field_validator("overage")
    @classmethod
    def _overage(cls, overage: Money, info: ValidationInfo) -> Money:
        currency = info.data.get("currency")
        if currency is not None:
            check_same_currency(currency, [("overage", overage)])
        return overage

    @property
    def subtotal(self) -> Money:
        return sum_money((ln.net for ln in self.lines), self.currency)

    @property
    def tax(self) -> Money:
        return sum_money((ln.tax for ln in self.lines), self.currency)

    @property
    def total(self) -> Money:
        return sum_money((ln.total for ln in self.lines), self.currency)

    @property
    def is_empty(self) -> bool:
        """Nothing to invoice this period (there may still be covered entries to mark)."""
        return not self.lines

    def to_invoice(
        self,
        *,
        invoice_id: str,
        customer_id: str,
        due_date: date | None = None,
        memo: str | None = None,
        project_id: str | None = None,
        legal_entity_code: str | None = None,
        po_number: str | None = None,
    ) -> Invoice:
        """A draft invoice of these lines; omitted references come from the contract rated."""
        return Invoice(
            id=invoice_id,
            customer_id=customer_id,
            currency=self.currency,
            lines=self.lines,
            due_date=due_date,
            project_id=project_id or self.project_id,
            legal_entity_code=legal_entity_code or self.legal_entity_code,
            po_number=po_number or self.po_number,
            memo=memo if memo is not None else f"Billing period {self.period.key}",
        )


# -- the engine --------------------------------------------------------------------------------


class _Hourly(NamedTuple):
    task_id: str
    role: str
    rate: Decimal
    hours: Decimal
    day: date


class _Covered(NamedTuple):
    hours: Decimal


class _NonBillable(NamedTuple):
    hours: Decimal


class _Passed(NamedTuple):
    """An expense passed through."""

    category: str  # as spelt on the expense; grouped case-insensitively
    amount: Decimal


class _Rejected(NamedTuple):
    reason: str


class _Skipped(NamedTuple):
    """Not for the customer, and no problem either (e.g. non-billable outside the period)."""


_Outcome = _Hourly | _Covered | _NonBillable | _Passed | _Rejected | _Skipped

_CONFLICT = "appears more than once with different contents"


@dataclass
class _Seen:
    fingerprint: tuple[object, ...]
    outcome: _Outcome


@dataclass
class _TimeGroup:
    hours: Decimal
    first_day: date


@dataclass
class _ExpenseGroup:
    amount: Decimal
    count: int
    spelling: str  # the smallest spelling seen, so the label does not depend on order


class Rater:
    """Streaming: feed pages of time entries and expenses, then `finish`.

    Memory is one small record per entry id; the result is a handful of lines plus id lists.
    Feeding the same entries again, in any page split or order, gives an equal result.
    """

    def __init__(self, contract: BillingContract, period: BillingPeriod) -> None:
        self._contract = contract
        self._period = period
        self._tasks = {t.id: t for t in contract.tasks}
        self._time: dict[str, _Seen] = {}
        self._expenses: dict[str, _Seen] = {}

    def add_time(self, entries: Iterable[TimeEntry]) -> None:
        for entry in entries:
            fingerprint = (
                entry.project_id,
                entry.task_id,
                entry.role,
                entry.work_date,
                entry.hours,
                entry.billable,
                entry.approved,
                entry.billed,
            )
            _record(self._time, entry.id, fingerprint, partial(self._rate_time, entry))

    def add_expenses(self, expenses: Iterable[Expense]) -> None:
        for expense in expenses:
            fingerprint = (
                expense.project_id,
                expense.incurred_on,
                expense.category,
                expense.amount.amount,
                expense.amount.currency,
                expense.billable,
                expense.approved,
                expense.billed,
            )
            _record(self._expenses, expense.id, fingerprint, partial(self._rate_expense, expense))

    def _rate_time(self, entry: TimeEntry) -> _Outcome:
        contract, period = self._contract, self._period
        if not entry.billable:
            inside = period.contains(entry.work_date)
            return _NonBillable(_canonical(entry.hours, 0)) if inside else _Skipped()
        refused = self._refusal(entry.project_id, entry.billed, entry.approved, entry.work_date)
        if refused:
            return _Rejected(refused)
        if entry.task_id is None:
            return _Rejected("booked on the project, not on a task")
        task = self._tasks.get(entry.task_id)
        if task is None:
            return _Rejected(f"unknown task {entry.task_id}")
        if not task.open:
            return _Rejected(f"task {task.id} is closed")
        if contract.billing_type is not BillingType.TIME_AND_MATERIALS or not task.billable:
            return _Covered(_canonical(entry.hours, 0))
        priced = self._price(task, entry)
        if isinstance(priced, str):
            return _Rejected(priced)
        role, rate = priced
        amount = _canonical_amount(rate.amount, contract.currency)
        return _Hourly(task.id, role, amount, _canonical(entry.hours, 0), entry.work_date)

    def _price(self, task: ContractTask, entry: TimeEntry) -> tuple[str, Money] | str:
        """(role billed, rate), or why there is none."""
        if task.rate is not None:
            return entry.role, task.rate
        card = self._contract.rate_card
        roles = [entry.role] + ([task.role] if task.role and task.role != entry.role else [])
        for role in roles:
            if card is not None:
                try:
                    return role, card.rate_for(role, entry.work_date)
                except NoRate:
                    pass
        return f"no rate for role {entry.role} on {entry.work_date.isoformat()}"

    def _rate_expense(self, expense: Expense) -> _Outcome:
        if not expense.billable:
            return _Skipped()
        refused = self._refusal(
            expense.project_id, expense.billed, expense.approved, expense.incurred_on
        )
        if refused:
            return _Rejected(refused)
        if expense.amount.currency != self._contract.currency:
            return _Rejected(
                f"currency {expense.amount.currency} differs from the contract's "
                f"{self._contract.currency}"
            )
        rule = self._contract.expense_rule(expense.category)
        if rule is not None and not rule.billable:
            return _Rejected(f"expense category {expense.category} is not billable")
        return _Passed(
            expense.category, _canonical_amount(expense.amount.amount, expense.amount.currency)
        )

    def _refusal(self, project_id: str, billed: bool, approved: bool, day: date) -> str | None:
        if project_id != self._contract.project_id:
            return f"belongs to project {project_id}, not {self._contract.project_id}"
        if billed:
            return "already billed"
        if not approved:
            return "not approved"
        if not self._period.contains(day):
            return f"outside period {self._period.key}"
        return None

    def finish(self) -> RatedPeriod:
        """The period's lines; completed milestones are added here. Safe to call again."""
        contract, currency = self._contract, self._contract.currency
        rejected: list[RejectedEntry] = []

        groups: dict[tuple[str, str, Decimal], _TimeGroup] = {}
        billed_time: list[str] = []
        covered: list[str] = []
        hours = covered_hours = non_billable_hours = Decimal(0)
        for entry_id, seen in self._time.items():
            match seen.outcome:
                case _Hourly(task_id, role, rate, worked, day):
                    group = groups.setdefault((task_id, role, rate), _TimeGroup(Decimal(0), day))
                    group.hours += worked
                    group.first_day = min(group.first_day, day)
                    hours += worked
                    billed_time.append(entry_id)
                case _Covered(worked):
                    covered_hours += worked
                    covered.append(entry_id)
                    billed_time.append(entry_id)
                case _NonBillable(worked):
                    non_billable_hours += worked
                case _Rejected(reason):
                    rejected.append(RejectedEntry(entry_id=entry_id, kind="time", reason=reason))

        order = {t.id: i for i, t in enumerate(contract.tasks)}
        lines = [
            self._time_line(task_id, role, rate, group)
            for (task_id, role, rate), group in sorted(
                groups.items(),
                key=lambda kv: (order[kv[0][0]], kv[0][1], kv[1].first_day, kv[0][2]),
            )
        ]

        billed_milestones: list[str] = []
        for milestone in contract.milestones:
            if milestone.status is not MilestoneStatus.COMPLETED:
                continue
            if milestone.completed_on is None:
                rejected.append(
                    RejectedEntry(
                        entry_id=milestone.id,
                        kind="milestone",
                        reason=f"milestone {milestone.name} is completed but has no "
                        "completion date",
                    )
                )
            elif milestone.completed_on <= self._period.end:
                lines.append(self._milestone_line(milestone))
                billed_milestones.append(milestone.id)

        categories: dict[str, _ExpenseGroup] = {}
        billed_expenses: list[str] = []
        for expense_id, seen in self._expenses.items():
            match seen.outcome:
                case _Passed(category, amount):
                    bucket = categories.setdefault(
                        category.casefold(), _ExpenseGroup(Decimal(0), 0, category)
                    )
                    bucket.amount += amount
                    bucket.count += 1
                    bucket.spelling = min(bucket.spelling, category)
                    billed_expenses.append(expense_id)
                case _Rejected(reason):
                    rejected.append(
                        RejectedEntry(entry_id=expense_id, kind="expense", reason=reason)
                    )
        lines += [self._expense_line(categories[key]) for key in sorted(categories)]

        overage = Money.zero(currency)
        if contract.not_to_exceed is not None:
            before = contract.billed_to_date or Money.zero(currency)
            room = max((contract.not_to_exceed - before).rounded(), Money.zero(currency))
            net = sum_money((ln.net for ln in lines), currency)
            if net > room:
                overage = net - room
                lines.append(self._cap_line(overage))

        return RatedPeriod(
            period=self._period,
            currency=currency,
            project_id=contract.project_id,
            legal_entity_code=contract.legal_entity_code,
            po_number=contract.po_number,
            lines=lines,
            billed_time_entry_ids=sorted(billed_time),
            covered_time_entry_ids=sorted(covered),
            billed_expense_ids=sorted(billed_expenses),
            billed_milestone_ids=sorted(billed_milestones),
            rejected=sorted(rejected, key=lambda r: (r.kind, r.entry_id)),
            overage=overage,
            hours=hours,
            covered_hours=covered_hours,
            non_billable_hours=non_billable_hours,
        )

    # -- lines: descriptions a customer reads; ids stable across runs for idempotent writes --

    def _time_line(self, task_id: str, role: str, rate: Decimal, group: _TimeGroup) -> InvoiceLine:
        currency = self._contract.currency
        task = self._tasks[task_id]
        return InvoiceLine(
            id=f"time:{task_id}:{role}:{rate}",
            description=f"{task.name} — {role} ({_plain(group.hours)} h at {rate} {currency})",
            quantity=group.hours,
            unit_price=Money(amount=rate, currency=currency),
            tax_rate=self._contract.tax_rate,
        )

    def _milestone_line(self, milestone: Milestone) -> InvoiceLine:
        return InvoiceLine(
            id=f"milestone:{milestone.id}",
            description=f"Milestone: {milestone.name}",
            quantity=Decimal(1),
            unit_price=milestone.amount,
            tax_rate=self._contract.tax_rate,
        )

    def _expense_line(self, group: _ExpenseGroup) -> InvoiceLine:
        rule = self._contract.expense_rule(group.spelling)
        markup = rule.markup_percent if rule is not None else Decimal(0)
        price = Money(amount=group.amount, currency=self._contract.currency)
        detail = f"{group.count}, {_plain(markup)} % markup" if markup else f"{group.count}"
        label = group.spelling[:1].upper() + group.spelling[1:]
        return InvoiceLine(
            id=f"expense:{group.spelling.casefold()}",
            description=f"{label} expenses ({detail})",
            quantity=Decimal(1),
            unit_price=(price * (1 + markup / 100)).rounded(),
            tax_rate=self._contract.tax_rate,
        )

    def _cap_line(self, overage: Money) -> InvoiceLine:
        cap = self._contract.not_to_exceed
        assert cap is not None
        return InvoiceLine(
            id="cap",
            description=f"{CAP_DESCRIPTION} (cap {cap.rounded()})",
            quantity=Decimal(1),
            unit_price=-overage,
            tax_rate=self._contract.tax_rate,
        )


def _record(
    seen: dict[str, _Seen],
    entry_id: str,
    fingerprint: tuple[object, ...],
    rate: Callable[[], _Outcome],
) -> None:
    """Rate an entry once; a second copy that disagrees with the first rejects both."""
    earlier = seen.get(entry_id)
    if earlier is None:
        seen[entry_id] = _Seen(fingerprint, rate())
    elif earlier.fingerprint != fingerprint:
        earlier.outcome = _Rejected(_CONFLICT)


def _canonical_amount(amount: Decimal, currency: str) -> Decimal:
    """One spelling per value (160 and 160.00 are one rate): at least the minor unit's digits."""
    return _canonical(amount, minor_unit(currency))


def _canonical(number: Decimal, places: int) -> Decimal:
    """``number`` spelt without trailing zeros beyond ``places`` digits, and never as 1E+2.

    Equal values from different sources then serialise alike, so the result of rating does
    not depend on which copy of an entry or which rate card entry came first.
    """
    normal = number.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -places:
        return normal.quantize(Decimal(1).scaleb(-places))
    return normal


def _plain(number: Decimal) -> str:
    """12.50 as "12.5" and 1E+2 as "100": how people write hours and percentages."""
    return format(number.normalize(), "f")


def rate_period(
    contract: BillingContract,
    period: BillingPeriod,
    entries: Iterable[TimeEntry],
    expenses: Iterable[Expense] = (),
) -> RatedPeriod:
    """Rate a period in one call (a `Rater` fed once), for callers holding every entry."""
    rater = Rater(contract, period)
    rater.add_time(entries)
    rater.add_expenses(expenses)
    return rater.finish()
