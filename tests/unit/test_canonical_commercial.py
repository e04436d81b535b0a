"""Commercial terms: opportunities and their lines, rate cards, milestones, the deal's terms."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from canonical import (
    BillingType,
    ExpensePolicy,
    Milestone,
    MilestoneStatus,
    Money,
    NoRate,
    Opportunity,
    OpportunityLine,
    PaymentTerms,
    RateCard,
    RateCardEntry,
)


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def line(**over: Any) -> OpportunityLine:
    return OpportunityLine.model_validate(
        {
            "id": "L1",
            "service": "Implementation",
            "role": "consultant",
            "quantity": "40",
            "unit_rate": eur("150"),
            "billing_type": "time_and_materials",
        }
        | over
    )


def opportunity(**over: Any) -> Opportunity:
    return Opportunity.model_validate(
        {
            "id": "006A",
            "crm": "salesforce",
            "name": "Globex rollout",
            "account_id": "001A",
            "stage": "Closed Won",
            "close_date": date(2025, 3, 31),
            "currency": "EUR",
            "lines": [line(), line(id="L2", role="architect", quantity="10", unit_rate=eur("200"))],
            "amount": eur("8000"),
            "payment_terms": PaymentTerms(net_days=30),
            "po_number": "PO-77",
            "won": True,
        }
        | over
    )


def entry(role: str, rate: str, start: date, end: date | None = None) -> RateCardEntry:
    return RateCardEntry(role=role, rate=eur(rate), effective_from=start, effective_to=end)


def milestone(ident: str = "M1", amount: str = "5000") -> Milestone:
    return Milestone(
        id=ident, name=f"Milestone {ident}", amount=eur(amount), due_date=date(2025, 6, 30)
    )


# Opportunity lines ---------------------------------------------------------------------------


def test_line_amount_applies_discount_and_rounds() -> None:
    assert line().amount == eur("6000.00")
    discounted = line(quantity="3", unit_rate=eur("33.33"), discount_percent="12.5")
    assert discounted.amount == eur("87.49")  # 99.99 * 0.875 = 87.49125


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("quantity", "0", "greater than 0"),
        ("quantity", "-1", "greater than 0"),
        ("discount_percent", "100.5", "less than or equal to 100"),
        ("discount_percent", "-1", "greater than or equal to 0"),
        ("billing_type", "retainer", "time_and_materials"),
        ("unit_rate", {"amount": "-1", "currency": "EUR"}, "must not be negative"),
    ],
)
def test_line_validation_names_the_field(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        line(**{field: value})
    err = first_error(exc)
    assert err["loc"][0] == field
    assert fragment in err["msg"]


# Opportunity ---------------------------------------------------------------------------------


def test_opportunity_total_is_the_sum_of_lines_and_amount_may_drift() -> None:
    opp = opportunity(amount=eur("7500"))
    assert opp.total() == eur("8000.00")
    assert opp.amount == eur("7500")  # the CRM's figure is kept as given
    assert opp.billing_types() == {BillingType.TIME_AND_MATERIALS}
    assert opp.booking_issues() == []


def test_a_line_in_another_currency_is_refused_naming_the_line() -> None:
    with pytest.raises(ValidationError) as exc:
        opportunity(lines=[line(), line(id="L2", unit_rate=Money.of("150", "USD"))])
    err = first_error(exc)
    assert err["loc"] == ("lines",)
    assert "lines[1].unit_rate" in err["msg"] and "EUR vs USD" in err["msg"]


def test_an_amount_in_another_currency_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        opportunity(amount=Money.of("8000", "GBP"))
    err = first_error(exc)
    assert err["loc"] == ("amount",)
    assert "EUR vs GBP" in err["msg"]


def test_line_ids_are_unique() -> None:
    with pytest.raises(ValidationError) as exc:
        opportunity(lines=[line(), line()])
    err = first_error(exc)
    assert err["loc"] == ("lines",)
    assert "repeats id 'L1'" in err["msg"]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("rate_card", RateCard(currency="USD"), "rate card currency USD"),
        (
            "milestones",
            [Milestone(id="M1", name="x", amount=Money.of("1", "USD"))],
            "milestones[0].amount",
        ),
        ("not_to_exceed", Money.of("1000", "USD"), "EUR vs USD"),
        ("lines", [line(not_to_exceed=Money.of("1000", "USD"))], "lines[0].not_to_exceed"),
    ],
)
def test_the_deals_terms_share_its_currency(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        opportunity(**{field: value})
    err = first_error(exc)
    assert err["loc"] == (field,)
    assert fragment in err["msg"]


def test_opportunity_requires_core_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        opportunity(close_date="soon")
    assert first_error(exc)["loc"] == ("close_date",)
    with pytest.raises(ValidationError) as exc:
        opportunity(probability="120")
    assert first_error(exc)["loc"] == ("probability",)
    with pytest.raises(ValidationError) as exc:
        opportunity(updated_at=datetime(2025, 1, 1))
    assert first_error(exc)["loc"] == ("updated_at",)


def test_booking_issues_list_every_problem() -> None:
    opp = opportunity(
        won=False,
        stage="Negotiation",
        payment_terms=None,
        lines=[line(role=None), line(id="L2", billing_type="milestone")],
    )
    # What the contract's rules say (a milestone line's milestones) `plan_deal` adds.
    assert opp.booking_issues() == [
        "won: opportunity is in stage 'Negotiation', not won",
        "lines[0].role: time-and-materials line needs a role",
        "payment_terms: no payment terms on the deal or its contract",
    ]
    assert opportunity(lines=[]).booking_issues() == ["lines: no line items to deliver or bill"]


# Rate cards ----------------------------------------------------------------------------------


def card() -> RateCard:
    return RateCard(
        currency="EUR",
        entries=[
            entry("consultant", "140", date(2024, 1, 1), date(2024, 12, 31)),
            entry("consultant", "150", date(2025, 1, 1)),
            entry("architect", "200", date(2024, 1, 1)),
        ],
    )


@pytest.mark.parametrize(
    ("role", "on", "rate"),
    [
        ("consultant", date(2024, 1, 1), "140"),
        ("consultant", date(2024, 12, 31), "140"),  # effective_to is inclusive
        ("consultant", date(2025, 1, 1), "150"),
        ("consultant", date(2031, 7, 4), "150"),  # open-ended
        ("architect", date(2024, 6, 1), "200"),
    ],
)
def test_rate_for_picks_the_entry_effective_that_day(role: str, on: date, rate: str) -> None:
    assert card().rate_for(role, on) == eur(rate)


def test_no_rate_names_role_and_date() -> None:
    with pytest.raises(NoRate, match=r"'consultant' effective on 2023-12-31") as exc:
        card().rate_for("consultant", date(2023, 12, 31))
    assert (exc.value.role, exc.value.on) == ("consultant", date(2023, 12, 31))
    with pytest.raises(NoRate, match="'designer'"):
        card().rate_for("designer", date(2025, 1, 1))


def test_overlapping_entries_for_one_role_are_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        RateCard(
            currency="EUR",
            entries=[
                entry("consultant", "140", date(2024, 1, 1), date(2024, 12, 31)),
                entry("consultant", "150", date(2024, 12, 31)),
            ],
        )
    err = first_error(exc)
    assert err["loc"] == ("entries",)
    assert "'consultant' overlap" in err["msg"]
    assert "2024-01-01..2024-12-31 and 2024-12-31..open" in err["msg"]


def test_rate_card_entries_share_its_currency() -> None:
    with pytest.raises(ValidationError) as exc:
        RateCard(
            currency="EUR",
            entries=[
                entry("a", "1", date(2024, 1, 1)),
                RateCardEntry(role="b", rate=Money.of("1", "CHF"), effective_from=date(2024, 1, 1)),
            ],
        )
    err = first_error(exc)
    assert err["loc"] == ("entries",)
    assert "entries[1].rate" in err["msg"] and "EUR vs CHF" in err["msg"]


def test_entry_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValidationError) as exc:
        entry("a", "1", date(2024, 2, 1), date(2024, 1, 31))
    err = first_error(exc)
    assert err["loc"] == ("effective_to",)
    assert "before effective_from" in err["msg"]


# Milestones ---------------------------------------------------------------


def test_milestone_amount_must_be_positive() -> None:
    with pytest.raises(ValidationError) as exc:
        milestone(amount="0")
    err = first_error(exc)
    assert err["loc"] == ("amount",)
    assert "greater than zero" in err["msg"]
    assert not milestone().billable
    assert milestone().model_copy(update={"status": MilestoneStatus.COMPLETED}).billable


@pytest.mark.parametrize(
    "model",
    [
        line(discount_percent="5", description="Phase 1"),
        entry("consultant", "150.00", date(2025, 1, 1), date(2025, 12, 31)),
        card(),
        Milestone(
            id="M1",
            name="Go-live",
            amount=eur("5000.00"),
            due_date=date(2025, 6, 30),
            status="completed",
            completed_on=date(2025, 6, 28),
        ),
        opportunity(
            probability="90",
            owner="sam@firm.example",
            description="Rollout",
            updated_at=datetime(2025, 3, 31, 17, 0, tzinfo=UTC),
            rate_card=card(),
            milestones=[milestone()],
            not_to_exceed=eur("9000"),
            upfront_percent="20",
            end_date=date(2025, 12, 31),
            expense_policy=ExpensePolicy(billable_categories=["travel"], markup_percent="10"),
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_json_round_trip(model: Any) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model


def test_line_amount_is_exact_not_float() -> None:
    amount = line(quantity="0.1", unit_rate=eur("0.3")).amount.amount
    assert amount == Decimal("0.03")


def test_a_deal_recorded_before_the_contracts_fields_still_reads() -> None:
    """Workflow histories hold deals with an empty ``contract_terms``: they replay."""
    recorded = opportunity().model_dump(mode="json") | {"contract_terms": None}
    assert Opportunity.model_validate(recorded) == opportunity()
    with pytest.raises(ValidationError, match="contract_terms"):
        Opportunity.model_validate(recorded | {"contract_terms": {"currency": "EUR"}})
