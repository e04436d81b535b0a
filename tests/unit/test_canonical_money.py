"""Money: exact amounts, one currency at a time, rounding to the minor unit, JSON without floats."""

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import MINOR_UNITS, CurrencyMismatch, Money, minor_unit, sum_money


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, object]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


@pytest.mark.parametrize(
    ("amount", "expected"), [("12.50", "12.5"), (12, "12"), (Decimal("12.50"), "12.5")]
)
def test_accepts_strings_ints_and_decimals(amount: object, expected: str) -> None:
    money = Money(amount=amount, currency="EUR")
    assert money.amount == Decimal(expected)
    assert isinstance(money.amount, Decimal)


def test_float_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError) as exc:
        Money(amount=12.5, currency="EUR")
    err = first_error(exc)
    assert err["loc"] == ("amount",)
    assert "floats are not accepted" in str(err["msg"])


@pytest.mark.parametrize("amount", [True, "NaN", "Infinity", Decimal("-Infinity"), "twelve"])
def test_non_numbers_are_refused(amount: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Money(amount=amount, currency="EUR")
    assert first_error(exc)["loc"] == ("amount",)


def test_currency_is_upper_cased_and_checked_against_iso_4217() -> None:
    assert Money.of("1", " usd ").currency == "USD"
    with pytest.raises(ValidationError) as exc:
        Money.of("1", "XYZ")
    err = first_error(exc)
    assert err["loc"] == ("currency",)
    assert "'XYZ' is not an ISO 4217 currency code" in str(err["msg"])


def test_the_table_knows_the_currencies_we_bill_in() -> None:
    two = [
        "USD",
        "EUR",
        "GBP",
        "CAD",
        "AUD",
        "CHF",
        "SEK",
        "NOK",
        "DKK",
        "NZD",
        "SGD",
        "INR",
        "BRL",
        "MXN",
        "ZAR",
        "PLN",
        "CZK",
        "HUF",
    ]
    assert {c: MINOR_UNITS[c] for c in two} == dict.fromkeys(two, 2)
    assert (minor_unit("JPY"), minor_unit("KWD"), minor_unit("BHD")) == (0, 3, 3)


def test_same_currency_arithmetic() -> None:
    a, b = Money.of("10.10", "EUR"), Money.of("0.20", "EUR")
    assert a + b == Money.of("10.30", "EUR")
    assert a - b == Money.of("9.90", "EUR")
    assert a * Decimal("1.5") == Money.of("15.15", "EUR")
    assert 3 * b == Money.of("0.60", "EUR")
    assert -b == Money.of("-0.20", "EUR")
    assert b < a and a >= b
    assert sum_money([a, b, b], "EUR") == Money.of("10.50", "EUR")
    assert sum_money([], "JPY") == Money.zero("JPY")


def test_two_currencies_are_never_mixed() -> None:
    eur, usd = Money.of("1", "EUR"), Money.of("1", "USD")
    with pytest.raises(CurrencyMismatch, match="EUR vs USD") as exc:
        _ = eur + usd
    assert (exc.value.expected, exc.value.got) == ("EUR", "USD")
    assert isinstance(exc.value, ValueError)
    with pytest.raises(CurrencyMismatch, match="USD vs EUR"):
        _ = usd - eur
    with pytest.raises(CurrencyMismatch):
        _ = eur < usd
    with pytest.raises(CurrencyMismatch, match="EUR vs USD"):
        sum_money([eur, usd], "EUR")
    assert eur != usd


def test_multiplying_by_a_float_or_by_money_is_refused() -> None:
    eur = Money.of("1", "EUR")
    with pytest.raises(TypeError):
        _ = eur * 1.5  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = eur * eur  # type: ignore[operator]


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),
        ("1.004", "USD", "1.00"),
        ("-1.005", "USD", "-1.01"),  # half up means away from zero
        ("2.5", "JPY", "3"),
        ("0.0005", "KWD", "0.001"),
        ("7", "EUR", "7.00"),
    ],
)
def test_rounded_goes_half_up_to_the_minor_unit(amount: str, currency: str, expected: str) -> None:
    rounded = Money.of(amount, currency).rounded()
    assert rounded == Money.of(expected, currency)
    assert str(rounded.amount) == expected


def test_minor_units_for_card_processors() -> None:
    assert Money.of("12.345", "EUR").to_minor() == 1235
    assert Money.of("500", "JPY").to_minor() == 500
    assert Money.from_minor(1234, "KWD") == Money.of("1.234", "KWD")


def test_json_carries_the_amount_as_a_string() -> None:
    money = Money.of("12.50", "EUR")
    assert json.loads(money.model_dump_json()) == {"amount": "12.50", "currency": "EUR"}
    back = Money.model_validate_json(money.model_dump_json())
    assert back == money and str(back.amount) == "12.50"


def test_a_float_in_json_is_refused_too() -> None:
    with pytest.raises(ValidationError) as exc:
        Money.model_validate_json('{"amount": 0.1, "currency": "EUR"}')
    assert first_error(exc)["loc"] == ("amount",)


def test_money_is_frozen_and_strict_about_fields() -> None:
    money = Money.of("1", "EUR")
    with pytest.raises(ValidationError):
        money.amount = Decimal(2)  # type: ignore[misc]
    with pytest.raises(ValidationError) as exc:
        Money(amount="1", currency="EUR", note="x")  # type: ignore[call-arg]
    assert first_error(exc)["loc"] == ("note",)


amounts = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=6)
currencies = st.sampled_from(sorted(MINOR_UNITS))


@given(amount=amounts, currency=currencies)
def test_rounding_is_exact_to_the_minor_unit_and_within_half_a_unit(
    amount: Decimal, currency: str
) -> None:
    money = Money(amount=amount, currency=currency)
    rounded = money.rounded()
    unit = Decimal(1).scaleb(-minor_unit(currency))
    assert rounded.amount % unit == 0
    assert abs(rounded.amount - amount) <= unit / 2
    assert rounded.rounded() == rounded


@given(amount=amounts, currency=currencies)
def test_json_round_trip_keeps_the_exact_value(amount: Decimal, currency: str) -> None:
    money = Money(amount=amount, currency=currency)
    back = Money.model_validate_json(money.model_dump_json())
    assert back == money
    assert back.amount.as_tuple() == money.amount.as_tuple()
