"""Rating a billing period: rates by date, caps, milestones, expenses, rejections, rounding."""

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise, zip_longest
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import (
    BillingContract,
    BillingPeriod,
    BillingType,
    ContractTask,
    Expense,
    ExpenseRule,
    InvoiceLine,
    InvoiceStatus,
    Milestone,
    MilestoneStatus,
    Money,
    PaymentTerms,
    RateCard,
    RateCardEntry,
    RatedPeriod,
    Rater,
    RejectedEntry,
    TimeEntry,
    rate_period,
)

T = TypeVar("T")
NOV = BillingPeriod(year=2026, month=11)
PROJECT = "4711"


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


def card(currency: str = "GBP", dev: str = "160", dev_after: str = "175") -> RateCard:
    """Developers get a raise on 16 November; architects' rate holds all year."""
    return RateCard(
        currency=currency,
        entries=[
            RateCardEntry(
                role="Developer",
                rate=Money.of(dev, currency),
                effective_from=date(2026, 1, 1),
                effective_to=date(2026, 11, 15),
            ),
            RateCardEntry(
                role="Developer",
                rate=Money.of(dev_after, currency),
                effective_from=date(2026, 11, 16),
            ),
            RateCardEntry(
                role="Architect", rate=Money.of("200", currency), effective_from=date(2026, 1, 1)
            ),
        ],
    )


def tasks(currency: str = "GBP") -> list[ContractTask]:
    return [
        ContractTask(id="T1", name="Development", role="Developer"),
        ContractTask(id="T2", name="Architecture", role="Architect"),
        ContractTask(id="T3", name="Support", role="Developer", open=False),
        ContractTask(id="T4", name="Workshop", role="Architect", rate=Money.of("250", currency)),
        ContractTask(id="T5", name="Testing"),
        ContractTask(id="T6", name="Training", role="Developer", billable=False),
    ]


