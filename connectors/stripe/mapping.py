"""Canonical <-> Stripe: form parameters out, wire objects in; money in minor units.

Stripe counts money in integer minor units of the currency (cents for EUR, yen for JPY)
and keeps unit prices as decimal strings of minor units (`unit_amount_decimal`), so a
rate of 123.456 EUR/h stays exact. Stripe rounds a line's amount half up to the minor
unit, and each line's tax likewise, which is what `canonical.InvoiceLine` does, so the
totals on both sides agree to the cent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from canonical import Customer, Invoice, InvoiceLine, InvoiceStatus, Money, Payment, minor_unit
from connectors.stripe import wire

SYSTEM = "stripe"

# Metadata keys q2c writes on Stripe objects, so they can be traced back.
META_CUSTOMER_ID = "q2c_customer_id"
META_LEGAL_ENTITY = "q2c_legal_entity"
META_TAX_ID = "q2c_tax_id"
META_PAYMENT_TERMS = "q2c_net_days"
META_INVOICE_ID = "q2c_invoice_id"
META_PROJECT_ID = "q2c_project_id"
META_PO_NUMBER = "q2c_po_number"
#: "active" or "inactive": Stripe has no way to close a customer that keeps its invoices.
META_STATUS = "q2c_status"
META_LINE_ID = "q2c_line_id"
#: The caller's idempotency key on a credit note: found again past Stripe's 24-hour window.
META_CREDIT_KEY = "q2c_credit_key"

#: Stripe's external-id keys in canonical `external_ids`.
EXTERNAL_INVOICE = "stripe"
EXTERNAL_CUSTOMER = "stripe_customer"


def to_minor(money: Money) -> int:
    return money.to_minor()


def from_minor(units: int, currency: str) -> Money:
    return Money.from_minor(units, currency.upper())


def unit_amount_decimal(money: Money) -> str:
    """A unit price in minor units, exact: 123.456 EUR is "12345.6"."""
    return _plain(money.amount.scaleb(minor_unit(money.currency)))


def tax_percentage(rate: Decimal) -> Decimal:
    """Canonical tax rates are fractions (0.19); Stripe's are percentages (19)."""
    return (rate * 100).normalize()


def _plain(value: Decimal) -> str:
    """A decimal without exponent: Stripe does not read "1E+1"."""
    return format(value.normalize(), "f")


