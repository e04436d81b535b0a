"""A change order's impact: validated, applied as the next contract version, previewed, undone.

Finance approves a preview of the exact changes and exactly that preview is applied, so the
preview is a value with a digest: the workflow recomputes it before applying and, if the
digest moved (the change order was edited, an invoice was issued, the PSA drifted), goes back
for approval.

Decisions worth knowing:

- **One builder.** `change_problems`, `apply_change`, `preview_change` and `invert_change`
  all make the next version with the same code, so what is checked is what is applied.
  Lines and milestones keep the order they had; added ones follow, sorted by id, so the
  order the CRM lists changes in does not change the version.
- **Money from the change is spelt canonically** (180 and 180.00 are one rate), and the
  digest reads decimals by value, so equal previews have equal digests on any machine.
- **Budget.** A version's ``budget`` is None while it equals the value; a change's budget
  delta moves the budget, its amount delta the value, independently.
- **Issued invoices are never edited.** A retroactive change re-rates each issued period
  under the new terms from the entries it billed. When any line differs (by content: the
  same hours at the same rate under another version number is no difference), the invoice
  is credited whole and the period re-billed whole at the new terms (cancel and replace:
  one invoice is left to pay). So the period's net after the correction is exactly what
  the new terms rate, for time: hours x new rate. An upfront invoice is not corrected.
- **Billing plan.** Fees and milestones are valued as the rating engine would bill them
  (`canonical.rating`): a completion share under the version in force on the day its task
  was done (the latest while it is open), an instalment under the version in force on its
  due date. Items already invoiced are billed once and never again, so the plan shows what
  is still to bill; an item already invoiced that the change touches is listed in
  ``notes`` (and, removed, is a risk).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from canonical._base import CanonicalModel, NonEmpty
from canonical.billing import InvoiceLine
from canonical.change_order import ChangeAction, ChangeOrder, LineChange, MilestoneChange
from canonical.commercial import BillingType, FeeRemainder
from canonical.contract import (
    Contract,
    ContractLine,
    ContractMilestone,
    ContractVersion,
    ItemKind,
    item_key,
)
from canonical.delivery import Expense, Task, TimeEntry
from canonical.money import Money, minor_unit, sum_money
from canonical.rating import (
    BillingContract,
    RatedPeriod,
    billed_so_far,
    cap_problems,
    rate_period,
)

__all__ = [
    "BudgetChange",
    "ChangePolicy",
    "Correction",
    "DraftRerate",
    "ImpactPreview",
    "InvalidChange",
    "IssuedInvoice",
    "PendingDraft",
    "PsaProject",
    "TaskChange",
    "TermChange",
    "apply_change",
    "canonical_json",
    "change_problems",
    "change_risks",
    "contract_terms",
    "invert_change",
    "preview_change",
    "version_changes",
]


class InvalidChange(ValueError):
    """A change order that cannot apply to its contract; ``problems`` name the fields."""

    def __init__(self, key: str, problems: list[str]) -> None:
        self.key = key
        self.problems = problems
        super().__init__(f"change order {key} cannot apply: " + "; ".join(problems))


# -- inputs the activities load -------------------------------------------------------------


class PsaProject(CanonicalModel):
    """The PSA project as it is: its budget and tasks (id, name, rate, planned hours)."""

    budget: Money | None = None
    tasks: list[Task] = Field(default_factory=list)


class PendingDraft(CanonicalModel):
    """A draft awaiting approval, with the entries of its period, to re-rate it."""

    draft_id: NonEmpty
    rated: RatedPeriod
    entries: list[TimeEntry] = Field(default_factory=list)
    expenses: list[Expense] = Field(default_factory=list)


class IssuedInvoice(CanonicalModel):
    """An issued invoice: what it billed, and (for a retroactive change) the time entries
    and expenses it billed, so its period can be re-rated under the new terms."""

    number: NonEmpty
    invoice_id: str | None = None
    rated: RatedPeriod
    entries: list[TimeEntry] = Field(default_factory=list)
    expenses: list[Expense] = Field(default_factory=list)


# -- the preview ------------------------------------------------------------------------------


class TermChange(CanonicalModel):
    """One term before and after: ``subject`` (what), ``field``, values as people read them,
    and ``unit`` (the currency, "h", "%") when both sides share it."""

    subject: NonEmpty
    field: NonEmpty
    before: str | None = None  # None: it did not exist / was not set
    after: str | None = None
    unit: str | None = None
    key: str | None = None  # a billing plan item's key (`item_key`)

    def render(self, effective: date | None = None) -> str:
        unit = f" {self.unit}" if self.unit else ""
        since = f" from {effective.isoformat()}" if effective else ""
        return (
            f"{self.subject} {self.field}: {self.before or '—'} → {self.after or '—'}{unit}{since}"
        )


class TaskChange(CanonicalModel):
    """A PSA task added, closed or changed (rate, planned hours, name, billing type)."""

    #: "reopen": a line sold again whose task the PSA still has (closed when it was removed).
    action: Literal["add", "close", "reopen", "change"]
    line_id: NonEmpty
    task_id: str | None = None  # None for a task still to create
    name: NonEmpty
    changes: list[TermChange] = Field(default_factory=list)


class BudgetChange(CanonicalModel):
    before: Money | None  # as the PSA holds it; None when it holds none
    after: Money


class DraftRerate(CanonicalModel):
    """A draft awaiting approval that the new terms re-rate."""

    draft_id: NonEmpty
    period: NonEmpty
    subtotal_before: Money
    subtotal_after: Money
    total_before: Money
    total_after: Money


class Correction(CanonicalModel):
    """An issued invoice corrected: credited whole, and its period re-billed whole at the new
    terms. The invoice itself is never edited."""

    invoice_number: NonEmpty
    invoice_id: str | None = None
    period: NonEmpty
    credit_lines: list[InvoiceLine]  # the original's lines, credited as they were
    rebill_lines: list[InvoiceLine]
    credit_net: Money
    credit_total: Money  # with tax
    rebill_net: Money
    rebill_total: Money
    net_before: Money  # the period's net as invoiced
    net_after: Money  # after the credit note and the re-bill: what the new terms rate
    #: The period as the new terms rate it: what the invoice bills once corrected (its
    #: entries, items and amounts toward caps), kept with it for later periods.
    rerated: RatedPeriod


class ImpactPreview(CanonicalModel):
    """Every downstream change a change order makes, before and after, with a digest.

    ``digest`` is computed from the rest when omitted and checked when given, so a preview
    read back from a payload or the store is known to be the one approved. (``model_copy``
    does not validate: make a new preview rather than copy one with updates.)
    """

    format: Literal[1] = 1  # how the digest reads the content; a new form, a new number
    change_order: NonEmpty  # its key, `<crm>:<id>`
    contract_id: NonEmpty
    currency: NonEmpty
    effective_from: date
    retroactive: bool
    version_before: int
    after: ContractVersion  # exactly the version that is stored
    contract: list[TermChange] = Field(default_factory=list)
    budget_before: Money  # the contract's budget
    budget_after: Money
    tax_rate: Decimal | None = None  # an override the change order asks for
    psa_budget: BudgetChange | None = None
    tasks: list[TaskChange] = Field(default_factory=list)
    billing_plan: list[TermChange] = Field(default_factory=list)
    drafts: list[DraftRerate] = Field(default_factory=list)
    corrections: list[Correction] = Field(default_factory=list)
    #: Milestones already invoiced that the change removes (their ids).
    removed_invoiced_milestones: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    digest: str = ""

    @model_validator(mode="after")
    def _digest(self) -> Self:
        computed = self.content_digest()
        if not self.digest:
            # Frozen: the digest is part of the value, set once while it is being built.
            object.__setattr__(self, "digest", computed)
        elif self.digest != computed:
            raise ValueError(f"digest {self.digest} does not match the preview ({computed})")
        return self

    def content_digest(self) -> str:
        content = self.model_dump(exclude={"digest"})
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()

    def render(self) -> list[str]:
        """The diff as people read it, one change a line; the CLI prints it."""
        eff = self.effective_from
        out = [
            f"Change order {self.change_order} on {self.contract_id}: version "
            f"{self.version_before} → {self.after.version}, effective {eff.isoformat()}"
            + (" (retroactive)" if self.retroactive else "")
        ]
        out += [c.render(eff) for c in self.contract]
        if self.psa_budget is not None:
            before = self.psa_budget.before
            out.append(
                f"PSA budget: {before.amount if before else '—'} → "
                f"{self.psa_budget.after.amount} {self.currency}"
            )
        for task in self.tasks:
            name = f"PSA task {task.name}"
            if task.action == "add":
                out.append(f"{name}: created")
            elif task.action == "close":
                out.append(f"{name}: closed from {eff.isoformat()}")
            elif task.action == "reopen":
                out.append(f"{name}: reopened from {eff.isoformat()}")
            out += [c.render(eff) for c in task.changes]
        out += [f"Billing plan: {c.render()}" for c in self.billing_plan]
        for d in self.drafts:
            out.append(
                f"Draft {d.draft_id} ({d.period}) re-rated: total {d.total_before.amount} → "
                f"{d.total_after.amount} {self.currency}"
            )
        for c in self.corrections:
            out.append(
                f"Invoice {c.invoice_number} ({c.period}): credit note {c.credit_total.amount}, "
                f"re-bill {c.rebill_total.amount} {self.currency} (net {c.net_before.amount} → "
                f"{c.net_after.amount})"
            )
        out += [f"Note: {n}" for n in self.notes]
        return out


class ChangePolicy(CanonicalModel):
    """When a change order needs finance, and who may decide."""

    #: A budget increase above this (in the contract's currency) needs finance.
    budget_threshold: Decimal = Field(default=Decimal("10000"), ge=0)
    #: Per currency, where the default amount is wrong for it (e.g. JPY).
    thresholds: dict[str, Decimal] = Field(default_factory=dict)
    approvers: list[NonEmpty] = Field(min_length=1)
    remind_after: timedelta = timedelta(hours=24)
    expire_after: timedelta = timedelta(days=7)

    def threshold(self, currency: str) -> Decimal:
        return self.thresholds.get(currency, self.budget_threshold)

    def may_decide(self, approver: str) -> bool:
        return approver.strip().lower() in {a.lower() for a in self.approvers}


# -- canonical JSON -----------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces, decimals by value ("160" and "160.00" alike), dates
    in ISO form and times in UTC: the same content gives the same text on any machine."""
    return json.dumps(_plain_data(value), sort_keys=True, separators=(",", ":"))


