"""Invoices, their totals and lifecycle, and payments."""

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import product
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import (
    MINOR_UNITS,
    InvalidTransition,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Money,
    Payment,
    can_transition,
    minor_unit,
)

ISSUED = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def inv_line(quantity: str, price: str, rate: str = "0.20", currency: str = "EUR") -> InvoiceLine:
    return InvoiceLine(
        description="Consulting",
        quantity=quantity,
        unit_price=Money.of(price, currency),
        tax_rate=rate,
    )


def invoice(**over: Any) -> Invoice:
    return Invoice.model_validate(
        {
            "id": "INV-1",
            "customer_id": "cust-1",
            "currency": "EUR",
            "lines": [inv_line("7.5", "150.333"), inv_line("1", "99.99", "0.055")],
        }
        | over
    )


def test_line_amounts_round_per_line() -> None:
    line = inv_line("7.5", "150.333")  # 1127.4975
    assert (line.net, line.tax, line.total) == (eur("1127.50"), eur("225.50"), eur("1353.00"))


def test_invoice_totals_are_the_sum_of_rounded_lines() -> None:
    inv = invoice()
    # 1127.50 + 99.99 ; tax 225.50 + 5.49945 -> 5.50
    assert inv.subtotal == eur("1227.49")
    assert inv.tax == eur("231.00")
    assert inv.total == eur("1458.49")
    assert invoice(lines=[]).total == eur("0")


def test_a_credit_line_reduces_the_total() -> None:
    inv = invoice(lines=[inv_line("10", "100"), inv_line("1", "-150")])
    assert (inv.subtotal, inv.tax, inv.total) == (eur("850.00"), eur("170.00"), eur("1020.00"))


def test_a_line_in_another_currency_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        invoice(lines=[inv_line("1", "10"), inv_line("1", "10", currency="GBP")])
    err = first_error(exc)
    assert err["loc"] == ("lines",)
    assert "lines[1].unit_price" in err["msg"] and "EUR vs GBP" in err["msg"]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("quantity", "0", "greater than 0"),
        ("quantity", 1.0, "floats are not accepted"),
        ("tax_rate", "20", "less than or equal to 1"),
        ("tax_rate", "-0.1", "greater than or equal to 0"),
        ("description", "", "at least 1 character"),
    ],
)
def test_line_validation_names_the_field(field: str, value: Any, fragment: str) -> None:
    data = {"description": "x", "quantity": "1", "unit_price": eur("1"), "tax_rate": "0.2"}
    with pytest.raises(ValidationError) as exc:
        InvoiceLine.model_validate(data | {field: value})
    err = first_error(exc)
    assert err["loc"] == (field,)
    assert fragment in err["msg"]