def _dt(timestamp: int | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def _day(timestamp: int | None) -> date | None:
    moment = _dt(timestamp)
    return None if moment is None else moment.date()


# ------------------------------------------------------------------ to Stripe


def customer_params(customer: Customer, *, update: bool = False) -> dict[str, Any]:
    """`POST /v1/customers` parameters. On update, blank values clear what q2c no longer has
    (Stripe merges metadata and skips absent fields)."""
    blank = "" if update else None
    contacts = customer.billing_contacts() or customer.contacts
    contact = contacts[0] if contacts else None
    address = customer.billing_address
    metadata: dict[str, str | None] = {
        META_CUSTOMER_ID: customer.id,
        META_LEGAL_ENTITY: customer.legal_entity.code,
        META_PAYMENT_TERMS: str(customer.payment_terms.net_days),
        META_TAX_ID: customer.tax_id or blank,
    }
    params: dict[str, Any] = {
        "name": customer.name,
        "email": (contact.email if contact else None) or blank,
        "phone": (contact.phone if contact else None) or blank,
        "address": _drop_none(
            {
                "line1": address.street,
                "line2": address.street2 or blank,
                "city": address.city,
                "postal_code": address.postal_code or blank,
                "state": address.region or blank,
                "country": address.country,
            }
        ),
        "metadata": _drop_none(metadata),
    }
    return _drop_none(params)


def invoice_params(
    invoice: Invoice,
    *,
    customer_id: str,
    days_until_due: int,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A draft `send_invoice` invoice that pulls in nothing pending: its items are created
    for it explicitly, so a concurrent invoice for the same customer cannot take them."""
    meta = {
        META_INVOICE_ID: invoice.id,
        META_CUSTOMER_ID: invoice.customer_id,
        META_PROJECT_ID: invoice.project_id,
        META_PO_NUMBER: invoice.po_number,
        META_LEGAL_ENTITY: invoice.legal_entity_code,
    }
    return _drop_none(
        {
            "customer": customer_id,
            "currency": invoice.currency.lower(),
            "collection_method": "send_invoice",
            "days_until_due": days_until_due,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "description": invoice.memo,
            "metadata": {**{k: v for k, v in meta.items() if v}, **(metadata or {})},
        }
    )


def invoice_item_params(
    line: InvoiceLine, *, customer_id: str, invoice_id: str, tax_rate_id: str | None
) -> dict[str, Any]:
    return _drop_none(
        {
            "customer": customer_id,
            "invoice": invoice_id,
            "currency": line.unit_price.currency.lower(),
            "description": line.description,
            "quantity_decimal": _plain(line.quantity),
            "unit_amount_decimal": unit_amount_decimal(line.unit_price),
            "tax_rates": [tax_rate_id] if tax_rate_id else None,
            "metadata": {META_LINE_ID: line.id} if line.id else None,
        }
    )


def tax_rate_params(percentage: Decimal) -> dict[str, Any]:
    return {
        "display_name": "Tax",
        "description": f"q2c {_plain(percentage)} %",
        "percentage": _plain(percentage),
        "inclusive": False,
        "metadata": {"q2c": "1"},
    }


def credit_note_params(
    invoice_id: str,
    lines: Sequence[InvoiceLine],
    *,
    currency: str,
    tax_rate_ids: Mapping[Decimal, str],
    memo: str | None,
    reason: str,
    idempotency_key: str,
) -> dict[str, Any]:
    """`POST /v1/credit_notes` with one `custom_line_item` per canonical line.

    Stripe's credit note lines take a whole `quantity`: a line of 7.5 hours goes as
    quantity 1 at the line's exact net in minor units (`unit_amount_decimal`), which Stripe
    rounds half up as it rounded the invoice item, so credit and invoice agree to the cent.
    """
    wire_lines = []
    for line in lines:
        if line.unit_price.currency != currency:
            raise ValueError(f"line {line.description!r} is not in {currency}")
        whole = line.quantity == line.quantity.to_integral_value()
        unit = line.unit_price if whole else line.unit_price * line.quantity
        wire_lines.append(
            _drop_none(
                {
                    "type": "custom_line_item",
                    "description": line.description,
                    "quantity": int(line.quantity) if whole else 1,
                    "unit_amount_decimal": unit_amount_decimal(unit),
                    "tax_rates": [tax_rate_ids[line.tax_rate]] if line.tax_rate else None,
                }
            )
        )
    return _drop_none(
        {
            "invoice": invoice_id,
            "lines": wire_lines,
            "memo": memo,
            "reason": reason,
            "metadata": {META_CREDIT_KEY: idempotency_key},
        }
    )


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


# ---------------------------------------------------------------- from Stripe


def invoice_line(line: wire.LineItem, percentages: Mapping[str, Decimal]) -> InvoiceLine:
    """`percentages` maps the tax rate ids on the line to their percentage."""
    currency = line.currency.upper()
    quantity = line.quantity_decimal if line.quantity_decimal is not None else line.quantity
    quantity = Decimal(1) if not quantity else Decimal(quantity)
    if line.pricing is not None and line.pricing.unit_amount_decimal is not None:
        unit_minor = line.pricing.unit_amount_decimal
    else:
        unit_minor = Decimal(line.amount) / quantity
    rate = sum(
        (percentages[t.tax_rate_details.tax_rate] for t in line.taxes if t.tax_rate_details),
        Decimal(0),
    )
    return InvoiceLine(
        id=line.metadata.get(META_LINE_ID) or line.id,
        description=line.description or "(no description)",
        quantity=quantity,
        unit_price=Money(amount=unit_minor.scaleb(-minor_unit(currency)), currency=currency),
        tax_rate=rate / 100,
    )


def invoice_from_stripe(
    invoice: wire.Invoice, lines: list[wire.LineItem], percentages: Mapping[str, Decimal]
) -> Invoice:
    """The canonical invoice; its ids are q2c's when q2c created it, Stripe's otherwise."""
    meta = invoice.metadata
    status = InvoiceStatus(invoice.status or "draft")
    return Invoice(
        id=meta.get(META_INVOICE_ID) or invoice.id,
        customer_id=meta.get(META_CUSTOMER_ID) or invoice.customer,
        currency=invoice.currency.upper(),
        lines=[invoice_line(line, percentages) for line in lines],
        status=status,
        number=invoice.number,
        issued_at=_dt(invoice.status_transitions.finalized_at),
        due_date=_day(invoice.due_date),
        project_id=meta.get(META_PROJECT_ID),
        legal_entity_code=meta.get(META_LEGAL_ENTITY),
        po_number=meta.get(META_PO_NUMBER),
        memo=invoice.description,
        external_ids={EXTERNAL_INVOICE: invoice.id, EXTERNAL_CUSTOMER: invoice.customer},
    )


def payment_from_stripe(invoice: wire.Invoice) -> Payment | None:
    """The payment that settled a paid invoice, for reconciliation; None until it is paid."""
    paid_at = _dt(invoice.status_transitions.paid_at)
    if invoice.status != "paid" or paid_at is None or invoice.amount_paid <= 0:
        return None
    return Payment(
        id=f"{SYSTEM}:{invoice.id}",
        invoice_id=invoice.metadata.get(META_INVOICE_ID) or invoice.id,
        amount=from_minor(invoice.amount_paid, invoice.currency),
        received_at=paid_at,
        reference=invoice.number,
        customer_id=invoice.metadata.get(META_CUSTOMER_ID) or invoice.customer,
    )


#: Stripe's invoice events that end or move a payment, and what q2c calls each
#: (`PaymentEvent.kind`): paid, a failed attempt, voided, or written off as uncollectible.
INVOICE_EVENT_KINDS: dict[str, str] = {
    "invoice.paid": "paid",
    "invoice.payment_failed": "payment_failed",
    "invoice.voided": "voided",
    "invoice.marked_uncollectible": "uncollectible",
}


def payment_kind(event_type: object) -> str | None:
    """The `PaymentEvent.kind` of a Stripe event type; None for events q2c does not act on
    (`invoice.finalized`, `invoice.payment_succeeded`, which `invoice.paid` follows, ...)."""
    return INVOICE_EVENT_KINDS.get(event_type) if isinstance(event_type, str) else None


# -------------------------------------------------------------- credit notes


class CreditNoteLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str
    quantity: Decimal
    #: Net of tax, as Stripe credits it (the line's `amount`).
    net: Money
    tax: Money


class CreditNote(BaseModel):
    """A Stripe credit note in q2c's terms: money as `Money`, not minor units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    number: str
    invoice_id: str
    status: Literal["issued", "void"]
    #: `pre_payment` lowered what the invoice asks for; `post_payment` credited the customer
    #: (`credit_amount` to the balance, `out_of_band_amount` settled elsewhere).
    type: Literal["pre_payment", "post_payment"]
    subtotal: Money
    total: Money
    credit_amount: Money
    out_of_band_amount: Money
    memo: str | None = None
    reason: str | None = None
    lines: list[CreditNoteLine] = Field(default_factory=list)
    idempotency_key: str | None = None


def credit_note_from_stripe(note: wire.CreditNote) -> CreditNote:
    currency = note.currency
    out_of_band = note.out_of_band_amount or 0
    credited = note.post_payment_amount - out_of_band if note.type == "post_payment" else 0
    return CreditNote(
        id=note.id,
        number=note.number,
        invoice_id=note.invoice,
        status=note.status,
        type=note.type,
        subtotal=from_minor(note.subtotal, currency),
        total=from_minor(note.total, currency),
        credit_amount=from_minor(credited, currency),
        out_of_band_amount=from_minor(out_of_band, currency),
        memo=note.memo,
        reason=note.reason,
        lines=[
            CreditNoteLine(
                description=line.description or "",
                quantity=Decimal(line.quantity or 1),
                net=from_minor(line.amount, currency),
                tax=from_minor(sum(t.amount for t in line.taxes), currency),
            )
            for line in note.lines.data
        ],
        idempotency_key=note.metadata.get(META_CREDIT_KEY),
    )
