"""Rating a billing period by line type: time at its line's rate, fees by their schedule,
milestones when done, expenses by the policy, caps across periods, each item billed once."""

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise, zip_longest
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import (
    BilledSoFar,
    BillingContract,
    BillingPeriod,
    BillingType,
    Contract,
    ContractLine,
    ContractMilestone,
    ContractVersion,
    Expense,
    ExpensePolicy,
    FeeRemainder,
    FeeSchedule,
    InvoiceLine,
    InvoiceStatus,
    ItemKind,
    Money,
    PaymentTerms,
    RatedPeriod,
    Rater,
    RejectedEntry,
    TaskProgress,
    TimeEntry,
    billed_so_far,
    cap_problems,
    minor_unit,
    rate_period,
    rate_upfront,
)

T = TypeVar("T")
OCT = BillingPeriod(year=2026, month=10)
NOV = BillingPeriod(year=2026, month=11)
DEC = BillingPeriod(year=2026, month=12)
PROJECT = "4711"
START = date(2026, 10, 1)
END = date(2027, 3, 31)


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def hourly(
    ident: str, task: str, role: str, rate: str, currency: str = "GBP", **over: Any
) -> ContractLine:
    return ContractLine.model_validate(
        {
            "id": ident,
            "task": task,
            "role": role,
            "billing_type": "time_and_materials",
            "rate": Money.of(rate, currency),
            "hours": "100",
            "amount": Money.of(Decimal(rate) * 100, currency),
        }
        | over
    )


def fee(ident: str, task: str, amount: str, currency: str = "GBP", **over: Any) -> ContractLine:
    return ContractLine.model_validate(
        {
            "id": ident,
            "task": task,
            "billing_type": "fixed_fee",
            "amount": Money.of(amount, currency),
        }
        | over
    )


def lines(currency: str = "GBP", dev: str = "160") -> list[ContractLine]:
    """Hourly Development, Architecture, Support and Workshop; Training a fixed fee on
    completion; Go-live a milestone line of two milestones."""
    return [
        hourly("L1", "Development", "Developer", dev, currency),
        hourly("L2", "Architecture", "Architect", "200", currency),
        hourly("L3", "Support", "Developer", "160", currency),
        hourly("L4", "Workshop", "Architect", "250", currency),
        fee("L6", "Training", "3000", currency, hours="24"),
        ContractLine(
            id="L7",
            task="Go-live",
            billing_type=BillingType.MILESTONE,
            amount=Money.of("5000", currency),
        ),
    ]


def milestones(currency: str = "GBP") -> list[ContractMilestone]:
    return [
        ContractMilestone(
            id="M1", name="Cut-over", amount=Money.of("3000", currency), line_id="L7"
        ),
        ContractMilestone(
            id="M2", name="Hypercare", amount=Money.of("2000", currency), line_id="L7"
        ),
    ]


POLICY = ExpensePolicy(billable_categories=["travel", "lodging", "it equipment"], markup_percent=0)


def version(currency: str = "GBP", **over: Any) -> ContractVersion:
    sold = over.pop("lines", None) or lines(currency)
    values: dict[str, Any] = {
        "contract_id": "salesforce:006A",
        "version": 1,
        "effective_from": START,
        "source": "opportunity:006A",
        "currency": currency,
        "start_date": START,
        "end_date": END,
        "lines": sold,
        "milestones": milestones(currency) if any(ln.id == "L7" for ln in sold) else [],
        "expense_policy": POLICY,
        "payment_terms": PaymentTerms(net_days=30),
        "value": sum((ln.amount.amount for ln in sold), Decimal(0)),
    }
    values["value"] = Money.of(values["value"], currency)
    return ContractVersion.model_validate(values | over)


def tasks(**done: date | None) -> list[TaskProgress]:
    """The PSA's tasks; Support was done on 1 November. ``done`` sets others' done_on."""
    named = {
        "T1": "Development",
        "T2": "Architecture",
        "T3": "Support",
        "T4": "Workshop",
        "T5": "Testing",  # booked in the PSA, never sold
        "T6": "Training",
        "T7": "Go-live",
    }
    when = {"T3": date(2026, 11, 1)} | done
    return [TaskProgress(id=i, name=n, done_on=when.get(i)) for i, n in named.items()]


def contract(*versions: ContractVersion, **over: Any) -> BillingContract:
    currency = over.get("currency", "GBP")
    values: dict[str, Any] = {
        "project_id": PROJECT,
        "customer_id": "salesforce:001A",
        "customer_name": "Acme Ltd",
        "currency": currency,
        "contract": Contract(versions=list(versions) or [version(currency)]),
        "tasks": tasks(),
        "tax_rate": Decimal("0.20"),
        "payment_terms": PaymentTerms(net_days=30),
        "legal_entity_code": "UK01",
        "po_number": "PO-9",
    }
    return BillingContract.model_validate(values | over)


def entry(
    entry_id: str,
    task: str | None = "T1",
    hours: str = "2",
    day: date = date(2026, 11, 3),
    role: str = "Developer",
    **over: Any,
) -> TimeEntry:
    values: dict[str, Any] = {
        "id": entry_id,
        "project_id": PROJECT,
        "task_id": task,
        "employee": "ada",
        "role": role,
        "work_date": day,
        "hours": hours,
        "approved": True,
    }
    return TimeEntry.model_validate(values | over)


def expense(
    expense_id: str, category: str, amount: str, currency: str = "GBP", **over: Any
) -> Expense:
    values: dict[str, Any] = {
        "id": expense_id,
        "project_id": PROJECT,
        "employee": "ada",
        "incurred_on": date(2026, 11, 10),
        "category": category,
        "amount": Money.of(amount, currency),
        "approved": True,
    }
    return Expense.model_validate(values | over)


def reasons(rated: RatedPeriod) -> dict[str, str]:
    return {r.entry_id: r.reason for r in rated.rejected}


def keys(rated: RatedPeriod) -> list[str]:
    return [i.key for i in rated.billed_items]


def after(billing: BillingContract, *issued: RatedPeriod) -> BillingContract:
    """The contract as the next run sees it: with what the issued invoices billed."""
    return billing.model_copy(update={"billed": billed_so_far(issued)})


