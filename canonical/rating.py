"""Rating a billing period by line type: time, fees, milestones and expenses in, a draft out.

The engine is pure and streaming. A period can hold tens of thousands of time entries, so they
are fed page by page to a `Rater`, which keeps one small record per entry id (to make repeated
pages harmless and the result independent of page split and order) and returns lines grouped
by task, role, rate and contract version: no per-entry data goes into the invoice lines; which
entries each time line billed is kept beside them (`RatedPeriod.line_entries`), in the draft
that q2c's store holds, never in workflow history.

What is billed is what the contract sold (`canonical.contract`), read in the version in force
on each entry's date, item's date or expense's date:

- **Time** on a time-and-materials line's task is billed at that line's rate. Time on a
  fixed-fee or milestone line's task is never billed by the hour: the fee pays for it. Such
  entries are *covered*: listed in both `billed_time_entry_ids` and `covered_time_entry_ids`
  so the PSA marks them billed and they do not linger, and reported as effort against the
  line's sold hours (`effort`). They are filtered and rejected like any other entry.
- **Fixed fees.** The upfront share is billed only by `rate_upfront` (the provisioning
  invoice), never by a period. The remainder on completion is billed in the first period whose
  end is on or after the day the line's task was set Done (`TaskProgress.done_on`).
  Instalments are billed when due (``due <= period.end``), catching up every month missed.
- **Milestones** are billed when their line's task is Done, in the same way.
- **Expenses** are billed when their category is billable under the version's
  `ExpensePolicy` (case-insensitive), with its markup, grouped by category. An expense in a
  category the policy does not pass on is never billed; it is reported
  (`non_billable_expense_ids`), not rejected.
- **Once only.** Fees, instalments, milestones and expenses are *billable items* with a
  stable key (`canonical.contract.item_key`). A key in `BillingContract.billed` (computed by
  `billed_so_far` from the periods already invoiced) is never billed again, so a later period
  or a rerun cannot bill it twice; `RatedPeriod.billed_items` records each one this period
  billed. Time entries are kept once by the caller, which drops the entries an issued invoice
  holds.
- **Caps.** A line's cap covers that line's time; the contract's cap covers all time and
  materials and expenses (fees and milestones are fixed prices already). Both are cumulative
  across periods, read from the version in force on the period's last day, and are never
  exceeded: what is left under a cap is rounded *down* to the minor unit. The lines show the
  work at full value and a negative line per cap cuts the overage (``cap:<line>`` right after
  that line's time, ``cap`` for the contract's, last), so the customer sees the hours worked
  and what the cap waived, and finance sees what is held (`overage`, and per cap in `held`).
  The overage is not billed and not carried to a later period. A line's cap applies first;
  the contract's cap then applies to what is left.
- **Revenue.** Fee and milestone lines carry the contract's delivery period
  (`revenue_from`..`revenue_to` = start_date..end_date) so the ERP defers them over it; with no
  end date there is no span and revenue is recognized as invoiced, like time and expenses.
- **Traceability.** Every line carries its `contract_version`; fee, milestone and expense
  lines carry their item keys in `source_ids`.
- An entry the customer is not charged for (`billable=False`) is neither billed nor rejected;
  its hours inside the period are counted in `non_billable_hours`. Same for expenses
  (`Expense.billable=False`), which are simply skipped.
- An entry on a task dated after the task was Done is rejected (work booked on finished
  work); entries up to that day are billed as usual.
- An expense in another currency is rejected, not converted.
- An entry id seen twice with the same billing-relevant content counts once; with different
  content it is rejected, whatever the order the copies came in.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal
from functools import partial
from typing import Literal, NamedTuple, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.billing import Invoice, InvoiceLine
from canonical.commercial import BillingType, FeeRemainder
from canonical.contract import Contract, ContractLine, ContractVersion, ItemKind, item_key
from canonical.delivery import Expense, TimeEntry
from canonical.money import (
    CurrencyCode,
    ExactDecimal,
    Money,
    TaxRate,
    check_same_currency,
    minor_unit,
    sum_money,
)
from canonical.party import PaymentTerms

__all__ = [
    "BilledItem",
    "BilledSoFar",
    "BillingContract",
    "BillingPeriod",
    "HeldOverage",
    "LineEffort",
    "RatedPeriod",
    "Rater",
    "RejectedEntry",
    "TaskProgress",
    "billed_so_far",
    "cap_problems",
    "rate_period",
    "rate_upfront",
]

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


class TaskProgress(CanonicalModel):
    """A task as the PSA reports it: what time is booked on, and when it was done."""

    id: NonEmpty  # the PSA's task id, as on `TimeEntry.task_id`
    name: NonEmpty  # matches the contract line's `task` until the line knows the id
    done_on: date | None = None  # the day it was set Done; None while it is open


class BilledSoFar(CanonicalModel):
    """What earlier invoices billed under the contract: enough to bill each item once and to
    keep the caps cumulative. Amounts are net, in the contract's currency."""

    items: list[NonEmpty] = Field(default_factory=list)  # item keys, sorted
    time_net: dict[str, ExactDecimal] = Field(default_factory=dict)  # line id -> T&M billed
    under_cap: ExactDecimal = Decimal(0)  # billed that counts toward the contract's cap

    @field_validator("items")
    @classmethod
    def _sorted(cls, items: list[str]) -> list[str]:
        return sorted(set(items))


