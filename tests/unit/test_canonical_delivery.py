"""Delivery: projects, tasks, time entries, expenses and change orders."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from canonical import (
    BillingType,
    Expense,
    Milestone,
    Money,
    NoRate,
    Project,
    RateCard,
    RateCardEntry,
    Task,
    TimeEntry,
    rate_time,
)


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def card() -> RateCard:
    return RateCard(
        currency="EUR",
        entries=[
            RateCardEntry(role="consultant", rate=eur("140"), effective_from=date(2025, 1, 1)),
            RateCardEntry(role="architect", rate=eur("200"), effective_from=date(2025, 1, 1)),
        ],
    )


def project(**over: Any) -> Project:
    return Project.model_validate(
        {
            "id": "P-1",
            "name": "Globex rollout",
            "customer_id": "cust-1",
            "legal_entity_code": "FR01",
            "currency": "EUR",
            "budget": eur("50000"),
            "rate_card": card(),
            "tasks": [
                Task(name="Design", role="architect", planned_hours="40", id="T1"),
                Task(name="Build", role="consultant", planned_hours="200", id="T2"),
            ],
            "billing_type": "time_and_materials",
            "start_date": date(2025, 4, 1),
            "end_date": date(2025, 12, 31),
        }
        | over
    )


def time_entry(**over: Any) -> TimeEntry:
    return TimeEntry.model_validate(
        {
            "id": "TE-1",
            "project_id": "P-1",
            "task_id": "T2",
            "employee": "lee@firm.example",
            "role": "consultant",
            "work_date": date(2025, 4, 2),
            "hours": "7.5",
            "billable": True,
            "approved": True,
        }
        | over
    )


# Time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "fragment"),
    [
        ("-2", "greater than 0"),
        ("0", "greater than 0"),
        ("24.01", "less than or equal to 24"),
        (25, "less than or equal to 24"),
        (7.5, "floats are not accepted"),
        ("seven", "valid decimal"),
    ],
)
def test_bad_hours_are_refused_naming_the_field(hours: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        time_entry(hours=hours)
    err = first_error(exc)
    assert err["loc"] == ("hours",)
    assert fragment in err["msg"]


def test_a_full_day_is_allowed() -> None:
    assert time_entry(hours="24").hours == Decimal(24)


def test_time_cannot_be_billed_before_approval() -> None:
    with pytest.raises(ValidationError) as exc:
        time_entry(approved=False, billed=True)
    err = first_error(exc)
    assert err["loc"] == ("billed",)
    assert "before it is approved" in err["msg"]


def test_time_is_priced_at_the_rate_effective_on_the_work_date() -> None:
    rates = RateCard(
        currency="EUR",
        entries=[
            RateCardEntry(
                role="consultant",
                rate=eur("140"),
                effective_from=date(2025, 1, 1),
                effective_to=date(2025, 6, 30),
            ),
            RateCardEntry(role="consultant", rate=eur("150.333"), effective_from=date(2025, 7, 1)),
        ],
    )
    assert time_entry(work_date=date(2025, 6, 30)).amount(rates) == eur("1050.00")
    assert time_entry(work_date=date(2025, 7, 1)).amount(rates) == eur("1127.50")  # 1127.4975
    with pytest.raises(NoRate, match="'designer' effective on 2025-04-02"):
        time_entry(role="designer").amount(rates)


def test_rate_time_counts_only_approved_billable_unbilled_time() -> None:
    entries = [
        time_entry(id="a", hours="8"),
        time_entry(id="b", hours="2", role="architect"),
        time_entry(id="c", hours="5", approved=False),
        time_entry(id="d", hours="5", billable=False),
        time_entry(id="e", hours="5", billed=True),
    ]
    assert rate_time(entries, card()) == eur("1520.00")
    assert rate_time([], card()) == eur("0")


# Projects ------------------------------------------------------------------------------------


def test_project_happy_path() -> None:
    p = project()
    assert p.task("T2").name == "Build"
    assert p.planned_hours() == Decimal(240)
    assert p.billing_type is BillingType.TIME_AND_MATERIALS
    with pytest.raises(KeyError, match="no task 'T9'"):
        p.task("T9")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("budget", Money.of("50000", "USD"), "EUR vs USD"),
        ("budget", eur("-1"), "must not be negative"),
        ("rate_card", RateCard(currency="GBP"), "rate card currency GBP"),
        ("tasks", [Task(name="x", rate=Money.of("1", "SEK"))], "tasks[0].rate"),
        ("tasks", [Task(name="x", id="T1"), Task(name="y", id="T1")], "unique"),
        (
            "milestones",
            [Milestone(id="M", name="m", amount=Money.of("1", "JPY"))],
            "milestones[0].amount",
        ),
        ("end_date", date(2025, 3, 1), "before start_date"),
        ("billing_type", "hourly", "time_and_materials"),
    ],
)
def test_project_validation_names_the_field(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        project(**{field: value})
    err = first_error(exc)
    assert err["loc"] == (field,)
    assert fragment in err["msg"]


def test_task_planned_hours_must_be_positive() -> None:
    with pytest.raises(ValidationError) as exc:
        Task(name="Build", planned_hours="-1")
    assert first_error(exc)["loc"] == ("planned_hours",)


# Expenses ------------------------------------------------------------------------------------


def test_expense_markup_and_rules() -> None:
    expense = Expense(
        id="X1",
        project_id="P-1",
        employee="lee",
        incurred_on=date(2025, 4, 3),
        category="travel",
        amount=eur("120.10"),
        markup_percent="10",
        approved=True,
    )
    assert expense.billable_amount == eur("132.11")
    with pytest.raises(ValidationError) as exc:
        Expense(
            id="X1",
            project_id="P-1",
            employee="lee",
            incurred_on=date(2025, 4, 3),
            category="travel",
            amount=eur("0"),
        )
    assert first_error(exc)["loc"] == ("amount",)
    with pytest.raises(ValidationError) as exc:
        Expense(
            id="X1",
            project_id="P-1",
            employee="lee",
            incurred_on=date(2025, 4, 3),
            category="travel",
            amount=eur("1"),
            billed=True,
        )
    assert first_error(exc)["loc"] == ("billed",)


# Change orders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        Task(
            name="Build",
            role="consultant",
            planned_hours="12.5",
            rate=eur("150"),
            id="T1",
            billable=False,
            milestone_id="M1",
        ),
        project(
            milestones=[Milestone(id="M1", name="m", amount=eur("1.50"))],
            opportunity_id="006A",
            po_number="PO",
            external_ids={"psa": "12"},
        ),
        time_entry(
            description="Workshop", updated_at=datetime(2025, 4, 2, 18, tzinfo=UTC), billed=True
        ),
        Expense(
            id="X1",
            project_id="P-1",
            employee="lee",
            incurred_on=date(2025, 4, 3),
            category="travel",
            amount=eur("120.10"),
            markup_percent="2.5",
            receipt_url="https://r.example/1",
            description="Train",
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_json_round_trip(model: Any) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model