def assert_totals_are_sums(rated: RatedPeriod) -> None:
    places = Money.zero(rated.currency).minor_unit
    net = sum((ln.net.amount for ln in rated.lines), Decimal(0))
    tax = sum((ln.tax.amount for ln in rated.lines), Decimal(0))
    assert rated.subtotal.amount == net
    assert rated.tax.amount == tax
    assert rated.total.amount == net + tax == rated.subtotal.amount + rated.tax.amount
    for amount in (rated.subtotal, rated.tax, rated.total):
        assert amount.amount == amount.amount.quantize(Decimal(1).scaleb(-places))
    invoice = rated.to_invoice(invoice_id="INV-1", customer_id="c")
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        rated.subtotal,
        rated.tax,
        rated.total,
    )


# -- billing periods ----------------------------------------------------------------------------


def test_period_parses_and_spans_its_calendar_month() -> None:
    period = BillingPeriod.parse("2026-11")
    assert period == NOV and period.key == "2026-11" and str(period) == "2026-11"
    assert (period.start, period.end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert BillingPeriod.parse("2028-02").end == date(2028, 2, 29)
    assert BillingPeriod.parse("2026-02").end == date(2026, 2, 28)
    assert period.contains(date(2026, 11, 30)) and not period.contains(date(2026, 12, 1))
    assert not period.contains(date(2026, 10, 31))
    assert BillingPeriod.parse("2026-01").previous() == BillingPeriod.parse("2025-12")
    assert period.previous().key == "2026-10"
    assert BillingPeriod.of(date(2026, 11, 17)) == period


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "Nov 2026", "2026/11", ""])
def test_period_refuses_other_formats(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        BillingPeriod.parse(text)


# -- the billing contract --------------------------------------------------------------------------


def test_contract_refuses_a_contract_in_another_currency_and_repeated_tasks() -> None:
    with pytest.raises(ValidationError, match="contract version 1 is in EUR, not GBP"):
        contract(version("EUR"))
    with pytest.raises(ValidationError, match="tasks\\[1\\] repeats 'T1'"):
        contract(tasks=[TaskProgress(id="T1", name="a"), TaskProgress(id="T1", name="b")])


def test_billed_so_far_adds_up_what_the_issued_periods_billed() -> None:
    billing = contract(tasks=tasks(T6=date(2026, 11, 20)))
    nov = rate_period(billing, NOV, [entry("e", hours="10")], [expense("x", "travel", "50")])
    assert billed_so_far([]) == BilledSoFar()
    assert billed_so_far([nov, nov]) == BilledSoFar(
        items=["completion:L6", "expense:x"],
        time_net={"L1": Decimal("3200.00")},  # the same period twice: a caller's mistake
        under_cap=Decimal("3300.00"),
    )
    assert billed_so_far([nov]).items == ["completion:L6", "expense:x"]
    assert BilledSoFar(items=["b", "a", "b"]).items == ["a", "b"]


# -- time and materials ------------------------------------------------------------------------


def test_time_is_grouped_by_task_and_role_at_the_lines_rate() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [
            entry("e2", hours="2.25"),
            entry("e1", hours="3.25", day=date(2026, 11, 2)),
            entry("e3", task="T2", role="Architect", hours="1"),
        ],
    )
    assert [
        ln.model_dump(exclude={"id", "contract_version", "revenue_from", "revenue_to"})
        for ln in rated.lines
    ] == [
        {
            "description": "Development — Developer (5.5 h at 160.00 GBP)",
            "quantity": Decimal("5.50"),
            "unit_price": {"amount": Decimal("160.00"), "currency": "GBP"},
            "tax_rate": Decimal("0.20"),
            "source_ids": [],
        },
        {
            "description": "Architecture — Architect (1 h at 200.00 GBP)",
            "quantity": Decimal("1"),
            "unit_price": {"amount": Decimal("200.00"), "currency": "GBP"},
            "tax_rate": Decimal("0.20"),
            "source_ids": [],
        },
    ]
    assert [(ln.contract_version, ln.revenue_from, ln.revenue_to) for ln in rated.lines] == [
        (1, None, None),
        (1, None, None),
    ]
    assert rated.billed_time_entry_ids == ["e1", "e2", "e3"]
    assert rated.line_entries == {
        "time:T1:Developer:160.00": ["e1", "e2"],
        "time:T2:Architect:200.00": ["e3"],
    }
    assert rated.covered_time_entry_ids == [] and rated.rejected == []
    assert rated.hours == Decimal("6.5")
    assert rated.subtotal == gbp("1080.00")  # 5.5 x 160 + 200
    assert rated.tax == gbp("216.00") and rated.total == gbp("1296.00")
    assert rated.overage == gbp("0") and rated.held == []
    assert rated.time_net == {"L1": Decimal("880.00"), "L2": Decimal("200.00")}
    assert rated.billed_items == []


def test_a_change_order_mid_period_splits_the_line_at_its_effective_date() -> None:
    raised = version(
        version=2,
        effective_from=date(2026, 11, 16),
        source="change-order:CO1",
        lines=lines(dev="175"),
    )
    rated = rate_period(
        contract(version(), raised),
        NOV,
        [
            entry("late", day=date(2026, 11, 16), hours="4"),
            entry("early", day=date(2026, 11, 15), hours="3"),
            entry("later", day=date(2026, 11, 30), hours="1"),
        ],
    )
    assert [(ln.quantity, ln.unit_price, ln.contract_version) for ln in rated.lines] == [
        (Decimal("3"), gbp("160"), 1),
        (Decimal("5"), gbp("175"), 2),
    ]
    assert rated.lines[1].description == "Development — Developer (5 h at 175.00 GBP)"
    assert [ln.id for ln in rated.lines] == [
        "time:T1:Developer:160.00",
        "time:T1:Developer:175.00:v2",
    ]
    assert rated.line_entries["time:T1:Developer:175.00:v2"] == ["late", "later"]
    assert rated.subtotal == gbp("1355.00")


def test_the_lines_rate_applies_whoever_books_the_time() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [entry("s", role="Senior Developer", hours="1"), entry("w", task="T4", role="Architect")],
    )
    assert [(ln.description, ln.net) for ln in rated.lines] == [
        ("Development — Senior Developer (1 h at 160.00 GBP)", gbp("160.00")),
        ("Workshop — Architect (2 h at 250.00 GBP)", gbp("500.00")),
    ]