def cap_problems(version: ContractVersion, billed: BilledSoFar) -> list[str]:
    """Caps a version sets below what was already billed under them, each naming its field:
    a change order must not lower a cap past what the customer has been invoiced."""
    issues: list[str] = []
    currency = version.currency
    cap = version.not_to_exceed
    if cap is not None and cap.amount < billed.under_cap:
        issues.append(
            f"not_to_exceed: the cap {cap.amount} {currency} is below the "
            f"{billed.under_cap} {currency} already billed under it"
        )
    for i, line in enumerate(version.lines):
        spent = billed.time_net.get(line.id, Decimal(0))
        if line.not_to_exceed is not None and line.not_to_exceed.amount < spent:
            issues.append(
                f"lines[{i}].not_to_exceed: the cap {line.not_to_exceed.amount} {currency} on "
                f"line {line.id} is below the {spent} {currency} already billed on it"
            )
    return issues


class BilledItem(CanonicalModel):
    """One billable item a period billed: the record that keeps it from being billed again."""

    key: NonEmpty  # `item_key`
    kind: ItemKind
    line_id: str | None = None  # the contract line; None for an expense
    net: Money  # an expense's own share, before the category's line is rounded
    version: int = Field(ge=1)


class HeldOverage(CanonicalModel):
    """What a cap cut off this period: held for finance, not billed."""

    cap: Literal["line", "contract"]
    line_id: str | None = None  # the capped line; None for the contract's cap
    amount: Money


class LineEffort(CanonicalModel):
    """Hours booked on a fixed-fee or milestone line's task this period: covered by the fee,
    reported against the hours sold (None when the line sold none)."""

    line_id: NonEmpty
    task: NonEmpty
    billing_type: BillingType
    hours: ExactDecimal
    sold_hours: ExactDecimal | None = None


class BillingContract(CanonicalModel):
    """What invoicing a project needs to know; built by an activity from the CRM deal (the
    contract), the PSA (task progress), the ERP (customer facts) and q2c's store (`billed`).

    ``project_id`` is the id the PSA puts on time entries and expenses: entries of any other
    project are rejected rather than billed to this customer.
    """

    project_id: NonEmpty
    customer_id: NonEmpty
    customer_name: NonEmpty
    currency: CurrencyCode
    contract: Contract
    tasks: list[TaskProgress] = Field(default_factory=list)
    billed: BilledSoFar = BilledSoFar()
    tax_rate: TaxRate  # the customer's jurisdiction, from settings
    payment_terms: PaymentTerms
    legal_entity_code: NonEmpty
    po_number: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for version in self.contract.versions:
            if version.currency != self.currency:
                raise ValueError(
                    f"contract version {version.version} is in {version.currency}, "
                    f"not {self.currency}"
                )
        seen: set[str] = set()
        for i, task in enumerate(self.tasks):
            if task.id in seen:
                raise ValueError(f"tasks[{i}] repeats {task.id!r}; each must be unique")
            seen.add(task.id)
        return self

    def task(self, task_id: str) -> TaskProgress | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def progress_of(self, line: ContractLine) -> TaskProgress | None:
        """The PSA task delivering a line: by the line's task id once known, else by name."""
        if line.task_id is not None:
            return self.task(line.task_id)
        return next((t for t in self.tasks if t.name == line.task), None)


