"""Credit notes through the Stripe connector, against the stand-in running as its own process."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from canonical import InvoiceLine, Money
from connectors.errors import IdempotencyConflict, ValidationFailed
from connectors.stripe import StripeBilling
from tests.connectors.test_stripe_connector import a_customer, an_invoice, new_open_invoice


def key() -> str:
    return f"co-test:{uuid.uuid4()}"


def hours(quantity: str, rate: str, *, description: str = "Senior consultant") -> InvoiceLine:
    return InvoiceLine(
        description=description,
        quantity=Decimal(quantity),
        unit_price=Money.of(rate, "EUR"),
        tax_rate=Decimal("0.19"),
    )


async def test_credit_note_lowers_what_remains_and_the_rebill_bills_the_new_rate(
    stripe_billing: StripeBilling,
) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    before = await stripe_billing.get_stripe_invoice(invoice_id)
    assert before.amount_remaining == 298_680  # 925.88 + 175.92 + 1500 + 285 + 100.00

    note = await stripe_billing.create_credit_note(
        invoice_id, [hours("7.5", "123.45")], memo="CO-9: rate 123.45 -> 140", idempotency_key=key()
    )
    assert note.id.startswith("cn_")
    assert note.type == "pre_payment" and note.status == "issued"
    # 7.5 h x 123.45 = 925.875 -> 925.88 net (half up, as the invoice item), 19 % -> 175.92.
    assert note.subtotal == Money.of("925.88", "EUR")
    assert note.total == Money.of("1101.80", "EUR")
    assert note.credit_amount == Money.zero("EUR")
    assert note.memo == "CO-9: rate 123.45 -> 140"
    (line,) = note.lines
    assert (line.net, line.tax) == (Money.of("925.88", "EUR"), Money.of("175.92", "EUR"))

    after = await stripe_billing.get_stripe_invoice(invoice_id)
    assert after.amount_remaining == 298_680 - 110_180
    assert after.total == before.total  # never edited
    assert after.lines == before.lines

    # The re-bill is a normal new invoice at the new rate.
    customer = a_customer()
    customer_id = await stripe_billing.create_customer(customer, idempotency_key=key())
    rebill = an_invoice(customer).model_copy(update={"lines": [hours("7.5", "140")]})
    rebill_id = await stripe_billing.create_invoice(
        rebill, customer_id=customer_id, idempotency_key=key(), days_until_due=30
    )
    finalized = await stripe_billing.finalize_invoice(rebill_id, idempotency_key=key())
    assert finalized.total == Money.of("1249.50", "EUR")  # 1050.00 + 199.50


async def test_a_retried_credit_note_is_one_credit_note(stripe_billing: StripeBilling) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    same = key()
    first = await stripe_billing.create_credit_note(
        invoice_id, [hours("2", "100")], memo="retry", idempotency_key=same
    )
    second = await stripe_billing.create_credit_note(
        invoice_id, [hours("2", "100")], memo="retry", idempotency_key=same
    )
    assert second == first
    with pytest.raises(IdempotencyConflict):
        await stripe_billing.create_credit_note(
            invoice_id, [hours("3", "100")], memo="retry", idempotency_key=same
        )
    notes = await stripe_billing.list_credit_notes(invoice_id)
    assert [n.id for n in notes] == [first.id]
    assert notes[0].idempotency_key == same
    after = await stripe_billing.get_stripe_invoice(invoice_id)
    assert after.amount_remaining == 298_680 - 23_800  # 200.00 + 38.00 tax


async def test_over_crediting_is_refused_naming_the_field(stripe_billing: StripeBilling) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    with pytest.raises(ValidationFailed) as refused:
        await stripe_billing.create_credit_note(
            invoice_id, [hours("100", "123.45")], memo=None, idempotency_key=key()
        )
    assert refused.value.field == "lines"
    assert not refused.value.retryable
    assert "exceeds" in refused.value.message and "298680" in refused.value.message
    assert await stripe_billing.list_credit_notes(invoice_id) == []

    with pytest.raises(ValidationFailed) as wrong_currency:
        await stripe_billing.create_credit_note(
            invoice_id,
            [
                InvoiceLine(
                    description="x",
                    quantity=Decimal(1),
                    unit_price=Money.of("1", "USD"),
                    tax_rate=Decimal(0),
                )
            ],
            memo=None,
            idempotency_key=key(),
        )
    assert wrong_currency.value.field == "lines"


async def test_voiding_a_credit_note_gives_back_what_it_took(stripe_billing: StripeBilling) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    note = await stripe_billing.create_credit_note(
        invoice_id, [hours("1", "100")], memo=None, idempotency_key=key()
    )
    undo = key()
    voided = await stripe_billing.void_credit_note(note.id, idempotency_key=undo)
    again = await stripe_billing.void_credit_note(note.id, idempotency_key=key())
    assert voided.status == again.status == "void"
    after = await stripe_billing.get_stripe_invoice(invoice_id)
    assert after.amount_remaining == 298_680


async def test_credit_on_a_paid_invoice_goes_to_the_customer_balance(
    stripe_billing: StripeBilling,
) -> None:
    invoice_id, _ = await new_open_invoice(stripe_billing)
    await stripe_billing.pay_invoice(invoice_id, idempotency_key=key(), paid_out_of_band=True)
    note = await stripe_billing.create_credit_note(
        invoice_id, [hours("1", "100")], memo=None, idempotency_key=key()
    )
    assert note.type == "post_payment"
    assert note.credit_amount == Money.of("119.00", "EUR")
    paid = await stripe_billing.get_stripe_invoice(invoice_id)
    customer = await stripe_billing.get_customer(paid.customer)
    assert paid.status == "paid"
    assert customer.balance == -11_900  # negative: credit the customer can spend