def test_time_on_a_task_the_contract_does_not_sell_is_rejected() -> None:
    rated = rate_period(contract(), NOV, [entry("t", task="T5", role="Tester")])
    assert rated.lines == [] and rated.billed_time_entry_ids == []
    assert rated.rejected == [
        RejectedEntry(
            entry_id="t", kind="time", reason="task Testing is not sold in contract version 1"
        )
    ]


def test_entries_that_cannot_be_billed_are_rejected_with_the_reason() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [
            entry("closed", task="T3"),
            entry("unknown", task="99"),
            entry("none", task=None),
            entry("pending", approved=False),
            entry("done", billed=True),
            entry("october", day=date(2026, 10, 31)),
            entry("december", day=date(2026, 12, 1)),
            entry("elsewhere", project_id="4712"),
            entry("ok", hours="1"),
        ],
    )
    assert reasons(rated) == {
        "closed": "task T3 was done on 2026-11-01",
        "unknown": "unknown task 99",
        "none": "booked on the project, not on a task",
        "pending": "not approved",
        "done": "already billed",
        "october": "outside period 2026-11",
        "december": "outside period 2026-11",
        "elsewhere": f"belongs to project 4712, not {PROJECT}",
    }
    assert [r.entry_id for r in rated.rejected] == sorted(reasons(rated))
    assert {r.kind for r in rated.rejected} == {"time"}
    assert rated.billed_time_entry_ids == ["ok"]
    assert rated.subtotal == gbp("160.00")


def test_time_up_to_the_day_a_task_is_done_is_billed() -> None:
    rated = rate_period(contract(), NOV, [entry("last", task="T3", day=date(2026, 11, 1))])
    assert rated.billed_time_entry_ids == ["last"] and rated.rejected == []


def test_non_billable_time_is_counted_but_neither_billed_nor_rejected() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [
            entry("internal", hours="3", billable=False),
            entry("old", hours="5", billable=False, day=date(2026, 10, 1)),
            entry("billed", hours="1"),
        ],
    )
    assert rated.non_billable_hours == Decimal("3")
    assert rated.rejected == [] and rated.billed_time_entry_ids == ["billed"]
    assert rated.hours == Decimal("1")


# -- fixed fees and milestones -------------------------------------------------------------------


def test_hours_on_fee_and_milestone_tasks_are_covered_and_reported_as_effort() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [
            entry("a", task="T6", hours="8"),
            entry("b", task="T6", hours="4", role="Trainer"),
            entry("c", task="T7", hours="3"),
            entry("d", hours="1"),
        ],
    )
    assert [ln.id for ln in rated.lines] == ["time:T1:Developer:160.00"]
    assert rated.covered_time_entry_ids == ["a", "b", "c"]
    assert rated.billed_time_entry_ids == ["a", "b", "c", "d"]  # so the PSA marks them
    assert rated.covered_hours == Decimal("15") and rated.hours == 1
    assert [(e.line_id, e.task, e.billing_type, e.hours, e.sold_hours) for e in rated.effort] == [
        ("L6", "Training", BillingType.FIXED_FEE, Decimal("12"), Decimal("24")),
        ("L7", "Go-live", BillingType.MILESTONE, Decimal("3"), None),
    ]
    assert rated.billed_items == []  # neither task is done


def test_the_mixed_deal_bills_hours_at_their_rates_and_the_fee_once_when_done() -> None:
    """The demo's Globex deal: Development and Project Management by the hour, Training a
    fixed fee on completion. Training's hours are never billed; its fee is billed in the
    period its task is done, and neither the next period nor a rerun bills it again."""
    sold = version(
        lines=[
            hourly("L1", "Development", "Developer", "150", "USD"),
            hourly("L2", "Project Management", "Project Manager", "120", "USD"),
            fee("L3", "Training", "4000", "USD"),
        ],
        currency="USD",
    )
    psa = [
        TaskProgress(id="1", name="Development"),
        TaskProgress(id="2", name="Project Management"),
        TaskProgress(id="3", name="Training", done_on=date(2026, 11, 20)),
    ]
    billing = contract(sold, currency="USD", tasks=psa)
    booked = [
        entry("dev", task="1", hours="10"),
        entry("pm", task="2", hours="2", role="Project Manager"),
        entry("training", task="3", hours="4", role="Trainer"),
    ]
    october = rate_period(billing, OCT, [entry("o", task="3", day=date(2026, 10, 5))])
    assert october.lines == [] and october.covered_time_entry_ids == ["o"]

    november = rate_period(billing, NOV, booked)
    assert [(ln.description, ln.net.amount) for ln in november.lines] == [
        ("Development — Developer (10 h at 150.00 USD)", Decimal("1500.00")),
        ("Project Management — Project Manager (2 h at 120.00 USD)", Decimal("240.00")),
        ("Training — fixed fee on completion", Decimal("4000.00")),
    ]
    fee_line = november.lines[-1]
    assert fee_line.source_ids == ["completion:L3"] and fee_line.contract_version == 1
    assert (fee_line.revenue_from, fee_line.revenue_to) == (START, END)
    assert november.covered_time_entry_ids == ["training"]
    assert [(i.key, i.kind, i.line_id, i.net.amount) for i in november.billed_items] == [
        ("completion:L3", ItemKind.COMPLETION, "L3", Decimal("4000.00"))
    ]

    rerun = rate_period(after(billing, october, november), NOV, booked[:2])
    december = rate_period(after(billing, october, november), DEC, [])
    assert keys(rerun) == [] == keys(december)
    assert december.lines == []


def test_a_deal_mostly_of_fixed_fees_bills_its_time_and_materials() -> None:
    sold = version(
        lines=[
            fee("L1", "Implementation", "90000"),
            hourly("L2", "Change Requests", "Developer", "160"),
        ]
    )
    psa = [
        TaskProgress(id="1", name="Implementation"),
        TaskProgress(id="2", name="Change Requests"),
    ]
    rated = rate_period(
        contract(sold, tasks=psa), NOV, [entry("cr", task="2", hours="5"), entry("i", task="1")]
    )
    assert [(ln.description, ln.net) for ln in rated.lines] == [
        ("Change Requests — Developer (5 h at 160.00 GBP)", gbp("800.00"))
    ]
    assert rated.covered_time_entry_ids == ["i"]