class RejectedEntry(CanonicalModel):
    """An entry that could not be billed, and why: it goes to the exceptions store."""

    entry_id: NonEmpty
    kind: Literal["time", "expense", "milestone"]
    reason: NonEmpty


class RatedPeriod(CanonicalModel):
    """A period rated: the draft invoice's lines and what they settle. Small by design."""

    period: BillingPeriod
    currency: CurrencyCode
    #: "period" (a month's work) or "upfront" (fixed fees' shares invoiced at provisioning).
    kind: Literal["period", "upfront"] = "period"
    project_id: str | None = None
    legal_entity_code: str | None = None
    po_number: str | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)  # grouped
    billed_time_entry_ids: list[str] = Field(default_factory=list)  # sorted; includes covered
    covered_time_entry_ids: list[str] = Field(default_factory=list)  # settled by a fee, no line
    #: Time line id -> the entries it bills (sorted): how a line is traced to its entries.
    line_entries: dict[str, list[str]] = Field(default_factory=dict)
    billed_expense_ids: list[str] = Field(default_factory=list)
    #: Expenses in a category the contract does not pass on: never billed, not an error.
    non_billable_expense_ids: list[str] = Field(default_factory=list)
    billed_milestone_ids: list[str] = Field(default_factory=list)
    #: Every fee share, instalment, milestone and expense billed, by item key.
    billed_items: list[BilledItem] = Field(default_factory=list)
    #: Net time-and-materials billed per contract line, after its cap.
    time_net: dict[str, ExactDecimal] = Field(default_factory=dict)
    #: Net billed that counts toward the contract's cap (time and expenses), after it.
    under_cap: ExactDecimal = Decimal(0)
    rejected: list[RejectedEntry] = Field(default_factory=list)
    overage: Money  # what the caps cut off: held for finance; zero when nothing
    held: list[HeldOverage] = Field(default_factory=list)
    effort: list[LineEffort] = Field(default_factory=list)
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
        default_memo = (
            f"Billing period {self.period.key}"
            if self.kind == "period"
            else f"Fixed fees invoiced up front ({self.period.key})"
        )
        return Invoice(
            id=invoice_id,
            customer_id=customer_id,
            currency=self.currency,
            lines=self.lines,
            due_date=due_date,
            project_id=project_id or self.project_id,
            legal_entity_code=legal_entity_code or self.legal_entity_code,
            po_number=po_number or self.po_number,
            memo=memo if memo is not None else default_memo,
        )


def billed_so_far(rated: Iterable[RatedPeriod]) -> BilledSoFar:
    """What the periods already invoiced billed; pass only issued ones (a void invoice frees
    what it held). The same records serve the rerun rules: a rerun bills none of it again."""
    items: set[str] = set()
    time_net: dict[str, Decimal] = {}
    under_cap = Decimal(0)
    for period in rated:
        items.update(item.key for item in period.billed_items)
        items.update(item_key(ItemKind.MILESTONE, m) for m in period.billed_milestone_ids)
        for line_id, net in period.time_net.items():
            time_net[line_id] = time_net.get(line_id, Decimal(0)) + net
        under_cap += period.under_cap
    return BilledSoFar(items=sorted(items), time_net=time_net, under_cap=under_cap)


# -- the engine --------------------------------------------------------------------------------


class _Hourly(NamedTuple):
    version: int
    line_id: str
    task_id: str
    role: str
    rate: Decimal
    hours: Decimal
    day: date


class _Covered(NamedTuple):
    line_id: str
    hours: Decimal


class _NonBillable(NamedTuple):
    hours: Decimal


class _Passed(NamedTuple):
    """An expense passed through."""

    version: int
    category: str  # as spelt on the expense; grouped case-insensitively
    amount: Decimal
    markup: Decimal


class _Withheld(NamedTuple):
    """An expense in a category the contract does not pass on."""


class _Rejected(NamedTuple):
    reason: str


class _Skipped(NamedTuple):
    """Not for the customer, and no problem either (e.g. non-billable outside the period)."""


_Outcome = _Hourly | _Covered | _NonBillable | _Passed | _Withheld | _Rejected | _Skipped

_CONFLICT = "appears more than once with different contents"


