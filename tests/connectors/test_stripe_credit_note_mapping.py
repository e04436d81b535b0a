"""Canonical lines to Stripe credit note lines, and Stripe credit notes back to `Money`."""

from __future__ import annotations

from decimal import Decimal

import pytest

from canonical import InvoiceLine, Money
from connectors.stripe import mapping, wire


def line(quantity: str, price: str, rate: str = "0.19") -> InvoiceLine:
    return InvoiceLine(
        description="Senior consultant",
        quantity=Decimal(quantity),
        unit_price=Money.of(price, "EUR"),
        tax_rate=Decimal(rate),
    )


def test_whole_quantities_go_as_quantity_and_fractions_as_one_unit_at_the_exact_net() -> None:
    params = mapping.credit_note_params(
        "in_1",
        [line("10", "123.45"), line("7.5", "123.45", rate="0")],
        currency="EUR",
        tax_rate_ids={Decimal("0.19"): "txr_19"},
        memo="CO-9",
        reason="order_change",
        idempotency_key="co:9:credit",
    )
    assert params["lines"] == [
        {
            "type": "custom_line_item",
            "description": "Senior consultant",
            "quantity": 10,
            "unit_amount_decimal": "12345",
            "tax_rates": ["txr_19"],
        },
        # Stripe's credit note lines take whole quantities: 7.5 h go as 1 x 925.875 EUR,
        # which Stripe rounds half up to 92588 cents, as it rounded the invoice item.
        {
            "type": "custom_line_item",
            "description": "Senior consultant",
            "quantity": 1,
            "unit_amount_decimal": "92587.5",
        },
    ]
    assert params["metadata"] == {mapping.META_CREDIT_KEY: "co:9:credit"}
    assert (params["memo"], params["reason"]) == ("CO-9", "order_change")


def test_a_line_in_another_currency_is_refused() -> None:
    with pytest.raises(ValueError, match="EUR"):
        mapping.credit_note_params(
            "in_1",
            [
                InvoiceLine(
                    description="x",
                    quantity=Decimal(1),
                    unit_price=Money.of("1", "USD"),
                    tax_rate=Decimal(0),
                )
            ],
            currency="EUR",
            tax_rate_ids={},
            memo=None,
            reason="order_change",
            idempotency_key="k",
        )


def test_a_post_payment_note_splits_into_customer_credit_and_out_of_band() -> None:
    note = wire.CreditNote.model_validate(
        {
            "id": "cn_1",
            "number": "ACME-0001-CN-01",
            "invoice": "in_1",
            "customer": "cus_1",
            "currency": "jpy",
            "status": "issued",
            "type": "post_payment",
            "amount": 1000,
            "subtotal": 1000,
            "total": 1000,
            "out_of_band_amount": 400,
            "post_payment_amount": 1000,
            "created": 1_700_000_000,
            "lines": {"object": "list", "data": [], "has_more": False},
            "metadata": {mapping.META_CREDIT_KEY: "k"},
        }
    )
    mapped = mapping.credit_note_from_stripe(note)
    # JPY has no minor unit: 1000 is 1000 yen.
    assert mapped.total == Money.of("1000", "JPY")
    assert mapped.credit_amount == Money.of("600", "JPY")
    assert mapped.out_of_band_amount == Money.of("400", "JPY")
    assert mapped.idempotency_key == "k"