def test_a_milestone_done_is_billed_once_not_next_period_nor_on_a_rerun() -> None:
    billing = contract(tasks=tasks(T7=date(2026, 11, 30)))
    october = Rater(billing, OCT).finish()
    november = Rater(billing, NOV).finish()
    assert october.lines == []
    assert [(ln.id, ln.description, ln.unit_price) for ln in november.lines] == [
        ("milestone:M1", "Milestone: Cut-over (Go-live)", gbp("3000")),
        ("milestone:M2", "Milestone: Hypercare (Go-live)", gbp("2000")),
    ]
    assert november.billed_milestone_ids == ["M1", "M2"]
    assert keys(november) == ["milestone:M1", "milestone:M2"]
    assert [ln.source_ids for ln in november.lines] == [["milestone:M1"], ["milestone:M2"]]
    assert november.subtotal == gbp("5000.00") and november.tax == gbp("1000.00")

    billed = after(billing, november)
    assert Rater(billed, NOV).finish().lines == []  # a rerun
    assert Rater(billed, DEC).finish().lines == []  # the next period
    # A milestone billed by an earlier invoice stays billed; its sibling is still due.
    one = billing.model_copy(update={"billed": BilledSoFar(items=["milestone:M1"])})
    assert keys(Rater(one, DEC).finish()) == ["milestone:M2"]


def test_an_item_is_billed_in_the_first_period_ending_on_or_after_its_task_is_done() -> None:
    billing = contract(tasks=tasks(T6=date(2026, 12, 1)))
    assert Rater(billing, NOV).finish().lines == []
    assert keys(Rater(billing, DEC).finish()) == ["completion:L6"]
    # A period run late still bills what is done by its end, and nothing done after.
    assert keys(Rater(billing, BillingPeriod(year=2027, month=2)).finish()) == ["completion:L6"]


def test_time_and_materials_lines_come_first_then_fees_and_milestones() -> None:
    billing = contract(tasks=tasks(T6=date(2026, 11, 2), T7=date(2026, 11, 2)))
    rated = rate_period(billing, NOV, [entry("e", hours="1")])
    assert [ln.id for ln in rated.lines] == [
        "time:T1:Developer:160.00",
        "completion:L6",
        "milestone:M1",
        "milestone:M2",
    ]
    assert rated.subtotal == gbp("8160.00")


def test_twenty_percent_upfront_at_provisioning_and_the_remainder_on_completion() -> None:
    training = fee("L6", "Training", "3000", schedule=FeeSchedule(upfront_percent="20"))
    sold = version(lines=[*lines()[:4], training])
    billing = contract(sold, tasks=tasks(T6=date(2026, 11, 20)))

    upfront = rate_upfront(billing)
    assert upfront.kind == "upfront" and upfront.period == OCT
    assert [(ln.id, ln.description, ln.net) for ln in upfront.lines] == [
        ("upfront:L6", "Training — fixed fee, 20 % up front", gbp("600.00"))
    ]
    assert (upfront.lines[0].revenue_from, upfront.lines[0].revenue_to) == (START, END)
    memo = upfront.to_invoice(invoice_id="i", customer_id="c").memo
    assert memo is not None and memo.startswith("Fixed fees invoiced up front")
    assert keys(upfront) == ["upfront:L6"]
    # A period never bills the upfront share; provisioning again bills it no more.
    assert rate_upfront(after(billing, upfront)).lines == []
    assert "upfront:L6" not in keys(Rater(billing, NOV).finish())

    done = Rater(after(billing, upfront), NOV).finish()
    assert [(ln.description, ln.net) for ln in done.lines] == [
        ("Training — fixed fee on completion (the 80 % remaining)", gbp("2400.00"))
    ]
    assert upfront.subtotal + done.subtotal == training.amount


def test_a_deal_with_nothing_up_front_has_an_empty_provisioning_invoice() -> None:
    rated = rate_upfront(contract(), on=date(2026, 10, 14))
    assert rated.is_empty and rated.period == OCT and rated.billed_items == []


def instalment_contract(count: int | None = 3, upfront: str = "0") -> BillingContract:
    schedule = FeeSchedule(
        upfront_percent=upfront, remainder=FeeRemainder.INSTALMENTS, instalments=count
    )
    sold = version(lines=[*lines()[:4], fee("L6", "Training", "1000", schedule=schedule)])
    return contract(sold)


def test_instalments_are_billed_when_due_catching_up_months_missed() -> None:
    billing = instalment_contract()
    october = Rater(billing, OCT).finish()
    assert [(ln.id, ln.description, ln.net) for ln in october.lines] == [
        ("instalment:L6:1", "Training — fixed fee, instalment 1 of 3", gbp("333.33"))
    ]
    # November's run never happened: December's catches it up, each once.
    december = Rater(after(billing, october), DEC).finish()
    assert [(ln.id, ln.net) for ln in december.lines] == [
        ("instalment:L6:2", gbp("333.33")),
        ("instalment:L6:3", gbp("333.34")),  # the last takes the rounding
    ]
    assert (
        Rater(after(billing, october, december), BillingPeriod(year=2027, month=1)).finish().lines
        == []
    )
    assert october.subtotal + december.subtotal == gbp("1000.00")


@pytest.mark.parametrize(("count", "upfront"), [(None, "0"), (None, "20"), (7, "15"), (1, "0")])
def test_instalments_add_up_to_the_fee(count: int | None, upfront: str) -> None:
    billing = instalment_contract(count, upfront)
    billed = [rate_upfront(billing)]
    period = OCT
    for _ in range(12):
        billed.append(Rater(after(billing, *billed), period).finish())
        period = BillingPeriod.of(period.end + timedelta(days=1))
    assert sum((p.subtotal for p in billed), gbp("0")) == gbp("1000.00")
    instalments = [i for p in billed for i in p.billed_items if i.kind is ItemKind.INSTALMENT]
    term = 6 if count is None else count  # October to March is six months
    assert len(instalments) == term == len({i.key for i in instalments})