@dataclass
class _Seen:
    fingerprint: tuple[object, ...]
    outcome: _Outcome


@dataclass
class _TimeGroup:
    line_id: str
    hours: Decimal
    first_day: date
    entries: list[str] = field(default_factory=list)


@dataclass
class _ExpenseGroup:
    amount: Decimal
    spelling: str  # the smallest spelling seen, so the label does not depend on order
    keys: list[str] = field(default_factory=list)
    items: list[BilledItem] = field(default_factory=list)


class Rater:
    """Streaming: feed pages of time entries and expenses, then `finish`.

    Memory is one small record per entry id; the result is a handful of lines plus id lists.
    Feeding the same entries again, in any page split or order, gives an equal result.
    """

    def __init__(self, contract: BillingContract, period: BillingPeriod) -> None:
        self._contract = contract
        self._period = period
        self._tasks = {t.id: t for t in contract.tasks}
        self._billed = set(contract.billed.items)
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
        period = self._period
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
        if task.done_on is not None and entry.work_date > task.done_on:
            return _Rejected(f"task {task.id} was done on {task.done_on.isoformat()}")
        version = self._contract.contract.in_force(entry.work_date)
        line = version.line_for_task(task.id, task.name)
        if line is None:
            return _Rejected(f"task {task.name} is not sold in contract version {version.version}")
        hours = _canonical(entry.hours, 0)
        if line.billing_type is not BillingType.TIME_AND_MATERIALS or line.rate is None:
            return _Covered(line.id, hours)
        rate = _canonical_amount(line.rate.amount, self._contract.currency)
        return _Hourly(version.version, line.id, task.id, entry.role, rate, hours, entry.work_date)

    def _rate_expense(self, expense: Expense) -> _Outcome:
        if not expense.billable:
            return _Skipped()
        if item_key(ItemKind.EXPENSE, expense.id) in self._billed:
            return _Skipped()  # an earlier invoice billed it
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
        version = self._contract.contract.in_force(expense.incurred_on)
        policy = version.expense_policy
        if not policy.billable(expense.category):
            return _Withheld()
        return _Passed(
            version.version,
            expense.category,
            _canonical_amount(expense.amount.amount, expense.amount.currency),
            _canonical(policy.markup_percent, 0),
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
        """The period's lines: time, then fees and milestones due, expenses, caps. Safe to
        call again."""
        contract, currency = self._contract, self._contract.currency
        billed_before = contract.billed
        cap_terms = contract.contract.in_force(self._period.end)
        rejected: list[RejectedEntry] = []

        groups: dict[tuple[int, str, str, Decimal], _TimeGroup] = {}
        billed_time: list[str] = []
        covered: list[str] = []
        effort: dict[str, Decimal] = {}
        hours = covered_hours = non_billable_hours = Decimal(0)
        for entry_id, seen in self._time.items():
            match seen.outcome:
                case _Hourly(version, line_id, task_id, role, rate, worked, day):
                    group = groups.setdefault(
                        (version, task_id, role, rate), _TimeGroup(line_id, Decimal(0), day)
                    )
                    group.hours += worked
                    group.first_day = min(group.first_day, day)
                    group.entries.append(entry_id)
                    hours += worked
                    billed_time.append(entry_id)
                case _Covered(line_id, worked):
                    covered_hours += worked
                    effort[line_id] = effort.get(line_id, Decimal(0)) + worked
                    covered.append(entry_id)
                    billed_time.append(entry_id)
                case _NonBillable(worked):
                    non_billable_hours += worked
                case _Rejected(reason):
                    rejected.append(RejectedEntry(entry_id=entry_id, kind="time", reason=reason))

        # Time lines, each contract line's together, then the cut its own cap makes.
        order = {t.id: i for i, t in enumerate(contract.tasks)}
        ordered = sorted(
            groups.items(),
            key=lambda kv: (order[kv[0][1]], kv[0][2], kv[1].first_day, kv[0][3], kv[0][0]),
        )
        by_line: dict[str, list[InvoiceLine]] = {}
        line_entries: dict[str, list[str]] = {}
        for (version, task_id, role, rate), group in ordered:
            line = self._time_line(version, task_id, role, rate, group)
            by_line.setdefault(group.line_id, []).append(line)
            line_entries[line.id or ""] = sorted(group.entries)
        lines: list[InvoiceLine] = []
        held: list[HeldOverage] = []
        time_net: dict[str, Decimal] = {}
        for line_id, time_lines in by_line.items():
            lines += time_lines
            net = sum_money((ln.net for ln in time_lines), currency)
            sold = cap_terms.line(line_id)
            cap = sold.not_to_exceed if sold is not None else None
            if cap is not None:
                before = billed_before.time_net.get(line_id, Decimal(0))
                room = _room(cap, before)
                if net > room:
                    cut = net - room
                    lines.append(self._line_cap_line(line_id, cap, cut, cap_terms.version))
                    held.append(HeldOverage(cap="line", line_id=line_id, amount=cut))
                    net = room
            time_net[line_id] = net.amount

        items = self._items()
        lines += [line for line, _ in items]

        categories: dict[tuple[int, str, Decimal], _ExpenseGroup] = {}
        billed_expenses: list[str] = []
        withheld: list[str] = []
        for expense_id, seen in self._expenses.items():
            match seen.outcome:
                case _Passed(version, category, amount, markup):
                    key = item_key(ItemKind.EXPENSE, expense_id)
                    bucket = categories.setdefault(
                        (version, category.casefold(), markup), _ExpenseGroup(Decimal(0), category)
                    )
                    bucket.amount += amount
                    bucket.spelling = min(bucket.spelling, category)
                    bucket.keys.append(key)
                    share = Money(amount=amount, currency=currency) * (1 + markup / 100)
                    bucket.items.append(
                        BilledItem(
                            key=key,
                            kind=ItemKind.EXPENSE,
                            net=share.rounded(),
                            version=version,
                        )
                    )
                    billed_expenses.append(expense_id)
                case _Withheld():
                    withheld.append(expense_id)
                case _Rejected(reason):
                    rejected.append(
                        RejectedEntry(entry_id=expense_id, kind="expense", reason=reason)
                    )
        expense_lines = [
            self._expense_line(version, markup, categories[(version, key, markup)])
            for version, key, markup in sorted(categories)
        ]
        lines += expense_lines
        billed_items = [item for _, item in items]
        billed_items += [i for key in sorted(categories) for i in categories[key].items]

        # The contract's cap: over all time and materials and expenses, after the lines' caps.
        counted = sum_money(
            [
                Money(amount=sum(time_net.values(), Decimal(0)), currency=currency),
                *(ln.net for ln in expense_lines),
            ],
            currency,
        )
        if cap_terms.not_to_exceed is not None:
            room = _room(cap_terms.not_to_exceed, billed_before.under_cap)
            if counted > room:
                cut = counted - room
                lines.append(self._cap_line(cap_terms.not_to_exceed, cut, cap_terms.version))
                held.append(HeldOverage(cap="contract", amount=cut))
                counted = room

        return RatedPeriod(
            period=self._period,
            currency=currency,
            project_id=contract.project_id,
            legal_entity_code=contract.legal_entity_code,
            po_number=contract.po_number,
            lines=lines,
            billed_time_entry_ids=sorted(billed_time),
            covered_time_entry_ids=sorted(covered),
            line_entries=line_entries,
            billed_expense_ids=sorted(billed_expenses),
            non_billable_expense_ids=sorted(withheld),
            billed_milestone_ids=sorted(
                i.key.split(":", 1)[1] for i in billed_items if i.kind is ItemKind.MILESTONE
            ),
            billed_items=sorted(billed_items, key=lambda i: i.key),
            time_net=time_net,
            under_cap=counted.amount,
            rejected=sorted(rejected, key=lambda r: (r.kind, r.entry_id)),
            overage=sum_money((h.amount for h in held), currency),
            held=held,
            effort=self._effort(effort),
            hours=hours,
            covered_hours=covered_hours,
            non_billable_hours=non_billable_hours,
        )

    # -- fees and milestones ------------------------------------------------------------------

    def _items(self) -> list[tuple[InvoiceLine, BilledItem]]:
        """Completion shares and milestones whose task is done, instalments due: each once."""
        contract, end = self._contract.contract, self._period.end
        out: list[tuple[InvoiceLine, BilledItem]] = []
        seen: set[str] = set()

        def bill(
            key: str, kind: ItemKind, version: ContractVersion, line: ContractLine, amount: Money
        ) -> None:
            if key in self._billed or key in seen or amount.is_zero():
                return
            seen.add(key)
            invoice_line = self._item_line(key, kind, version, line, amount)
            out.append(
                (
                    invoice_line,
                    BilledItem(
                        key=key,
                        kind=kind,
                        line_id=line.id,
                        net=invoice_line.net,
                        version=version.version,
                    ),
                )
            )

        for line_id in _line_ids(contract):
            # Done: the version in force on the day the task was done decides what it earns.
            progress = self._contract.progress_of(_any_line(contract, line_id))
            if progress is not None and progress.done_on is not None and progress.done_on <= end:
                version = contract.in_force(progress.done_on)
                line = version.line(line_id)
                if line is not None and line.billing_type is BillingType.FIXED_FEE:
                    if line.fee_schedule.remainder is FeeRemainder.ON_COMPLETION:
                        key = item_key(ItemKind.COMPLETION, line.id)
                        bill(key, ItemKind.COMPLETION, version, line, version.remainder(line))
                elif line is not None and line.billing_type is BillingType.MILESTONE:
                    for m in version.milestones_of(line.id):
                        key = item_key(ItemKind.MILESTONE, m.id)
                        bill(key, ItemKind.MILESTONE, version, line, m.amount)
            # Due: an instalment is billed under the version in force on its due date.
            for version in contract.versions:
                line = version.line(line_id)
                if line is None:
                    continue
                for due in version.instalments(line):
                    if due.due <= end and contract.in_force(due.due).version == version.version:
                        key = item_key(ItemKind.INSTALMENT, line.id, due.number)
                        bill(key, ItemKind.INSTALMENT, version, line, due.amount)
        return out

    # -- lines: descriptions a customer reads; ids stable across runs for idempotent writes --

    def _time_line(
        self, version: int, task_id: str, role: str, rate: Decimal, group: _TimeGroup
    ) -> InvoiceLine:
        currency = self._contract.currency
        task = self._tasks[task_id]
        return InvoiceLine(
            id=f"time:{task_id}:{role}:{rate}{_versioned(version)}",
            description=f"{task.name} — {role} ({_plain(group.hours)} h at {rate} {currency})",
            quantity=group.hours,
            unit_price=Money(amount=rate, currency=currency),
            tax_rate=self._contract.tax_rate,
            contract_version=version,
        )

    def _item_line(
        self,
        key: str,
        kind: ItemKind,
        version: ContractVersion,
        line: ContractLine,
        amount: Money,
    ) -> InvoiceLine:
        return InvoiceLine(
            id=key,
            description=_item_description(key, kind, version, line),
            quantity=Decimal(1),
            unit_price=amount,
            tax_rate=self._contract.tax_rate,
            source_ids=[key],
            contract_version=version.version,
            **_revenue_span(version),
        )

    def _expense_line(self, version: int, markup: Decimal, group: _ExpenseGroup) -> InvoiceLine:
        price = Money(amount=group.amount, currency=self._contract.currency)
        count = len(group.keys)
        detail = f"{count}, {_plain(markup)} % markup" if markup else f"{count}"
        label = group.spelling[:1].upper() + group.spelling[1:]
        return InvoiceLine(
            id=f"expense:{group.spelling.casefold()}{_versioned(version)}",
            description=f"{label} expenses ({detail})",
            quantity=Decimal(1),
            unit_price=(price * (1 + markup / 100)).rounded(),
            tax_rate=self._contract.tax_rate,
            source_ids=sorted(group.keys),
            contract_version=version,
        )

    def _line_cap_line(self, line_id: str, cap: Money, cut: Money, version: int) -> InvoiceLine:
        sold = self._contract.contract.in_force(self._period.end).line(line_id)
        task = sold.task if sold is not None else line_id
        return InvoiceLine(
            id=f"cap:{line_id}",
            description=f"{CAP_DESCRIPTION}: {task} (cap {cap.rounded()})",
            quantity=Decimal(1),
            unit_price=-cut,
            tax_rate=self._contract.tax_rate,
            contract_version=version,
        )

    def _cap_line(self, cap: Money, cut: Money, version: int) -> InvoiceLine:
        return InvoiceLine(
            id="cap",
            description=f"{CAP_DESCRIPTION} (cap {cap.rounded()})",
            quantity=Decimal(1),
            unit_price=-cut,
            tax_rate=self._contract.tax_rate,
            contract_version=version,
        )

    def _effort(self, hours: dict[str, Decimal]) -> list[LineEffort]:
        current = self._contract.contract.in_force(self._period.end)
        out: list[LineEffort] = []
        for line_id in sorted(hours):
            line = current.line(line_id) or _any_line(self._contract.contract, line_id)
            out.append(
                LineEffort(
                    line_id=line_id,
                    task=line.task,
                    billing_type=line.billing_type,
                    hours=hours[line_id],
                    sold_hours=line.hours,
                )
            )
        return out


def rate_upfront(contract: BillingContract, on: date | None = None) -> RatedPeriod:
    """The provisioning invoice: each fixed fee's upfront share not billed yet, under the
    current version. ``on`` dates it (the period it is filed under); default the version's
    effective date. Period runs never bill an upfront share."""
    version = contract.contract.current
    period = BillingPeriod.of(on or version.effective_from)
    billed = set(contract.billed.items)
    lines: list[InvoiceLine] = []
    items: list[BilledItem] = []
    for line in version.lines:
        share = version.upfront(line)
        key = item_key(ItemKind.UPFRONT, line.id)
        if share.is_zero() or key in billed:
            continue
        invoice_line = InvoiceLine(
            id=key,
            description=_item_description(key, ItemKind.UPFRONT, version, line),
            quantity=Decimal(1),
            unit_price=share,
            tax_rate=contract.tax_rate,
            source_ids=[key],
            contract_version=version.version,
            **_revenue_span(version),
        )
        lines.append(invoice_line)
        items.append(
            BilledItem(
                key=key,
                kind=ItemKind.UPFRONT,
                line_id=line.id,
                net=invoice_line.net,
                version=version.version,
            )
        )
    return RatedPeriod(
        period=period,
        currency=contract.currency,
        kind="upfront",
        project_id=contract.project_id,
        legal_entity_code=contract.legal_entity_code,
        po_number=contract.po_number,
        lines=lines,
        billed_items=items,
        overage=Money.zero(contract.currency),
    )


def _item_description(
    key: str, kind: ItemKind, version: ContractVersion, line: ContractLine
) -> str:
    schedule = line.fee_schedule
    share = _plain(schedule.upfront_percent)
    match kind:
        case ItemKind.UPFRONT:
            return f"{line.task} — fixed fee, {share} % up front"
        case ItemKind.COMPLETION:
            rest = f" (the {_plain(100 - schedule.upfront_percent)} % remaining)"
            return (
                f"{line.task} — fixed fee on completion{rest if schedule.upfront_percent else ''}"
            )
        case ItemKind.INSTALMENT:
            number = int(key.rsplit(":", 1)[1])
            count = len(version.instalments(line))
            return f"{line.task} — fixed fee, instalment {number} of {count}"
        case ItemKind.MILESTONE:
            ident = key.split(":", 1)[1]
            name = next((m.name for m in version.milestones if m.id == ident), ident)
            return f"Milestone: {name} ({line.task})"
    return f"{line.task} — {kind.value}"


def _revenue_span(version: ContractVersion) -> dict[str, date | None]:
    """A fee is earned over the delivery period; without an end date, as it is invoiced."""
    if version.end_date is None:
        return {"revenue_from": None, "revenue_to": None}
    return {"revenue_from": version.start_date, "revenue_to": version.end_date}


def _line_ids(contract: Contract) -> list[str]:
    """Every line id of every version, in the order lines first appear."""
    return list(dict.fromkeys(ln.id for v in contract.versions for ln in v.lines))


def _any_line(contract: Contract, line_id: str) -> ContractLine:
    return next(ln for v in reversed(contract.versions) for ln in v.lines if ln.id == line_id)


def _room(cap: Money, before: Decimal) -> Money:
    """What is left under a cap, rounded down to the minor unit: billing never exceeds it."""
    left = max(cap.amount - before, Decimal(0))
    quantum = Decimal(1).scaleb(-minor_unit(cap.currency))
    return Money(amount=left.quantize(quantum, rounding=ROUND_FLOOR), currency=cap.currency)


def _versioned(version: int) -> str:
    """Line ids of version 1 keep their pre-contract spelling; later versions say theirs."""
    return "" if version == 1 else f":v{version}"


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