@pytest.mark.parametrize(
    ("over", "field", "fragment"),
    [
        ({"status": "open", "issued_at": ISSUED}, "number", "must have a number"),
        ({"status": "paid", "number": "F-1"}, "issued_at", "must have an issue time"),
        ({"issued_at": datetime(2025, 5, 1, 9, 30)}, "issued_at", "timezone"),
        ({"issued_at": ISSUED, "due_date": date(2025, 4, 30)}, "due_date", "before the issue"),
        ({"status": "sent"}, "status", "draft"),
        ({"currency": "EUR1"}, "currency", "ISO 4217"),
    ],
)
def test_invoice_validation_names_the_field(
    over: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        invoice(**over)
    err = first_error(exc)
    assert err["loc"] == (field,)
    assert fragment in err["msg"]


ALLOWED = {
    ("draft", "open"),
    ("draft", "void"),
    ("open", "paid"),
    ("open", "void"),
    ("open", "uncollectible"),
    ("uncollectible", "paid"),
    ("uncollectible", "void"),
}


@pytest.mark.parametrize(("current", "target"), list(product(InvoiceStatus, InvoiceStatus)))
def test_can_transition_follows_the_lifecycle(
    current: InvoiceStatus, target: InvoiceStatus
) -> None:
    assert can_transition(current, target) is ((current.value, target.value) in ALLOWED)


def test_transition_finalises_then_refuses_going_back() -> None:
    draft = invoice()
    final = draft.transition(
        "open", number="F-2025-001", issued_at=ISSUED, due_date=date(2025, 5, 31)
    )
    assert (final.status, final.number, final.total) == ("open", "F-2025-001", draft.total)
    assert final.transition(InvoiceStatus.OPEN) is final  # a redelivered event is harmless
    paid = final.transition("paid")
    with pytest.raises(InvalidTransition, match="invoice cannot go from 'paid' to 'draft'"):
        paid.transition("draft")
    with pytest.raises(ValidationError) as exc:
        draft.transition("open")  # finalising without a number or an issue time
    assert [e["loc"] for e in exc.value.errors()] == [("number",), ("issued_at",)]


def test_balance_counts_this_invoices_payments_only() -> None:
    inv = invoice()
    payments = [
        Payment(id="pay-1", invoice_id="INV-1", amount=eur("1000"), received_at=ISSUED),
        Payment(id="pay-2", invoice_id="INV-2", amount=eur("50"), received_at=ISSUED),
    ]
    assert inv.balance(payments) == eur("458.49")


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"amount": eur("0")}, "amount"),
        ({"amount": eur("-5")}, "amount"),
        ({"received_at": datetime(2025, 5, 2)}, "received_at"),
        ({"invoice_id": ""}, "invoice_id"),
    ],
)
def test_payment_validation_names_the_field(over: dict[str, Any], field: str) -> None:
    data = {"id": "pay-1", "invoice_id": "INV-1", "amount": eur("10"), "received_at": ISSUED}
    with pytest.raises(ValidationError) as exc:
        Payment.model_validate(data | over)
    assert first_error(exc)["loc"] == (field,)


@pytest.mark.parametrize(
    "model",
    [
        InvoiceLine(
            description="Consulting April",
            quantity="7.5",
            unit_price=eur("150.333"),
            tax_rate="0.2",
            id="l1",
            source_ids=["TE-1", "TE-2"],
        ),
        invoice(
            status="paid",
            number="F-1",
            issued_at=ISSUED,
            due_date=date(2025, 5, 31),
            project_id="P-1",
            legal_entity_code="FR01",
            po_number="PO-77",
            memo="Thanks",
            external_ids={"billing": "in_123"},
        ),
        Payment(
            id="pay-1",
            invoice_id="INV-1",
            amount=eur("10.00"),
            received_at=ISSUED,
            reference="ch_1",
            method="card",
            customer_id="cust-1",
        ),
    ],
    ids=lambda m: type(m).__name__,
)
def test_json_round_trip(model: Any) -> None:
    back = type(model).model_validate_json(model.model_dump_json())
    assert back == model
    if isinstance(model, Invoice):
        assert back.total == model.total


# Property tests ------------------------------------------------------------------------------

currencies = st.sampled_from(sorted(MINOR_UNITS))
quantities = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10_000), places=2)
prices = st.decimals(min_value=Decimal(-10_000), max_value=Decimal(100_000), places=4)
rates = st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=3)


def half_up(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)


@given(
    currency=currencies,
    lines=st.lists(st.tuples(quantities, prices, rates), min_size=0, max_size=8),
)
def test_totals_always_equal_the_sum_of_rounded_lines(
    currency: str, lines: list[tuple[Decimal, Decimal, Decimal]]
) -> None:
    inv = Invoice(
        id="INV",
        customer_id="c",
        currency=currency,
        lines=[
            InvoiceLine(
                description="l",
                quantity=q,
                unit_price=Money(amount=p, currency=currency),
                tax_rate=r,
            )
            for q, p, r in lines
        ],
    )
    nets = [half_up(q * p, currency) for q, p, _ in lines]
    taxes = [half_up(n * r, currency) for n, (_, _, r) in zip(nets, lines, strict=True)]
    assert inv.subtotal.amount == sum(nets, Decimal(0))
    assert inv.tax.amount == sum(taxes, Decimal(0))
    assert inv.total == inv.subtotal + inv.tax
    assert inv.total.amount == sum((ln.total.amount for ln in inv.lines), Decimal(0))
    assert inv.total.rounded() == inv.total  # never more digits than the currency has
