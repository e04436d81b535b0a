"""Money: an exact ``Decimal`` amount in one ISO 4217 currency.

Amounts never pass through ``float`` (binary floats cannot hold 0.10 exactly) and two
currencies never mix silently: arithmetic across currencies raises ``CurrencyMismatch``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator, Field

from canonical._base import CanonicalModel
from canonical.errors import CurrencyMismatch

__all__ = [
    "MINOR_UNITS",
    "CurrencyCode",
    "ExactDecimal",
    "Money",
    "NonNegativeMoney",
    "Percent",
    "PositiveDecimal",
    "PositiveMoney",
    "TaxRate",
    "check_same_currency",
    "minor_unit",
    "sum_money",
    "to_decimal",
]

# ISO 4217 active codes and their minor units (digits after the decimal point). Funds codes
# and precious metals are left out: no professional-services invoice is issued in them.
_ZERO_DECIMALS = """
BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF
"""
_THREE_DECIMALS = """
BHD IQD JOD KWD LYD OMR TND
"""
_TWO_DECIMALS = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN
BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR
LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD XCG YER ZAR ZMW
ZWG
"""
MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


def to_decimal(value: Any) -> Any:
    """Admit str, int and Decimal; refuse float (and bool, which is an int in disguise).

    Non-numeric inputs are passed through so pydantic reports its own, precise error.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, float):
        raise ValueError(
            f"floats are not accepted for exact amounts (got {value!r}); "
            "pass a string or Decimal such as '12.50'"
        )
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    return value


def _normalise_currency(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _check_currency(code: str) -> str:
    if code not in MINOR_UNITS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


CurrencyCode = Annotated[str, BeforeValidator(_normalise_currency), AfterValidator(_check_currency)]
"""An ISO 4217 code; lower-case input (as Stripe sends it) is upper-cased first."""

ExactDecimal = Annotated[Decimal, BeforeValidator(to_decimal), Field(allow_inf_nan=False)]
PositiveDecimal = Annotated[Decimal, BeforeValidator(to_decimal), Field(gt=0, allow_inf_nan=False)]
Percent = Annotated[Decimal, BeforeValidator(to_decimal), Field(ge=0, le=100)]
TaxRate = Annotated[Decimal, BeforeValidator(to_decimal), Field(ge=0, le=1)]
"""A tax rate as a fraction: ``Decimal("0.20")`` is 20 %."""


def minor_unit(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (2 for EUR, 0 for JPY, 3 for KWD)."""
    return MINOR_UNITS[_check_currency(currency)]


class Money(CanonicalModel):
    """An amount in one currency. JSON: ``{"amount": "12.50", "currency": "EUR"}``."""

    amount: ExactDecimal
    currency: CurrencyCode

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Self:
        return cls(amount=amount, currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Self:
        return cls(amount=Decimal(0), currency=currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(self.currency, other.currency)

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __mul__(self, factor: Decimal | int) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, Decimal | int):
            # Money * Money and Money * float have no business meaning; refuse loudly.
            return NotImplemented
        return Money(amount=self.amount * factor, currency=self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    @property
    def minor_unit(self) -> int:
        return MINOR_UNITS[self.currency]

    def rounded(self) -> Money:
        """Round half up to the currency's minor unit, the way invoices are printed."""
        quantum = Decimal(1).scaleb(-self.minor_unit)
        try:
            amount = self.amount.quantize(quantum, rounding=ROUND_HALF_UP)
        except InvalidOperation as exc:  # only for absurdly large amounts
            raise ValueError(f"amount {self.amount} cannot be rounded to {quantum}") from exc
        return Money(amount=amount, currency=self.currency)

    def to_minor(self) -> int:
        """Integer count of minor units (cents), as card processors such as Stripe expect."""
        return int(self.rounded().amount.scaleb(self.minor_unit))

    @classmethod
    def from_minor(cls, units: int, currency: str) -> Self:
        return cls(amount=Decimal(units).scaleb(-minor_unit(currency)), currency=currency)

    def is_zero(self) -> bool:
        return self.amount == 0

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


def _positive(money: Money) -> Money:
    if money.amount <= 0:
        raise ValueError(f"amount must be greater than zero, got {money}")
    return money


def _non_negative(money: Money) -> Money:
    if money.amount < 0:
        raise ValueError(f"amount must not be negative, got {money}")
    return money


PositiveMoney = Annotated[Money, AfterValidator(_positive)]
NonNegativeMoney = Annotated[Money, AfterValidator(_non_negative)]


def sum_money(items: Iterable[Money], currency: str) -> Money:
    """Sum amounts that must all be in ``currency``; an empty sum is zero in that currency."""
    total = Money.zero(currency)
    for item in items:
        total = total + item
    return total


def check_same_currency(currency: str, amounts: Iterable[tuple[str, Money]]) -> None:
    """Raise ``CurrencyMismatch`` naming the first labelled amount not in ``currency``.

    Validators call this with labels such as ``"lines[2].unit_rate"`` so the error says
    where inside the document the stray currency sits.
    """
    for where, money in amounts:
        if money.currency != currency:
            raise CurrencyMismatch(currency, money.currency, where=where)