def test_fee_lines_carry_no_revenue_span_without_an_end_date() -> None:
    billing = contract(version(end_date=None), tasks=tasks(T6=date(2026, 11, 2)))
    [line] = Rater(billing, NOV).finish().lines
    assert line.id == "completion:L6" and (line.revenue_from, line.revenue_to) == (None, None)


# -- expenses ------------------------------------------------------------------------------------


def test_expenses_are_billed_per_category_with_the_policys_markup() -> None:
    policy = ExpensePolicy(billable_categories=["Travel", "lodging"], markup_percent="10")
    billing = contract(version(expense_policy=policy))
    rated = rate_period(
        billing,
        NOV,
        [],
        [
            expense("x1", "travel", "100.00"),
            expense("x2", "Travel", "45.55"),
            expense("x3", "travel", "0.10", markup_percent="50"),  # the PSA's markup is ignored
            expense("x4", "lodging", "120.00"),
            expense("x5", "meals", "30.00"),
            expense("x6", "travel", "80.00", currency="EUR"),
            expense("x7", "travel", "10.00", billable=False),
            expense("x8", "travel", "10.00", approved=False),
            expense("x9", "travel", "10.00", incurred_on=date(2026, 12, 2)),
        ],
    )
    assert [(ln.description, ln.quantity, ln.unit_price) for ln in rated.lines] == [
        ("Lodging expenses (1, 10 % markup)", Decimal(1), gbp("132.00")),
        ("Travel expenses (3, 10 % markup)", Decimal(1), gbp("160.22")),  # 145.65 x 1.1
    ]
    assert rated.lines[1].source_ids == ["expense:x1", "expense:x2", "expense:x3"]
    assert rated.billed_expense_ids == ["x1", "x2", "x3", "x4"]
    assert keys(rated) == ["expense:x1", "expense:x2", "expense:x3", "expense:x4"]
    # Meals are not passed on under this contract: never billed, reported, not an error.
    assert rated.non_billable_expense_ids == ["x5"]
    assert reasons(rated) == {
        "x6": "currency EUR differs from the contract's GBP",
        "x8": "not approved",
        "x9": "outside period 2026-11",
    }
    assert {r.kind for r in rated.rejected} == {"expense"}
    # Each expense is billed once: a rerun after the invoice bills none of them again.
    assert rate_period(after(billing, rated), NOV, [], [expense("x1", "travel", "100")]).lines == []


def test_a_policy_without_markup_passes_billable_expenses_at_cost() -> None:
    billing = contract(version(expense_policy=ExpensePolicy(billable_categories=["taxi"])))
    [line] = rate_period(billing, NOV, [], [expense("x", "Taxi", "12.345")]).lines
    assert line.description == "Taxi expenses (1)"
    assert line.unit_price == gbp("12.35") and line.id == "expense:taxi"


def test_the_firms_default_policy_passes_nothing_on() -> None:
    rated = rate_period(
        contract(version(expense_policy=ExpensePolicy())), NOV, [], [expense("x", "travel", "9")]
    )
    assert rated.lines == [] and rated.rejected == []
    assert rated.non_billable_expense_ids == ["x"]


def test_one_category_spelt_two_ways_is_one_line_labelled_alike_in_any_order() -> None:
    spent = [expense("a", "it equipment", "10"), expense("b", "IT equipment", "5")]
    for order in (spent, spent[::-1]):
        [line] = rate_period(contract(), NOV, [], order).lines
        assert line.description == "IT equipment expenses (2)"
        assert line.unit_price == gbp("15.00") and line.id == "expense:it equipment"


# -- the not-to-exceed caps -----------------------------------------------------------------------


def capped(cap: str, before: str | None = None) -> RatedPeriod:
    """1600.00 of time plus 100.00 of travel: 1700.00 net before the contract's cap."""
    billing = contract(
        version(not_to_exceed=gbp(cap)),
        billed=BilledSoFar(under_cap=Decimal(before or 0)),
    )
    return rate_period(billing, NOV, [entry("e", hours="10")], [expense("x", "travel", "100")])


def test_under_and_at_the_cap_nothing_is_cut() -> None:
    for rated in (capped("5000", "3300"), capped("1700"), capped("10000")):
        assert rated.overage == gbp("0") and rated.held == []
        assert rated.subtotal == gbp("1700.00") and len(rated.lines) == 2
        assert rated.under_cap == Decimal("1700.00")


def test_over_the_cap_a_negative_line_cuts_the_overage_and_holds_it() -> None:
    rated = capped("10000", "8500")
    assert rated.overage == gbp("200.00")
    assert [(h.cap, h.line_id, h.amount) for h in rated.held] == [("contract", None, gbp("200.00"))]
    cap_line = rated.lines[-1]
    assert cap_line.id == "cap"
    assert cap_line.description == "Not-to-exceed cap adjustment (cap 10000.00 GBP)"
    assert (cap_line.quantity, cap_line.unit_price) == (Decimal(1), gbp("-200.00"))
    assert cap_line.tax_rate == Decimal("0.20") and cap_line.tax == gbp("-40.00")
    assert rated.subtotal == gbp("1500.00") and rated.under_cap == Decimal("1500.00")
    assert rated.total == gbp("1800.00")
    assert_totals_are_sums(rated)


def test_what_is_left_under_a_cap_is_rounded_down_so_it_is_never_exceeded() -> None:
    rated = capped("10000.005", "8500")  # 1500.005 left: 1500.00 may be billed
    assert rated.subtotal == gbp("1500.00") and rated.overage == gbp("200.00")


def test_billed_before_over_the_cap_makes_everything_overage() -> None:
    rated = capped("1000", "1200")
    assert rated.overage == gbp("1700.00")
    assert rated.subtotal == gbp("0.00") and rated.total == gbp("0.00")
    assert rated.billed_time_entry_ids == ["e"]  # settled: the customer owes nothing more


def test_fees_and_milestones_are_not_under_the_contracts_cap() -> None:
    billing = contract(version(not_to_exceed=gbp("100")), tasks=tasks(T6=date(2026, 11, 2)))
    rated = rate_period(billing, NOV, [entry("e", hours="1")])
    assert rated.subtotal == gbp("3100.00") and rated.overage == gbp("60.00")