def _plain_data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain_data(value.model_dump())
    if isinstance(value, dict):
        return {str(k): _plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_data(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, Decimal):
        return "0" if value == 0 else format(value.normalize(), "f")
    if isinstance(value, Enum):
        return _plain_data(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} has no canonical form")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value.total_seconds())
    raise TypeError(f"no canonical JSON for {type(value).__name__}")


# -- the next version -----------------------------------------------------------------------


def _spelt(money: Money | None) -> Money | None:
    """One spelling per value: at least the currency's minor digits, no trailing zeros
    beyond them (180 and 180.00 are one rate; 162.125 keeps its digits)."""
    if money is None:
        return None
    places = minor_unit(money.currency)
    normal = money.amount.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -places:
        normal = normal.quantize(Decimal(1).scaleb(-places))
    return Money(amount=normal, currency=money.currency)


def _changed_line(line: ContractLine, change: LineChange) -> ContractLine:
    update: dict[str, Any] = {}
    for name in ("task", "role", "billing_type", "hours", "schedule"):
        value = getattr(change, name)
        if value is not None:
            update[name] = value
    for name in ("rate", "amount", "not_to_exceed"):
        value = getattr(change, name)
        if value is not None:
            update[name] = _spelt(value)
    for name in change.unset:
        update[name] = None
    kind = update.get("billing_type", line.billing_type)
    if kind is not BillingType.TIME_AND_MATERIALS:
        update["rate"] = None
        update["not_to_exceed"] = None
    if kind is not BillingType.FIXED_FEE:
        update["schedule"] = None
    new = line.model_copy(update=update)
    repriced = change.rate is not None or change.hours is not None
    if (
        change.amount is None
        and repriced
        and kind is BillingType.TIME_AND_MATERIALS
        and new.rate is not None
        and new.hours is not None
    ):
        new = new.model_copy(update={"amount": _spelt((new.rate * new.hours).rounded())})
    return new


def _added_line(change: LineChange, currency: str) -> ContractLine:
    kind = change.billing_type
    amount = change.amount
    hourly = kind is BillingType.TIME_AND_MATERIALS
    if amount is None and hourly and change.rate is not None and change.hours is not None:
        amount = (change.rate * change.hours).rounded()
    # Unvalidated, like the version it joins: `change_problems` reports what is missing.
    fields: dict[str, Any] = {
        "id": change.line_id,
        "task": change.task,
        "task_id": change.task_id,
        "role": change.role,
        "billing_type": kind,
        "rate": _spelt(change.rate) if hourly else None,
        "hours": change.hours,
        "amount": _spelt(amount) if amount is not None else Money.zero(currency),
        "schedule": change.schedule if kind is BillingType.FIXED_FEE else None,
        "not_to_exceed": _spelt(change.not_to_exceed) if hourly else None,
    }
    return ContractLine.model_construct(**fields)


def _changed_milestone(m: ContractMilestone, change: MilestoneChange) -> ContractMilestone:
    update: dict[str, Any] = {}
    for name in ("line_id", "name", "planned_date"):
        value = getattr(change, name)
        if value is not None:
            update[name] = value
    if change.amount is not None:
        update["amount"] = _spelt(change.amount)
    for name in change.unset:
        update[name] = None
    return m.model_copy(update=update)


def _added_milestone(change: MilestoneChange) -> ContractMilestone:
    fields: dict[str, Any] = {
        "id": change.milestone_id,
        "name": change.name,
        "amount": _spelt(change.amount),
        "line_id": change.line_id,
        "planned_date": change.planned_date,
    }
    return ContractMilestone.model_construct(**fields)


def _next(before: ContractVersion, change: ChangeOrder) -> ContractVersion:
    """The next version, unvalidated (`ContractVersion.problems` answers on it)."""
    line_changes = {c.line_id: c for c in change.lines}
    lines: list[ContractLine] = []
    for line in before.lines:
        found = line_changes.get(line.id)
        if found is None or found.action is ChangeAction.ADD:
            lines.append(line)
        elif found.action is ChangeAction.CHANGE:
            lines.append(_changed_line(line, found))
    known = {ln.id for ln in before.lines}
    lines += [
        _added_line(c, before.currency)
        for c in sorted(change.lines, key=lambda c: c.line_id)
        if c.action is ChangeAction.ADD and c.line_id not in known
    ]
    ms_changes = {c.milestone_id: c for c in change.milestones}
    milestones: list[ContractMilestone] = []
    for m in before.milestones:
        found_m = ms_changes.get(m.id)
        if found_m is None or found_m.action is ChangeAction.ADD:
            milestones.append(m)
        elif found_m.action is ChangeAction.CHANGE:
            milestones.append(_changed_milestone(m, found_m))
    known_ms = {m.id for m in before.milestones}
    milestones += [
        _added_milestone(c)
        for c in sorted(change.milestones, key=lambda c: c.milestone_id)
        if c.action is ChangeAction.ADD and c.milestone_id not in known_ms
    ]
    currency = before.currency
    value = before.value
    if change.currency == currency:
        value = _spelt(before.value + change.amount_delta) or value
    budget = before.project_budget
    if change.budget_delta is not None and change.budget_delta.currency == currency:
        budget = _spelt(budget + change.budget_delta) or budget
    end_date = None if "end_date" in change.unset else change.new_end_date or before.end_date
    cap = (
        None
        if "not_to_exceed" in change.unset
        else _spelt(change.not_to_exceed) or before.not_to_exceed
    )
    return before.model_copy(
        update={
            "version": before.version + 1,
            "effective_from": change.effective_date,
            "source": f"change-order:{change.crm}:{change.id}",
            "end_date": end_date,
            "lines": lines,
            "milestones": milestones,
            "not_to_exceed": cap,
            "value": value,
            "budget": None if budget == value else budget,
        }
    )


def _invoiced_through(issued: Iterable[RatedPeriod]) -> date | None:
    ends = [p.period.end for p in issued if p.kind == "period"]
    return max(ends) if ends else None


def change_problems(
    change: ChangeOrder, contract: Contract, *, issued: Iterable[RatedPeriod] = ()
) -> list[str]:
    """Why ``change`` cannot apply to ``contract``, each naming its field: the change
    order's (``lines[1].line_id: ...``) or, for terms broken after it, the contract's
    (``contract.lines[5].milestones: ...``). ``issued``: what the issued invoices billed."""
    issued = list(issued)
    current = contract.current
    issues: list[str] = []
    if change.currency != current.currency:
        issues.append(
            f"currency: the change order is in {change.currency}, the contract in "
            f"{current.currency}"
        )
        return issues
    if change.effective_date < current.effective_from:
        issues.append(
            f"effective_date: {change.effective_date} is before version {current.version} "
            f"of the contract, in force from {current.effective_from}"
        )
    through = _invoiced_through(issued)
    if through is not None and change.effective_date <= through and not change.retroactive:
        issues.append(
            f"effective_date: {change.effective_date} is in a period already invoiced "
            f"(through {through}); only a retroactive change may reach back"
        )
    issues += _line_problems(change, current)
    issues += _milestone_problems(change, current)
    if issues:
        return issues
    after = _next(current, change)
    if after.value.amount < 0:
        issues.append(f"amount_delta: the contract value would be {after.value}")
    if after.project_budget.amount < 0:
        issues.append(f"budget_delta: the budget would be {after.project_budget}")
    if after.end_date is not None and change.effective_date > after.end_date:
        issues.append(
            f"effective_date: {change.effective_date} is after the contract's end date "
            f"{after.end_date}"
        )
    issues += [f"contract.{p}" for p in after.problems()]
    issues += [f"contract.{p}" for p in cap_problems(after, billed_so_far(issued))]
    return issues


def _line_problems(change: ChangeOrder, current: ContractVersion) -> list[str]:
    issues: list[str] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(change.lines):
        where = f"lines[{i}]"
        if c.line_id in seen:
            issues.append(f"{where}.line_id: {c.line_id!r} is also lines[{seen[c.line_id]}]'s")
            continue
        seen[c.line_id] = i
        exists = current.line(c.line_id) is not None
        if c.action is ChangeAction.ADD:
            if exists:
                issues.append(f"{where}.line_id: line {c.line_id!r} is already in the contract")
            if c.task is None:
                issues.append(f"{where}.task: an added line needs its task")
            if c.billing_type is None:
                issues.append(f"{where}.billing_type: an added line needs its billing type")
            elif c.billing_type is BillingType.TIME_AND_MATERIALS and c.rate is None:
                issues.append(f"{where}.rate: an added time-and-materials line needs a rate")
            elif c.billing_type is not BillingType.TIME_AND_MATERIALS and c.amount is None:
                issues.append(
                    f"{where}.amount: an added {c.billing_type.value} line needs an amount"
                )
        elif not exists:
            issues.append(f"{where}.line_id: no line {c.line_id!r} in the contract")
        if (
            c.action is not ChangeAction.REMOVE
            and c.rate is not None
            and (
                (c.billing_type or (ln.billing_type if (ln := current.line(c.line_id)) else None))
                not in (BillingType.TIME_AND_MATERIALS, None)
            )
        ):
            issues.append(f"{where}.rate: only time-and-materials lines have a rate")
    return issues


def _milestone_problems(change: ChangeOrder, current: ContractVersion) -> list[str]:
    issues: list[str] = []
    seen: dict[str, int] = {}
    known = {m.id for m in current.milestones}
    for i, c in enumerate(change.milestones):
        where = f"milestones[{i}]"
        if c.milestone_id in seen:
            issues.append(
                f"{where}.milestone_id: {c.milestone_id!r} is also "
                f"milestones[{seen[c.milestone_id]}]'s"
            )
            continue
        seen[c.milestone_id] = i
        if c.action is ChangeAction.ADD:
            if c.milestone_id in known:
                issues.append(
                    f"{where}.milestone_id: milestone {c.milestone_id!r} is already in the contract"
                )
            for name in ("line_id", "name", "amount"):
                if getattr(c, name) is None:
                    issues.append(f"{where}.{name}: an added milestone needs its {name}")
        elif c.milestone_id not in known:
            issues.append(f"{where}.milestone_id: no milestone {c.milestone_id!r} in the contract")
    return issues


def apply_change(
    contract: Contract, change: ChangeOrder, *, issued: Iterable[RatedPeriod] = ()
) -> ContractVersion:
    """The contract's next version: deterministic, the same change on the same contract
    gives an equal version. Raises `InvalidChange` with every problem."""
    issued = list(issued)
    problems = change_problems(change, contract, issued=issued)
    if problems:
        raise InvalidChange(change.key, problems)
    return ContractVersion.model_validate(_next(contract.current, change).model_dump())


def contract_terms(version: ContractVersion) -> dict[str, Any]:
    """What a version agrees, without which version it is, since when, or what made it;
    lines and milestones by id (their order is not a term)."""
    data = version.model_dump(exclude={"version", "effective_from", "source", "budget"})
    data["budget"] = version.project_budget
    data["lines"] = sorted(data["lines"], key=lambda ln: ln["id"])
    data["milestones"] = sorted(data["milestones"], key=lambda m: m["id"])
    return json.loads(canonical_json(data))  # type: ignore[no-any-return]


def version_changes(before: ContractVersion, after: ContractVersion) -> list[TermChange]:
    """What one contract version changed from the one before, term by term: the lines the
    preview lists under "contract", so a version's history reads as its change was approved."""
    return _contract_changes(before, after)


# -- the inverse ------------------------------------------------------------------------------

_LINE_FIELDS = (
    "task",
    "role",
    "billing_type",
    "rate",
    "amount",
    "hours",
    "schedule",
    "not_to_exceed",
)
_CLEARABLE: tuple[Literal["role", "hours", "schedule", "not_to_exceed"], ...] = (
    "role",
    "hours",
    "schedule",
    "not_to_exceed",
)


def invert_change(before: ContractVersion, change: ChangeOrder) -> ChangeOrder:
    """The change order that undoes ``change`` on ``before``: applied after it (same
    effective date), it gives back ``before``'s terms (`contract_terms`)."""
    after = apply_change(Contract(versions=[before]), change)
    currency = before.currency
    lines: list[LineChange] = []
    after_lines = {ln.id: ln for ln in after.lines}
    before_lines = {ln.id: ln for ln in before.lines}
    for line in after.lines:
        if line.id not in before_lines:
            lines.append(LineChange(action=ChangeAction.REMOVE, line_id=line.id))
    for line in before.lines:
        was = after_lines.get(line.id)
        values = {name: getattr(line, name) for name in _LINE_FIELDS}
        cleared = [name for name in _CLEARABLE if getattr(line, name) is None]
        if was is None:
            lines.append(
                LineChange(action=ChangeAction.ADD, line_id=line.id, task_id=line.task_id, **values)
            )
        elif was != line:
            lines.append(
                LineChange(action=ChangeAction.CHANGE, line_id=line.id, unset=cleared, **values)
            )
    milestones: list[MilestoneChange] = []
    after_ms = {m.id: m for m in after.milestones}
    before_ms = {m.id for m in before.milestones}
    for m in after.milestones:
        if m.id not in before_ms:
            milestones.append(MilestoneChange(action=ChangeAction.REMOVE, milestone_id=m.id))
    for m in before.milestones:
        values_m = {
            "line_id": m.line_id,
            "name": m.name,
            "amount": m.amount,
            "planned_date": m.planned_date,
        }
        was_m = after_ms.get(m.id)
        if was_m is None:
            milestones.append(
                MilestoneChange(action=ChangeAction.ADD, milestone_id=m.id, **values_m)
            )
        elif was_m != m:
            milestones.append(
                MilestoneChange(
                    action=ChangeAction.CHANGE,
                    milestone_id=m.id,
                    unset=["planned_date"] if m.planned_date is None else [],
                    **values_m,
                )
            )
    unset: list[Literal["end_date", "not_to_exceed"]] = []
    if before.end_date is None and after.end_date is not None:
        unset.append("end_date")
    if before.not_to_exceed is None and after.not_to_exceed is not None:
        unset.append("not_to_exceed")
    budget_delta = before.project_budget - after.project_budget
    return ChangeOrder(
        id=f"{change.id}-undo",
        crm=change.crm,
        opportunity_id=change.opportunity_id,
        name=f"Undo {change.name}",
        status=change.status,
        currency=currency,
        effective_date=change.effective_date,
        amount_delta=before.value - after.value,
        lines=lines,
        milestones=milestones,
        budget_delta=None if budget_delta.is_zero() else budget_delta,
        new_end_date=before.end_date if before.end_date != after.end_date else None,
        not_to_exceed=(
            before.not_to_exceed if before.not_to_exceed != after.not_to_exceed else None
        ),
        unset=unset,
        retroactive=change.retroactive,
        approved_at=change.approved_at,
        description=f"Undoes change order {change.key}",
    )


# -- the preview ------------------------------------------------------------------------------


def _amount(money: Money | None) -> str | None:
    return None if money is None else str(money.rounded().amount)


def _num(number: Decimal | None) -> str | None:
    return None if number is None else format(number.normalize(), "f")


def _schedule(line: ContractLine) -> str | None:
    if line.billing_type is not BillingType.FIXED_FEE:
        return None
    s = line.fee_schedule
    rest = s.remainder.value
    if s.remainder is FeeRemainder.INSTALMENTS:
        rest += f" ({s.instalments})" if s.instalments else " (monthly over the term)"
    return f"{_num(s.upfront_percent)} % up front, rest {rest}"


def _line_terms(line: ContractLine) -> list[tuple[str, str | None, str | None]]:
    """(field, value, unit) as people read them."""
    currency = line.amount.currency
    return [
        ("task", line.task, None),
        ("role", line.role, None),
        ("billing type", line.billing_type.value, None),
        ("rate", _amount(line.rate), currency),
        ("hours", _num(line.hours), "h"),
        ("amount", _amount(line.amount), currency),
        ("fee schedule", _schedule(line), None),
        ("cap", _amount(line.not_to_exceed), currency),
    ]


def _label(line: ContractLine) -> str:
    return line.task


def _diff_terms(
    subject: str,
    before: list[tuple[str, str | None, str | None]],
    after: list[tuple[str, str | None, str | None]],
) -> list[TermChange]:
    out: list[TermChange] = []
    for (name, old, unit), (_, new, _) in zip(before, after, strict=True):
        if old != new:
            out.append(TermChange(subject=subject, field=name, before=old, after=new, unit=unit))
    return out


def _contract_changes(before: ContractVersion, after: ContractVersion) -> list[TermChange]:
    currency = before.currency
    out: list[TermChange] = []
    after_lines = {ln.id: ln for ln in after.lines}
    before_lines = {ln.id: ln for ln in before.lines}
    for line in sorted(before.lines, key=lambda ln: ln.id):
        new = after_lines.get(line.id)
        if new is None:
            out.append(
                TermChange(subject=_label(line), field="line", before=line.billing_type.value)
            )
        else:
            out += _diff_terms(_label(line), _line_terms(line), _line_terms(new))
    for line in sorted(after.lines, key=lambda ln: ln.id):
        if line.id not in before_lines:
            out.append(
                TermChange(subject=_label(line), field="line", after=line.billing_type.value)
            )
            out += _diff_terms(
                _label(line), [(n, None, u) for n, _, u in _line_terms(line)], _line_terms(line)
            )
    after_ms = {m.id: m for m in after.milestones}
    before_ms = {m.id: m for m in before.milestones}

    def ms_terms(m: ContractMilestone | None) -> list[tuple[str, str | None, str | None]]:
        if m is None:
            empty: list[tuple[str, str | None, str | None]] = [
                ("name", None, None),
                ("line", None, None),
                ("amount", None, currency),
                ("planned date", None, None),
            ]
            return empty
        owner = after.line(m.line_id) or before.line(m.line_id)
        return [
            ("name", m.name, None),
            ("line", owner.task if owner else m.line_id, None),
            ("amount", _amount(m.amount), currency),
            ("planned date", m.planned_date.isoformat() if m.planned_date else None, None),
        ]

    for ident in sorted(set(after_ms) | set(before_ms)):
        old_m, new_m = before_ms.get(ident), after_ms.get(ident)
        either = new_m or old_m
        name = either.name if either is not None else ident
        out += _diff_terms(f"Milestone {name}", ms_terms(old_m), ms_terms(new_m))
    contract_terms_: list[tuple[str, str | None, str | None, str | None]] = [
        ("value", _amount(before.value), _amount(after.value), currency),
        ("budget", _amount(before.project_budget), _amount(after.project_budget), currency),
        ("cap", _amount(before.not_to_exceed), _amount(after.not_to_exceed), currency),
        (
            "end date",
            before.end_date.isoformat() if before.end_date else None,
            after.end_date.isoformat() if after.end_date else None,
            None,
        ),
    ]
    for name, old_term, new_term, unit in contract_terms_:
        if old_term != new_term:
            out.append(
                TermChange(
                    subject="Contract", field=name, before=old_term, after=new_term, unit=unit
                )
            )
    return out


def _task_changes(
    before: ContractVersion, after: ContractVersion, psa: PsaProject
) -> list[TaskChange]:
    def psa_task(line: ContractLine) -> Task | None:
        if line.task_id is not None:
            found = next((t for t in psa.tasks if t.id == line.task_id), None)
            if found is not None:
                return found
        return next((t for t in psa.tasks if t.name == line.task), None)

    out: list[TaskChange] = []
    after_ids = {ln.id for ln in after.lines}
    for line in sorted(before.lines, key=lambda ln: ln.id):
        task = psa_task(line)
        if line.id not in after_ids and task is not None:
            out.append(TaskChange(action="close", line_id=line.id, task_id=task.id, name=task.name))
    for line in sorted(after.lines, key=lambda ln: ln.id):
        task = psa_task(line)
        currency = after.currency
        # Only an hourly line's rate is the PSA task's: a fee's task rate is not billed.
        hourly = line.billing_type is BillingType.TIME_AND_MATERIALS
        wanted = [
            ("name", line.task, None),
            ("billing type", line.billing_type.value, None),
            *([("rate", _amount(line.rate), currency)] if hourly else []),
            ("planned hours", _num(line.hours), "h"),
        ]
        if task is None:
            out.append(
                TaskChange(
                    action="add",
                    line_id=line.id,
                    name=line.task,
                    changes=_diff_terms(
                        f"PSA task {line.task}", [(n, None, u) for n, _, u in wanted], wanted
                    ),
                )
            )
            continue
        has = [
            ("name", task.name, None),
            ("billing type", task.billing_type.value, None),
            *([("rate", _amount(task.rate), currency)] if hourly else []),
            ("planned hours", _num(task.planned_hours), "h"),
        ]
        changes = _diff_terms(f"PSA task {task.name}", has, wanted)
        sold_again = before.line(line.id) is None
        if changes or sold_again:
            out.append(
                TaskChange(
                    action="reopen" if sold_again else "change",
                    line_id=line.id,
                    task_id=task.id,
                    name=task.name,
                    changes=changes,
                )
            )
    return out


def _plan(billing: BillingContract, contract: Contract) -> dict[str, tuple[str, Money]]:
    """Item key -> (what, amount) of each fee share, instalment and milestone the contract
    would bill, valued as `canonical.rating` bills it."""
    out: dict[str, tuple[str, Money]] = {}
    current = contract.current
    for fee in current.lines:
        share = current.upfront(fee)
        if not share.is_zero():
            out[item_key(ItemKind.UPFRONT, fee.id)] = (f"{fee.task} fee up front", share)
    line_ids = list(dict.fromkeys(ln.id for v in contract.versions for ln in v.lines))
    for line_id in line_ids:
        sold = next(ln for v in reversed(contract.versions) for ln in v.lines if ln.id == line_id)
        progress = billing.progress_of(sold)
        done = progress.done_on if progress is not None else None
        version = contract.in_force(done) if done is not None else current
        line = version.line(line_id)
        if line is not None and line.billing_type is BillingType.FIXED_FEE:
            if line.fee_schedule.remainder is FeeRemainder.ON_COMPLETION:
                amount = version.remainder(line)
                if not amount.is_zero():
                    out[item_key(ItemKind.COMPLETION, line_id)] = (
                        f"{line.task} fee on completion",
                        amount,
                    )
        elif line is not None and line.billing_type is BillingType.MILESTONE:
            for m in version.milestones_of(line_id):
                out[item_key(ItemKind.MILESTONE, m.id)] = (f"Milestone {m.name}", m.amount)
        for v in contract.versions:
            vline = v.line(line_id)
            if vline is None:
                continue
            for due in v.instalments(vline):
                if contract.in_force(due.due).version == v.version:
                    out[item_key(ItemKind.INSTALMENT, line_id, due.number)] = (
                        f"{vline.task} instalment {due.number} of {due.of} "
                        f"(due {due.due.isoformat()})",
                        due.amount,
                    )
    return out


def _plan_changes(
    billing: BillingContract, before: Contract, after: Contract, billed: set[str]
) -> tuple[list[TermChange], list[str]]:
    old, new = _plan(billing, before), _plan(billing, after)
    changes: list[TermChange] = []
    notes: list[str] = []
    currency = before.current.currency
    for key in sorted(set(old) | set(new)):
        was, will = old.get(key), new.get(key)
        if was is not None and will is not None and was[1] == will[1]:
            continue
        what = (will or was or ("", Money.zero(currency)))[0]
        if key in billed:
            if was is not None and (will is None or was[1] != will[1]):
                notes.append(
                    f"{what} was already invoiced at {_amount(was[1])} {currency}; "
                    "it is not billed again"
                )
            continue
        changes.append(
            TermChange(
                subject=what,
                field="amount",
                before=_amount(was[1]) if was else None,
                after=_amount(will[1]) if will else None,
                unit=currency,
                key=key,
            )
        )
    return changes, notes


def _content(line: InvoiceLine) -> tuple[object, ...]:
    """A line as the customer reads it: the same under another version number is the same."""
    return (
        line.description,
        line.quantity.normalize(),
        line.unit_price.amount.normalize(),
        line.tax_rate.normalize(),
        tuple(sorted(line.source_ids)),
        line.revenue_from,
        line.revenue_to,
    )


def _unbilled(entries: Iterable[TimeEntry]) -> list[TimeEntry]:
    return [e.model_copy(update={"billed": False}) if e.billed else e for e in entries]


def _unbilled_expenses(expenses: Iterable[Expense]) -> list[Expense]:
    return [e.model_copy(update={"billed": False}) if e.billed else e for e in expenses]


def _correction(
    billing: BillingContract,
    issued: IssuedInvoice,
    earlier: list[RatedPeriod],
    others: list[RatedPeriod],
) -> Correction | None:
    """``earlier``: the invoices before it (the caps count from them); ``others``: every
    other invoice (what they billed, it cannot bill)."""
    original = issued.rated
    before = billed_so_far(earlier)
    items = billed_so_far(others).items
    base = billing.model_copy(update={"billed": before.model_copy(update={"items": items})})
    ids = set(original.billed_time_entry_ids)
    entries = _unbilled(e for e in issued.entries if e.id in ids)
    expenses = _unbilled_expenses(
        e for e in issued.expenses if e.id in set(original.billed_expense_ids)
    )
    rerated = rate_period(base, original.period, entries, expenses)
    if set(rerated.billed_time_entry_ids) != ids:
        missing = sorted(ids - set(rerated.billed_time_entry_ids))
        raise InvalidChange(
            "-",
            [
                f"issued[{issued.number}].entries: the entries it billed are not all given "
                f"or no longer rate ({', '.join(missing[:5])})"
            ],
        )
    if Counter(_content(ln) for ln in original.lines) == Counter(
        _content(ln) for ln in rerated.lines
    ):
        return None
    # Cancel and replace: the invoice credited whole and the period re-billed whole, so the
    # customer owes one invoice again (a partial credit would leave two open to follow).
    credit, rebill = list(original.lines), list(rerated.lines)
    currency = original.currency
    credit_net = sum_money((ln.net for ln in credit), currency)
    rebill_net = sum_money((ln.net for ln in rebill), currency)
    return Correction(
        invoice_number=issued.number,
        invoice_id=issued.invoice_id,
        period=original.period.key,
        credit_lines=credit,
        rebill_lines=rebill,
        credit_net=credit_net,
        credit_total=sum_money((ln.total for ln in credit), currency),
        rebill_net=rebill_net,
        rebill_total=sum_money((ln.total for ln in rebill), currency),
        net_before=original.subtotal,
        net_after=original.subtotal - credit_net + rebill_net,
        rerated=rerated,
    )


def _issued_order(invoice: IssuedInvoice) -> tuple[str, int, str]:
    return (invoice.rated.period.key, 0 if invoice.rated.kind == "upfront" else 1, invoice.number)


def preview_change(
    change: ChangeOrder,
    billing: BillingContract,
    *,
    psa: PsaProject | None = None,
    drafts: Sequence[PendingDraft] = (),
    issued: Sequence[IssuedInvoice] = (),
) -> ImpactPreview:
    """Every downstream change ``change`` makes, before and after. Pure: the same inputs, in
    any order, give an equal preview and digest.

    ``billing``: the contract (all versions), the PSA's task progress, the customer's tax
    rate and what issued invoices billed, as a period run sees them. ``psa``: the project's
    budget and tasks as the PSA holds them (None leaves the PSA out). ``drafts``: drafts
    awaiting approval, with their period's entries. ``issued``: invoices issued for the
    project; for a retroactive change, with the entries they billed. Raises `InvalidChange`.
    """
    contract = billing.contract
    before = contract.current
    ordered = sorted(issued, key=_issued_order)
    rated_issued = [i.rated for i in ordered]
    after = apply_change(contract, change, issued=rated_issued)
    new_contract = Contract(versions=[*contract.versions, after])
    new_billing = billing.model_copy(update={"contract": new_contract})
    billed = set(billed_so_far(rated_issued).items)

    plan, notes = _plan_changes(billing, contract, new_contract, billed)
    removed = sorted(
        m.id
        for m in before.milestones
        if after.line(m.line_id) is None or all(n.id != m.id for n in after.milestones)
        if item_key(ItemKind.MILESTONE, m.id) in billed
    )
    delta = after.total() - before.total()
    if delta != change.amount_delta:
        notes.append(
            f"the change order states an amount delta of {_amount(change.amount_delta)} "
            f"{before.currency}; its lines change the contract by {_amount(delta)}"
        )

    draft_changes: list[DraftRerate] = []
    for draft in sorted(drafts, key=lambda d: d.draft_id):
        rerated = rate_period(new_billing, draft.rated.period, draft.entries, draft.expenses)
        if rerated.lines != draft.rated.lines:
            draft_changes.append(
                DraftRerate(
                    draft_id=draft.draft_id,
                    period=draft.rated.period.key,
                    subtotal_before=draft.rated.subtotal,
                    subtotal_after=rerated.subtotal,
                    total_before=draft.rated.total,
                    total_after=rerated.total,
                )
            )

    corrections: list[Correction] = []
    if change.retroactive:
        for i, invoice in enumerate(ordered):
            if invoice.rated.kind != "period" or invoice.rated.period.end < change.effective_date:
                continue
            try:
                others = rated_issued[:i] + rated_issued[i + 1 :]
                found = _correction(new_billing, invoice, rated_issued[:i], others)
            except InvalidChange as exc:
                raise InvalidChange(change.key, exc.problems) from exc
            if found is not None:
                corrections.append(found)
        upfront = [i.number for i in ordered if i.rated.kind == "upfront"]
        if upfront and any(c.key and c.key.startswith("upfront:") for c in plan):
            notes.append(f"upfront invoices {', '.join(upfront)} are not corrected")

    psa_budget = None
    if psa is not None and psa.budget != after.project_budget:
        psa_budget = BudgetChange(before=psa.budget, after=after.project_budget)
    contract_changes = _contract_changes(before, after)
    if change.tax_rate is not None:
        contract_changes.append(
            TermChange(
                subject="Contract",
                field="tax rate",
                before="as the jurisdiction's",
                after=_num(change.tax_rate * 100),
                unit="%",
            )
        )
    return ImpactPreview(
        change_order=change.key,
        contract_id=before.contract_id,
        currency=before.currency,
        effective_from=change.effective_date,
        retroactive=change.retroactive,
        version_before=before.version,
        after=after,
        contract=contract_changes,
        budget_before=before.project_budget,
        budget_after=after.project_budget,
        tax_rate=change.tax_rate,
        psa_budget=psa_budget,
        tasks=_task_changes(before, after, psa) if psa is not None else [],
        billing_plan=plan,
        drafts=draft_changes,
        corrections=corrections,
        removed_invoiced_milestones=removed,
        notes=sorted(notes),
    )


def change_risks(preview: ImpactPreview, policy: ChangePolicy) -> list[str]:
    """Why finance must approve before the change applies; empty: apply at once."""
    risks: list[str] = []
    currency = preview.currency
    increase = preview.budget_after.amount - preview.budget_before.amount
    limit = policy.threshold(currency)
    if increase > limit:
        risks.append(
            f"budget: up {_amount(Money(amount=increase, currency=currency))} {currency}, "
            f"over the {_num(limit)} {currency} finance approves"
        )
    if preview.retroactive:
        count = len(preview.corrections)
        invoices = f"{count} issued invoice{'s' if count != 1 else ''}"
        risks.append(
            f"retroactive: effective {preview.effective_from.isoformat()}, reaching back "
            f"into invoiced periods ({invoices} corrected by credit note and re-bill)"
        )
    for ident in preview.removed_invoiced_milestones:
        risks.append(f"milestones: {ident} is removed but was already invoiced")
    if preview.tax_rate is not None:
        risks.append(
            f"tax_rate: the change order overrides the tax rate ({_num(preview.tax_rate)})"
        )
    return risks