def contract(**over: Any) -> BillingContract:
    currency = over.get("currency", "GBP")
    values: dict[str, Any] = {
        "project_id": PROJECT,
        "customer_id": "salesforce:001A",
        "customer_name": "Acme Ltd",
        "currency": currency,
        "billing_type": BillingType.TIME_AND_MATERIALS,
        "rate_card": card(currency),
        "tasks": tasks(currency),
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


def milestone(ident: str, amount: str, status: MilestoneStatus, done: date | None) -> Milestone:
    return Milestone(
        id=ident, name=f"Phase {ident}", amount=gbp(amount), status=status, completed_on=done
    )


def reasons(rated: RatedPeriod) -> dict[str, str]:
    return {r.entry_id: r.reason for r in rated.rejected}


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


# -- the contract ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("rate_card", card("EUR"), "rate card currency EUR"),
        ("tasks", [ContractTask(id="T1", name="Dev", rate=Money.of("1", "EUR"))], "tasks[0].rate"),
        (
            "milestones",
            [Milestone(id="M1", name="Go-live", amount=Money.of("9", "EUR"))],
            "milestones[0].amount",
        ),
        ("not_to_exceed", Money.of("9", "EUR"), "in not_to_exceed"),
        ("billed_to_date", Money.of("9", "EUR"), "in billed_to_date"),
    ],
)
def test_contract_refuses_mixed_currencies_naming_the_field(
    field: str, value: object, where: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        contract(**{field: value})
    [error] = exc.value.errors()
    assert error["loc"][0] == field
    assert where in error["msg"]


def test_contract_refuses_repeated_task_ids_and_expense_categories() -> None:
    with pytest.raises(ValidationError, match="tasks\\[1\\] repeats 'T1'"):
        contract(tasks=[ContractTask(id="T1", name="a"), ContractTask(id="T1", name="b")])
    with pytest.raises(ValidationError, match="expense_rules\\[1\\] repeats 'travel'"):
        contract(expense_rules=[ExpenseRule(category="travel"), ExpenseRule(category="Travel")])


# -- time and materials ------------------------------------------------------------------------


def test_time_is_grouped_by_task_and_role_at_the_rate_card_rate() -> None:
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
    assert rated.billed_time_entry_ids == ["e1", "e2", "e3"]
    assert rated.covered_time_entry_ids == [] and rated.rejected == []
    assert rated.hours == Decimal("6.5")
    assert rated.subtotal == gbp("1080.00")  # 5.5 x 160 + 200
    assert rated.tax == gbp("216.00") and rated.total == gbp("1296.00")
    assert rated.overage == gbp("0")


def test_a_rate_change_mid_period_splits_the_line_at_its_effective_date() -> None:
    rated = rate_period(
        contract(),
        NOV,
        [
            entry("late", day=date(2026, 11, 16), hours="4"),
            entry("early", day=date(2026, 11, 15), hours="3"),
            entry("later", day=date(2026, 11, 30), hours="1"),
        ],
    )
    assert [(ln.quantity, ln.unit_price) for ln in rated.lines] == [
        (Decimal("3"), gbp("160")),
        (Decimal("5"), gbp("175")),
    ]
    assert rated.lines[1].description == "Development — Developer (5 h at 175.00 GBP)"
    assert rated.lines[0].id != rated.lines[1].id
    assert rated.subtotal == gbp("1355.00")


def test_a_task_rate_overrides_the_rate_card() -> None:
    rated = rate_period(contract(), NOV, [entry("w", task="T4", role="Architect", hours="2")])
    [line] = rated.lines
    assert line.unit_price == gbp("250") and line.net == gbp("500.00")
    assert line.description == "Workshop — Architect (2 h at 250.00 GBP)"


def test_a_role_without_a_rate_falls_back_to_the_tasks_role() -> None:
    rated = rate_period(contract(), NOV, [entry("s", role="Senior Developer", hours="1")])
    [line] = rated.lines
    assert line.unit_price == gbp("160") and "Development — Developer" in line.description


def test_time_without_any_rate_is_rejected_with_the_role_and_day() -> None:
    rated = rate_period(contract(), NOV, [entry("t", task="T5", role="Tester")])
    assert rated.lines == [] and rated.billed_time_entry_ids == []
    assert rated.rejected == [
        RejectedEntry(entry_id="t", kind="time", reason="no rate for role Tester on 2026-11-03")
    ]
    no_card = rate_period(contract(rate_card=None), NOV, [entry("d")])
    assert reasons(no_card) == {"d": "no rate for role Developer on 2026-11-03"}


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
        "closed": "task T3 is closed",
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


# -- fixed fee and milestones --------------------------------------------------------------------


def test_fixed_fee_time_is_covered_not_billed_by_the_hour() -> None:
    terms = contract(
        billing_type=BillingType.FIXED_FEE,
        milestones=[milestone("M1", "12000", MilestoneStatus.COMPLETED, date(2026, 11, 20))],
    )
    rated = rate_period(
        terms,
        NOV,
        [entry("a", hours="8"), entry("b", task="T2", hours="4"), entry("c", task="T3")],
    )
    assert [(ln.description, ln.net) for ln in rated.lines] == [
        ("Milestone: Phase M1", gbp("12000.00"))
    ]
    assert rated.covered_time_entry_ids == ["a", "b"]
    assert rated.billed_time_entry_ids == ["a", "b"]  # so the PSA marks them and moves on
    assert rated.covered_hours == Decimal("12") and rated.hours == 0
    assert reasons(rated) == {"c": "task T3 is closed"}
    assert rated.billed_milestone_ids == ["M1"]


def test_a_fixed_fee_task_inside_a_time_and_materials_contract_is_covered() -> None:
    rated = rate_period(contract(), NOV, [entry("t", task="T6"), entry("d", hours="1")])
    assert rated.covered_time_entry_ids == ["t"]
    assert rated.billed_time_entry_ids == ["d", "t"]
    assert [ln.quantity for ln in rated.lines] == [Decimal("1")]


def test_milestones_completed_by_the_period_end_are_billed_once_each() -> None:
    completed = MilestoneStatus.COMPLETED
    terms = contract(
        billing_type=BillingType.MILESTONE,
        milestones=[
            milestone("M1", "5000", completed, date(2026, 11, 30)),
            milestone("M0", "2500.50", completed, date(2026, 9, 1)),  # late, still unbilled
            milestone("M2", "7000", completed, date(2026, 12, 1)),  # next period's
            milestone("M3", "1000", MilestoneStatus.PLANNED, None),
            milestone("M4", "1000", MilestoneStatus.INVOICED, date(2026, 11, 2)),
            milestone("M5", "1000", MilestoneStatus.CANCELLED, None),
            milestone("M6", "1000", completed, None),
        ],
    )
    rated = Rater(terms, NOV).finish()
    assert [(ln.id, ln.quantity, ln.unit_price) for ln in rated.lines] == [
        ("milestone:M1", Decimal(1), gbp("5000")),
        ("milestone:M0", Decimal(1), gbp("2500.50")),
    ]
    assert rated.billed_milestone_ids == ["M0", "M1"]
    assert rated.rejected == [
        RejectedEntry(
            entry_id="M6",
            kind="milestone",
            reason="milestone Phase M6 is completed but has no completion date",
        )
    ]
    assert rated.subtotal == gbp("7500.50") and rated.tax == gbp("1500.10")


def test_time_and_materials_contracts_bill_their_milestones_too() -> None:
    terms = contract(
        milestones=[milestone("M1", "1000", MilestoneStatus.COMPLETED, date(2026, 11, 2))]
    )
    rated = rate_period(terms, NOV, [entry("e", hours="1")])
    assert [ln.id for ln in rated.lines] == ["time:T1:Developer:160.00", "milestone:M1"]
    assert rated.subtotal == gbp("1160.00")


# -- expenses ------------------------------------------------------------------------------------


def test_expenses_pass_through_per_category_with_the_contracts_markup() -> None:
    terms = contract(
        expense_rules=[
            ExpenseRule(category="travel", markup_percent="10"),
            ExpenseRule(category="*", markup_percent="2.5"),
            ExpenseRule(category="meals", billable=False),
        ]
    )
    rated = rate_period(
        terms,
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
        ("Lodging expenses (1, 2.5 % markup)", Decimal(1), gbp("123.00")),
        ("Travel expenses (3, 10 % markup)", Decimal(1), gbp("160.22")),  # 145.65 x 1.1
    ]
    assert rated.billed_expense_ids == ["x1", "x2", "x3", "x4"]
    assert reasons(rated) == {
        "x5": "expense category meals is not billable",
        "x6": "currency EUR differs from the contract's GBP",
        "x8": "not approved",
        "x9": "outside period 2026-11",
    }
    assert {r.kind for r in rated.rejected} == {"expense"}


def test_expenses_without_a_rule_pass_through_at_cost() -> None:
    rated = rate_period(contract(), NOV, [], [expense("x", "taxi", "12.345")])
    [line] = rated.lines
    assert line.description == "Taxi expenses (1)"
    assert line.unit_price == gbp("12.35") and line.id == "expense:taxi"


def test_one_category_spelt_two_ways_is_one_line_labelled_alike_in_any_order() -> None:
    spent = [expense("a", "it equipment", "10"), expense("b", "IT equipment", "5")]
    for order in (spent, spent[::-1]):
        [line] = rate_period(contract(), NOV, [], order).lines
        assert line.description == "IT equipment expenses (2)"
        assert line.unit_price == gbp("15.00") and line.id == "expense:it equipment"


# -- the not-to-exceed cap ------------------------------------------------------------------------


def capped(cap: str, before: str | None = None) -> RatedPeriod:
    """1600.00 of time plus 100.00 of travel: 1700.00 net before the cap."""
    terms = contract(
        not_to_exceed=gbp(cap), billed_to_date=gbp(before) if before is not None else None
    )
    return rate_period(terms, NOV, [entry("e", hours="10")], [expense("x", "travel", "100")])


def test_under_and_at_the_cap_nothing_is_cut() -> None:
    for rated in (capped("5000", "3300"), capped("1700"), capped("10000")):
        assert rated.overage == gbp("0")
        assert rated.subtotal == gbp("1700.00") and len(rated.lines) == 2


def test_over_the_cap_a_negative_line_cuts_the_overage() -> None:
    rated = capped("10000", "8500.005")  # 1499.995 left, rounded to the penny: 1500.00
    assert rated.overage == gbp("200.00")
    cap_line = rated.lines[-1]
    assert cap_line.description.startswith("Not-to-exceed cap adjustment")
    assert (cap_line.quantity, cap_line.unit_price) == (Decimal(1), gbp("-200.00"))
    assert cap_line.tax_rate == Decimal("0.20") and cap_line.tax == gbp("-40.00")
    assert rated.subtotal == gbp("1500.00")
    assert rated.total == gbp("1800.00")
    assert_totals_are_sums(rated)


def test_billed_to_date_over_the_cap_makes_everything_overage() -> None:
    rated = capped("1000", "1200")
    assert rated.overage == gbp("1700.00")
    assert rated.subtotal == gbp("0.00") and rated.total == gbp("0.00")
    assert rated.billed_time_entry_ids == ["e"]  # settled: the customer owes nothing more


# -- currencies and rounding ---------------------------------------------------------------------


def test_yen_rounds_to_whole_units() -> None:
    terms = contract(currency="JPY", rate_card=card("JPY", dev="12345"), tax_rate="0.10")
    rated = rate_period(terms, NOV, [entry("e", hours="0.1")])
    [line] = rated.lines
    assert line.unit_price == Money.of("12345", "JPY")
    assert line.description == "Development — Developer (0.1 h at 12345 JPY)"
    assert line.net.amount == Decimal("1235")  # 1234.5, half up
    assert line.tax.amount == Decimal("124")  # 123.5, half up
    assert rated.total == Money.of("1359", "JPY")
    assert_totals_are_sums(rated)


def test_kuwaiti_dinar_rounds_to_three_places() -> None:
    terms = contract(
        currency="KWD",
        rate_card=card("KWD", dev="12.3455"),
        tax_rate="0.05",
        expense_rules=[ExpenseRule(category="travel", markup_percent="10")],
    )
    rated = rate_period(
        terms, NOV, [entry("e", hours="1.5")], [expense("x", "travel", "10.005", currency="KWD")]
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


def test_twenty_thousand_entries_rated_page_by_page_give_a_small_result() -> None:
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
    assert len(RatedPeriod.model_validate(rated.model_dump()).model_dump_json()) < 250_000
    assert len(rated.model_dump_json(include={"lines"})) < 1_000


# -- properties ------------------------------------------------------------------------------------

DAYS = [date(2026, 10, 30) + timedelta(days=n) for n in range(35)]


@st.composite
def time_entries(draw: st.DrawFn) -> TimeEntry:
    approved = draw(st.booleans()) or draw(st.booleans())
    return entry(
        f"e{draw(st.integers(0, 40))}",  # a small id pool: repeats and conflicts happen
        task=draw(st.sampled_from(["T1", "T2", "T3", "T4", "T5", "T6", "99", None])),
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


RULES = [
    ExpenseRule(category="travel", markup_percent="12.5"),
    ExpenseRule(category="meals", billable=False),
    ExpenseRule(category="*", markup_percent="3"),
]


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
    terms = contract(
        expense_rules=RULES,
        not_to_exceed=gbp("5000"),
        milestones=[milestone("M1", "300", MilestoneStatus.COMPLETED, date(2026, 11, 9))],
    )
    expected = rate_period(terms, NOV, entries, spent)
    shuffled, shuffled_spent = list(entries), list(spent)
    rnd.shuffle(shuffled)
    rnd.shuffle(shuffled_spent)
    rater = Rater(terms, NOV)
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
    terms = contract(
        currency=currency,
        rate_card=card(currency, dev=dev_rate),
        tax_rate=tax,
        expense_rules=RULES,
        not_to_exceed=Money.of(cap, currency) if cap is not None else None,
        billed_to_date=Money.of(before, currency) if before is not None else None,
    )
    spent = [x.model_copy(update={"amount": Money.of(x.amount.amount, currency)}) for x in spent]
    rated = rate_period(terms, NOV, entries, spent)
    assert_totals_are_sums(rated)
    uncapped = rate_period(terms.model_copy(update={"not_to_exceed": None}), NOV, entries, spent)
    assert rated.overage == uncapped.subtotal - rated.subtotal
    if cap is None:
        assert rated.overage.is_zero()
    else:
        before_amount = Decimal(before or 0)
        room = max(Money.of(Decimal(cap) - before_amount, currency).rounded(), Money.zero(currency))
        assert rated.subtotal == min(uncapped.subtotal, room)
    assert set(rated.billed_time_entry_ids).isdisjoint(r.entry_id for r in rated.rejected)
    assert set(rated.covered_time_entry_ids) <= set(rated.billed_time_entry_ids)
    assert rated.hours == sum(
        (ln.quantity for ln in rated.lines if (ln.id or "").startswith("time:")), Decimal(0)
    )