def test_a_line_cap_reached_in_the_second_of_two_periods_bills_up_to_it() -> None:
    sold = lines()
    sold[0] = sold[0].model_copy(update={"not_to_exceed": gbp("2000")})
    billing = contract(version(lines=sold))
    october = rate_period(billing, OCT, [entry("o", hours="10", day=date(2026, 10, 9))])
    assert october.subtotal == gbp("1600.00") and october.overage.is_zero()

    november = rate_period(
        after(billing, october),
        NOV,
        [entry("n", hours="5"), entry("a", task="T2", role="Architect", hours="1")],
    )
    assert [(ln.id, ln.description, ln.net) for ln in november.lines] == [
        ("time:T1:Developer:160.00", "Development — Developer (5 h at 160.00 GBP)", gbp("800.00")),
        ("cap:L1", "Not-to-exceed cap adjustment: Development (cap 2000.00 GBP)", gbp("-400.00")),
        ("time:T2:Architect:200.00", "Architecture — Architect (1 h at 200.00 GBP)", gbp("200.00")),
    ]
    assert [(h.cap, h.line_id, h.amount) for h in november.held] == [("line", "L1", gbp("400.00"))]
    assert november.overage == gbp("400.00")
    assert november.time_net == {"L1": Decimal("400.00"), "L2": Decimal("200.00")}
    billed = billed_so_far([october, november])
    assert billed.time_net["L1"] == Decimal("2000.00")  # the cap, to the penny
    # Past the cap, more time on the line is all held.
    december = rate_period(
        after(billing, october, november), DEC, [entry("d", day=date(2026, 12, 1))]
    )
    assert december.subtotal == gbp("0.00") and december.overage == gbp("320.00")


def test_the_contracts_cap_applies_after_the_lines_caps() -> None:
    sold = lines()
    sold[0] = sold[0].model_copy(update={"not_to_exceed": gbp("1000")})
    billing = contract(version(lines=sold, not_to_exceed=gbp("1100")))
    rated = rate_period(
        billing, NOV, [entry("e", hours="10"), entry("a", task="T2", role="Architect", hours="1")]
    )
    # 1600 of development capped at 1000; with 200 of architecture, 1200 against 1100.
    assert [(h.cap, h.line_id, h.amount) for h in rated.held] == [
        ("line", "L1", gbp("600.00")),
        ("contract", None, gbp("100.00")),
    ]
    assert rated.subtotal == gbp("1100.00") and rated.overage == gbp("700.00")
    assert_totals_are_sums(rated)


def test_a_cap_below_what_was_already_billed_names_the_field() -> None:
    sold = lines()
    sold[1] = sold[1].model_copy(update={"not_to_exceed": gbp("500")})
    lowered = version(lines=sold, not_to_exceed=gbp("1000"))
    billed = BilledSoFar(time_net={"L1": Decimal(900), "L2": Decimal(600)}, under_cap=Decimal(1500))
    assert cap_problems(lowered, billed) == [
        "not_to_exceed: the cap 1000 GBP is below the 1500 GBP already billed under it",
        "lines[1].not_to_exceed: the cap 500 GBP on line L2 is below the 600 GBP already "
        "billed on it",
    ]
    assert cap_problems(lowered, BilledSoFar(under_cap=Decimal(1000))) == []


# -- currencies and rounding ---------------------------------------------------------------------


def test_yen_rounds_to_whole_units() -> None:
    billing = contract(
        version("JPY", lines=lines("JPY", dev="12345")), currency="JPY", tax_rate="0.10"
    )
    rated = rate_period(billing, NOV, [entry("e", hours="0.1")])
    [line] = rated.lines
    assert line.unit_price == Money.of("12345", "JPY")
    assert line.description == "Development — Developer (0.1 h at 12345 JPY)"
    assert line.net.amount == Decimal("1235")  # 1234.5, half up
    assert line.tax.amount == Decimal("124")  # 123.5, half up
    assert rated.total == Money.of("1359", "JPY")
    assert_totals_are_sums(rated)


def test_kuwaiti_dinar_rounds_to_three_places() -> None:
    policy = ExpensePolicy(billable_categories=["travel"], markup_percent="10")
    billing = contract(
        version("KWD", lines=lines("KWD", dev="12.3455"), expense_policy=policy),
        currency="KWD",
        tax_rate="0.05",
    )
    rated = rate_period(
        billing, NOV, [entry("e", hours="1.5")], [expense("x", "travel", "10.005", currency="KWD")]
    )
    assert [ln.net.amount for ln in rated.lines] == [Decimal("18.518"), Decimal("11.006")]
    assert rated.lines[0].description == "Development — Developer (1.5 h at 12.3455 KWD)"
    assert rated.total == Money.of("31.000", "KWD")  # 29.524 + 0.926 + 0.550 (tax per line)
    assert_totals_are_sums(rated)


def test_a_rated_period_refuses_lines_in_another_currency() -> None:
    line = InvoiceLine(
        description="Consulting", quantity="1", unit_price=Money.of("1", "EUR"), tax_rate="0"
    )
    with pytest.raises(ValidationError, match=r"lines\[0\]\.unit_price"):
        RatedPeriod(period=NOV, currency="GBP", lines=[line], overage=gbp("0"))


def test_a_draft_stored_before_contracts_still_reads() -> None:
    """Drafts in the store predate these fields: they read, and their milestones count."""
    old = {
        "period": {"year": 2026, "month": 10},
        "currency": "GBP",
        "lines": [],
        "billed_time_entry_ids": ["1"],
        "billed_milestone_ids": ["M1"],
        "overage": {"amount": "0", "currency": "GBP"},
    }
    assert billed_so_far([RatedPeriod.model_validate(old)]).items == ["milestone:M1"]


# -- the draft invoice --------------------------------------------------------------------------


