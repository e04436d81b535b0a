"""Correcting a posted invoice in Tryton: a posted credit note and a posted re-bill at the
new prices, the original untouched, one pair per key however often it is asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from canonical import Address, Customer, Invoice, InvoiceLine, InvoiceStatus, Money, PaymentTerms
from connectors.errors import IdempotencyConflict, ValidationFailed
from connectors.tryton import ErpInvoiceInfo, TrytonErp, mapping
from devstack import tryton as devtryton
from tests.fixtures.tryton import TrytonServer

UK = devtryton.load_legal_entities()["NW-UK"]


@pytest.fixture
async def erp(tryton_server: TrytonServer) -> AsyncIterator[TrytonErp]:
    client = await tryton_server.logged_in_client()
    try:
        yield TrytonErp(client)
    finally:
        await client.aclose()


def gbp(amount: str) -> Money:
    return Money.of(amount, "GBP")


async def posted_invoice(erp: TrytonErp, *lines: InvoiceLine, post: bool = True) -> ErpInvoiceInfo:
    """A fresh UK customer's invoice of these lines, made as q2c makes them, and posted."""
    ref = f"sf:001{uuid.uuid4().hex[:12]}"
    customer = Customer(
        id=f"acct-{ref[-6:]}",
        name=f"Globex {ref[-6:]}",
        legal_entity=UK,
        addresses=[Address(street="1 Dock Road", city="London", postal_code="E14", country="GB")],
        currency="GBP",
        payment_terms=PaymentTerms(net_days=30),
    )
    party_id = await erp.upsert_customer(customer, ref)
    invoice = Invoice(
        id=f"inv-{uuid.uuid4().hex[:8]}",
        customer_id=customer.id,
        currency="GBP",
        lines=list(lines),
        status=InvoiceStatus.OPEN,
        number=f"{uuid.uuid4().hex[:8].upper()}-0001",
        project_id="prj-correction",
        issued_at=datetime.now(UTC),
        legal_entity_code="NW-UK",
    )
    created = await erp.create_invoice(
        invoice,
        party_id=party_id,
        reference=invoice.number or "",
        idempotency_key=f"{ref}:erp",
        payment_net_days=30,
    )
    if post:
        await erp.post_invoice(created.id)
    return await erp.get_invoice_info(created.id)


def hours(description: str, quantity: str, rate: str) -> InvoiceLine:
    return InvoiceLine(
        description=description,
        quantity=Decimal(quantity),
        unit_price=gbp(rate),
        tax_rate=Decimal("0.20"),
    )


async def corrections_of(erp: TrytonErp, invoice_id: int) -> list[int]:
    rows = await erp.client.search_read(
        "account.invoice",
        [("comment", "like", f"%{mapping.CORRECTS_LABEL} {invoice_id}%")],
        ["comment"],
    )
    return sorted(
        int(r["id"])
        for r in rows
        if mapping.label_value(r["comment"], mapping.CORRECTS_LABEL) == str(invoice_id)
    )


async def test_a_rate_change_credits_the_line_and_rebills_it_at_the_new_rate(
    erp: TrytonErp,
) -> None:
    original = await posted_invoice(
        erp, hours("Discovery", "10", "157.50"), hours("Build", "5", "140")
    )
    assert original.state == "posted"
    assert original.total == gbp("2730.00")  # (1575 + 700) x 1.2
    discovery, _build = original.line_ids
    key = f"co:{uuid.uuid4().hex[:8]}:correct"

    corrected = await erp.correct_invoice(
        original.id, {discovery: gbp("170.00")}, reason="CO-7 retroactive rate", idempotency_key=key
    )

    credit, rebill = corrected.credit_note, corrected.rebill
    assert corrected.invoice_id == original.id
    assert (credit.state, rebill.state) == ("posted", "posted")
    # Numbered as Tryton numbers them: the credit note on the customer credit note sequence.
    assert credit.number and credit.number.startswith("NW-UK-CN")
    assert rebill.number and rebill.number.startswith("NW-UK-INV")
    assert (credit.untaxed, credit.tax, credit.total) == (
        gbp("-1575.00"),
        gbp("-315.00"),
        gbp("-1890.00"),
    )
    assert (rebill.untaxed, rebill.tax, rebill.total) == (
        gbp("1700.00"),
        gbp("340.00"),
        gbp("2040.00"),
    )
    assert credit.idempotency_key == f"{key}:credit"
    assert rebill.idempotency_key == f"{key}:rebill"
    # Billed in all: 10 h at the new rate and 5 h at the unchanged one, with tax.
    net = original.total + credit.total + rebill.total
    assert net == gbp("2880.00")  # (1700 + 700) x 1.2
    # The original is untouched: same state, lines, totals, still all to pay.
    assert await erp.get_invoice_info(original.id) == original

    credit_lines = await erp.client.read(
        "account.invoice.line", credit.line_ids, ["quantity", "unit_price", "origin"]
    )
    assert [(ln["quantity"], ln["unit_price"], ln["origin"]) for ln in credit_lines] == [
        (-10.0, Decimal("157.50"), f"account.invoice.line,{discovery}")
    ]


async def test_a_retried_correction_makes_one_credit_note_and_one_rebill(erp: TrytonErp) -> None:
    original = await posted_invoice(erp, hours("Discovery", "7.5", "157.50"))
    (line,) = original.line_ids
    key = f"co:{uuid.uuid4().hex[:8]}:correct"
    first = await erp.correct_invoice(
        original.id, {line: gbp("150.00")}, reason="CO-8", idempotency_key=key
    )
    again = await erp.correct_invoice(
        original.id, {line: gbp("150.00")}, reason="CO-8", idempotency_key=key
    )
    assert again == first
    with pytest.raises(IdempotencyConflict):
        await erp.correct_invoice(
            original.id, {line: gbp("160.00")}, reason="CO-8", idempotency_key=key
        )
    assert await corrections_of(erp, original.id) == sorted([first.credit_note.id, first.rebill.id])
    # 7.5 h x 157.50 = 1181.25 (+236.25 tax) credited; 7.5 h x 150 = 1125 (+225) re-billed.
    # Every line credited: the credit note gives back the invoice's total exactly.
    assert first.credit_note.total == -original.total == gbp("-1417.50")
    assert first.rebill.total == gbp("1350.00")
    assert await erp.get_invoice_info(original.id) == original


async def test_only_a_posted_invoices_own_lines_are_corrected(erp: TrytonErp) -> None:
    draft = await posted_invoice(erp, hours("Discovery", "1", "100"), post=False)
    with pytest.raises(ValidationFailed) as not_posted:
        await erp.correct_invoice(
            draft.id, {draft.line_ids[0]: gbp("120")}, reason="x", idempotency_key="k1"
        )
    assert not_posted.value.field == "state"

    posted = await posted_invoice(erp, hours("Discovery", "1", "100"))
    with pytest.raises(ValidationFailed) as foreign:
        await erp.correct_invoice(
            posted.id, {draft.line_ids[0]: gbp("120")}, reason="x", idempotency_key="k2"
        )
    assert foreign.value.field == f"new_prices[{draft.line_ids[0]}]"
    with pytest.raises(ValidationFailed) as currency:
        await erp.correct_invoice(
            posted.id,
            {posted.line_ids[0]: Money.of("120", "EUR")},
            reason="x",
            idempotency_key="k3",
        )
    assert currency.value.field == f"new_prices[{posted.line_ids[0]}]"
    assert await corrections_of(erp, posted.id) == []