def test_to_invoice_makes_a_draft_with_the_lines_and_the_contracts_references() -> None:
    rated = rate_period(contract(), NOV, [entry("e", hours="1.5")])
    invoice = rated.to_invoice(
        invoice_id="INV-4711-2026-11", customer_id="cus_1", due_date=date(2026, 12, 31)
    )
    assert invoice.status is InvoiceStatus.DRAFT and invoice.number is None
    assert invoice.lines == rated.lines and invoice.currency == "GBP"
    assert (invoice.project_id, invoice.legal_entity_code, invoice.po_number) == (
        PROJECT,
        "UK01",
        "PO-9",
    )
    assert invoice.memo == "Billing period 2026-11"
    assert invoice.total == rated.total == gbp("288.00")
    assert not rated.is_empty and Rater(contract(), NOV).finish().is_empty


# -- streaming, repeats and scale ----------------------------------------------------------------


def test_an_entry_seen_twice_counts_once() -> None:
    once = rate_period(contract(), NOV, [entry("a", hours="2")])
    again = [entry("a", hours="2.0", description="re-fetched"), entry("a", hours="2")]
    assert rate_period(contract(), NOV, again) == once
    assert rate_period(contract(), NOV, again).model_dump_json() == once.model_dump_json()


@pytest.mark.parametrize("first", ["2", "3"])
def test_copies_of_an_entry_that_disagree_are_rejected_whatever_comes_first(first: str) -> None:
    rater = Rater(contract(), NOV)
    rater.add_time([entry("b", hours=first), entry("ok", hours="1")])
    rater.add_time([entry("b", hours="5" if first == "2" else "2"), entry("b", hours=first)])
    rated = rater.finish()
    assert reasons(rated) == {"b": "appears more than once with different contents"}
    assert rated.billed_time_entry_ids == ["ok"] and rated.hours == 1


def test_twenty_thousand_entries_rated_page_by_page_give_a_small_invoice() -> None:
    count, page_size = 20_000, 500

    def pages() -> Iterator[list[TimeEntry]]:
        for start in range(0, count, page_size):
            yield [
                entry(
                    str(n),
                    task="T1" if n % 2 else "T2",
                    role="Developer" if n % 2 else "Architect",
                    hours="1.25",
                    day=date(2026, 11, 1) + timedelta(days=n % 15),
                )
                for n in range(start, start + page_size)
            ]

    rater = Rater(contract(), NOV)
    for page in pages():
        rater.add_time(page)
    rated = rater.finish()
    assert len(rated.lines) == 2 and all(ln.source_ids == [] for ln in rated.lines)
    assert rated.hours == Decimal("25000")
    assert rated.subtotal == gbp(str(10_000 * Decimal("1.25") * (160 + 200)))
    assert len(rated.billed_time_entry_ids) == count == len(set(rated.billed_time_entry_ids))
    assert sorted(e for ids in rated.line_entries.values() for e in ids) == sorted(
        rated.billed_time_entry_ids
    )
    # Each id is kept twice in the draft (to mark it billed, to trace its line): still small
    # enough for q2c's store, and none of it in the invoice or the workflow's history.
    assert len(RatedPeriod.model_validate(rated.model_dump()).model_dump_json()) < 500_000
    assert len(rated.model_dump_json(include={"lines"})) < 1_000


# -- properties ------------------------------------------------------------------------------------

DAYS = [date(2026, 10, 30) + timedelta(days=n) for n in range(35)]


@st.composite
def time_entries(draw: st.DrawFn) -> TimeEntry:
    approved = draw(st.booleans()) or draw(st.booleans())
    return entry(
        f"e{draw(st.integers(0, 40))}",  # a small id pool: repeats and conflicts happen
        task=draw(st.sampled_from(["T1", "T2", "T3", "T4", "T5", "T6", "T7", "99", None])),
        hours=draw(st.sampled_from(["0.25", "1", "1.5", "2.33", "7.75", "8"])),
        day=draw(st.sampled_from(DAYS)),
        role=draw(st.sampled_from(["Developer", "Architect", "Tester"])),
        billable=draw(st.integers(0, 9)) > 0,
        approved=approved,
        billed=approved and draw(st.integers(0, 9)) == 0,
    )


@st.composite
def expenses(draw: st.DrawFn) -> Expense:
    return expense(
        f"x{draw(st.integers(0, 15))}",
        draw(st.sampled_from(["travel", "Travel", "lodging", "meals", "taxi"])),
        draw(st.sampled_from(["0.01", "9.99", "100", "123.456"])),
        incurred_on=draw(st.sampled_from(DAYS)),
    )


MARKED_UP = ExpensePolicy(billable_categories=["travel", "lodging"], markup_percent="12.5")


def split(items: list[T], cuts: list[int]) -> list[list[T]]:
    bounds = sorted({0, len(items), *(c % (len(items) + 1) for c in cuts)})
    return [items[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(time_entries(), max_size=40),
    st.lists(expenses(), max_size=10),
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 100), max_size=6),
)
def test_any_page_split_and_order_gives_the_same_result(
    entries: list[TimeEntry], spent: list[Expense], rnd: Any, cuts: list[int]
) -> None:
    billing = contract(
        version(expense_policy=MARKED_UP, not_to_exceed=gbp("5000")),
        tasks=tasks(T7=date(2026, 11, 9)),
    )
    expected = rate_period(billing, NOV, entries, spent)
    shuffled, shuffled_spent = list(entries), list(spent)
    rnd.shuffle(shuffled)
    rnd.shuffle(shuffled_spent)
    rater = Rater(billing, NOV)
    for time_page, spent_page in zip_longest(
        split(shuffled, cuts), split(shuffled_spent, cuts), fillvalue=()
    ):
        rater.add_expenses(spent_page)
        rater.add_time(time_page)
    rater.add_expenses(shuffled_spent)  # a page fetched twice changes nothing
    assert rater.finish() == expected
    assert rater.finish().model_dump_json() == expected.model_dump_json()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["GBP", "JPY", "KWD"]),
    st.lists(time_entries(), max_size=30),
    st.lists(expenses(), max_size=8),
    st.sampled_from(["0", "0.055", "0.0825", "0.2"]),
    st.one_of(st.none(), st.sampled_from(["0", "333.333", "1500", "99999"])),
    st.sampled_from([None, "0", "250.5", "2000"]),
    st.sampled_from(["99.995", "160", "1234.5678"]),
)
def test_totals_always_equal_the_sum_of_rounded_lines(
    currency: str,
    entries: list[TimeEntry],
    spent: list[Expense],
    tax: str,
    cap: str | None,
    before: str | None,
    dev_rate: str,
) -> None:
    sold = version(
        currency,
        lines=lines(currency, dev=dev_rate),
        expense_policy=MARKED_UP,
        not_to_exceed=Money.of(cap, currency) if cap is not None else None,
    )
    billing = contract(
        sold,
        currency=currency,
        tax_rate=tax,
        billed=BilledSoFar(under_cap=Decimal(before or 0)),
    )
    spent = [x.model_copy(update={"amount": Money.of(x.amount.amount, currency)}) for x in spent]
    rated = rate_period(billing, NOV, entries, spent)
    assert_totals_are_sums(rated)
    uncapped = rate_period(
        billing.model_copy(
            update={
                "contract": Contract(versions=[sold.model_copy(update={"not_to_exceed": None})])
            }
        ),
        NOV,
        entries,
        spent,
    )
    assert rated.overage == uncapped.subtotal - rated.subtotal
    if cap is None:
        assert rated.overage.is_zero()
    else:
        left = max(Decimal(cap) - Decimal(before or 0), Decimal(0))
        quantum = Decimal(1).scaleb(-minor_unit(currency))
        room = Money.of(left.quantize(quantum, rounding=ROUND_FLOOR), currency)
        assert rated.subtotal == min(uncapped.subtotal, room)
    assert set(rated.billed_time_entry_ids).isdisjoint(r.entry_id for r in rated.rejected)
    assert set(rated.covered_time_entry_ids) <= set(rated.billed_time_entry_ids)
    assert rated.hours == sum(
        (ln.quantity for ln in rated.lines if (ln.id or "").startswith("time:")), Decimal(0)
    )


PERIODS = [
    BillingPeriod(year=2026, month=10 + n) if n < 3 else BillingPeriod(year=2027, month=n - 2)
    for n in range(7)
]


@st.composite
def runs(draw: st.DrawFn) -> tuple[BillingContract, list[tuple[int, bool, bool]]]:
    """A contract of every line type with random caps, schedule and completion dates, and a
    sequence of runs: (period index, issued or voided, the provisioning invoice instead)."""
    schedule = draw(
        st.sampled_from(
            [
                FeeSchedule(),
                FeeSchedule(upfront_percent="20"),
                FeeSchedule(remainder=FeeRemainder.INSTALMENTS),
                FeeSchedule(
                    upfront_percent="33.3", remainder=FeeRemainder.INSTALMENTS, instalments=4
                ),
            ]
        )
    )
    sold = lines()
    sold[0] = sold[0].model_copy(
        update={"not_to_exceed": draw(st.sampled_from([None, gbp("500"), gbp("2345.67")]))}
    )
    sold[4] = fee("L6", "Training", "3000.01", schedule=schedule)
    terms = version(
        lines=sold,
        expense_policy=MARKED_UP,
        not_to_exceed=draw(st.sampled_from([None, gbp("800"), gbp("4000.005")])),
    )
    done = st.one_of(st.none(), st.sampled_from([*DAYS, date(2027, 2, 14)]))
    billing = contract(terms, tasks=tasks(T6=draw(done), T7=draw(done)))
    plan = draw(
        st.lists(
            st.tuples(st.integers(0, len(PERIODS) - 1), st.booleans(), st.integers(0, 9)),
            min_size=1,
            max_size=10,
        )
    )
    return billing, [(p, issued, kind == 0) for p, issued, kind in plan]


def booked(period: BillingPeriod) -> tuple[list[TimeEntry], list[Expense]]:
    """The same time and expenses in a period whenever it is run (the PSA does not forget)."""
    days = [period.start + timedelta(days=n) for n in (0, 9, 20)]
    entries = [
        entry(f"{period.key}:{n}", task=task, hours=hours, day=day)
        for n, (task, hours, day) in enumerate(
            zip(
                ["T1", "T2", "T6", "T7", "T1", "T4"],
                ["2", "3.5", "4", "1", "6.25", "1"],
                days * 2,
                strict=True,
            )
        )
    ]
    spent = [
        expense(f"{period.key}:x{n}", category, amount, incurred_on=days[n % 3])
        for n, (category, amount) in enumerate(
            [("travel", "123.45"), ("meals", "20"), ("lodging", "99.99")]
        )
    ]
    return entries, spent


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_over_any_periods_and_reruns_items_are_billed_once_and_caps_hold(
    scenario: tuple[BillingContract, list[tuple[int, bool, bool]]],
) -> None:
    billing, plan = scenario
    terms = billing.contract.current
    issued: list[RatedPeriod] = []
    for index, issue, provisioning in plan:
        now = after(billing, *issued)
        if provisioning:
            rated = rate_upfront(now)
        else:
            period = PERIODS[index]
            entries, spent = booked(period)
            held = {e for r in issued for e in r.billed_time_entry_ids}  # as the activity does
            rated = rate_period(now, period, [e for e in entries if e.id not in held], spent)
        assert_totals_are_sums(rated)
        if issue:
            issued.append(rated)

    # Each fee share, instalment, milestone and expense at most once.
    billed = [k for r in issued for k in keys(r)]
    assert len(billed) == len(set(billed))
    item_lines = [ln for r in issued for ln in r.lines if ln.source_ids]
    assert sorted(k for ln in item_lines for k in ln.source_ids) == sorted(billed)
    training = [i for r in issued for i in r.billed_items if i.line_id == "L6"]
    assert sum((i.net for i in training), gbp("0")) <= gbp("3000.01")
    # No billed total exceeds its cap, as the invoices' own lines add up.
    cap_l1 = terms.lines[0].not_to_exceed
    if cap_l1 is not None:
        development = [
            ln.net
            for r in issued
            for ln in r.lines
            if (ln.id or "").startswith(("time:T1:", "cap:L1"))
        ]
        assert sum(development, gbp("0")) <= cap_l1
    if terms.not_to_exceed is not None:
        counted = [
            ln.net
            for r in issued
            for ln in r.lines
            if (ln.id or "").startswith(("time:", "expense:", "cap"))
        ]
        assert sum(counted, gbp("0")) <= terms.not_to_exceed
