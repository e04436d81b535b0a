"""Stripe credit notes: lowering what a finalized invoice asks for, never editing it.

Stripe's rules, kept small:
- only a finalized invoice (`open` or `paid`) takes a credit note; a draft is edited, a
  void or uncollectible one is out of reach;
- a credit note on an `open` invoice is *pre-payment*: it lowers `amount_due` and
  `amount_remaining`, and an invoice credited down to nothing is `paid` (as Stripe marks
  it, with nothing actually paid);
- a credit note on a `paid` invoice is *post-payment*: its total must be split between
  `refund_amount`, `credit_amount` (the customer's balance) and `out_of_band_amount`;
  the stand-in does no refunds, so the split is `credit_amount` and `out_of_band_amount`,
  and what is not named goes to `credit_amount`, shaped as the customer balance
  transaction Stripe records;
- the total credited on an invoice never exceeds the invoice's total (and a pre-payment
  one never exceeds what remains due): Stripe refuses with an `invalid_request_error`
  naming the parameter;
- voiding a credit note gives back what it took, and emits `credit_note.voided`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from standins.stripe import forms as f
from standins.stripe.api import (
    RequestContext,
    StripeApi,
    _decimal_str,
    _line_tax,
    _public,
    new_id,
)
from standins.stripe.errors import ApiError
from standins.stripe.store import Store

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")
LINE_FIELDS = (
    "type",
    "amount",
    "description",
    "invoice_line_item",
    "quantity",
    "tax_rates",
    "unit_amount",
    "unit_amount_decimal",
)
#: Open or paid: finalized and still standing.
CREDITABLE_STATUSES = ("open", "paid")


class CreditNotes:
    """The `/v1/credit_notes` endpoints, on the invoices `StripeApi` keeps."""

    def __init__(self, api: StripeApi) -> None:
        self.api = api

    @property
    def store(self) -> Store:
        return self.api.store

    def create_credit_note(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        f.check_known(
            params,
            (
                "invoice",
                "amount",
                "credit_amount",
                "effective_at",
                "lines",
                "memo",
                "metadata",
                "out_of_band_amount",
                "reason",
                "refund_amount",
            ),
        )
        invoice = self.api._invoice(f.req_str(params, "invoice"), param="invoice")
        if invoice["status"] not in CREDITABLE_STATUSES:
            raise ApiError.invalid(
                "You can only create a credit note for an open or paid invoice;"
                f" this one is {invoice['status']}.",
                param="invoice",
                code="invoice_not_editable",
            )
        if f.opt_int(params, "refund_amount") is not None:
            raise ApiError.invalid(
                "The stand-in does not refund; use credit_amount or out_of_band_amount.",
                param="refund_amount",
            )
        reason = f.opt_enum(params, "reason", REASONS)
        lines = self._lines(params)
        amount = f.opt_int(params, "amount", minimum=1)
        if lines:
            total = sum(line["amount"] + sum(t["amount"] for t in line["taxes"]) for line in lines)
            if amount is not None and amount != total:
                raise ApiError.invalid(
                    f"The amount ({amount}) must equal the total of the lines ({total}).",
                    param="amount",
                )
        elif amount is None:
            raise ApiError.invalid(
                "You must pass either amount or lines.", param="lines", code="parameter_missing"
            )
        else:
            total = amount
        if total <= 0:
            raise ApiError.invalid("A credit note must be for a positive amount.", param="lines")
        rendered = self.api._render_invoice(invoice)
        credited = self._credited(invoice["id"])
        creditable = rendered["total"] - credited
        param = "lines" if lines else "amount"
        if total > creditable:
            raise ApiError.invalid(
                f"The credit note total ({total}) exceeds what remains creditable on invoice"
                f" {invoice['id']} ({creditable}).",
                param=param,
                code="credit_note_amount_too_large",
            )
        pre_payment = invoice["status"] == "open"
        if pre_payment and total > rendered["amount_remaining"]:
            raise ApiError.invalid(
                f"The credit note total ({total}) exceeds the invoice's amount_remaining"
                f" ({rendered['amount_remaining']}).",
                param=param,
                code="credit_note_amount_too_large",
            )
        out_of_band = f.opt_int(params, "out_of_band_amount", minimum=0) or 0
        credit_amount = f.opt_int(params, "credit_amount", minimum=0)
        if pre_payment and (out_of_band or credit_amount):
            name = "out_of_band_amount" if out_of_band else "credit_amount"
            raise ApiError.invalid(
                f"{name} can only be set on a credit note for a paid invoice.", param=name
            )
        if not pre_payment:
            if credit_amount is None:
                credit_amount = total - out_of_band
            if credit_amount + out_of_band != total:
                raise ApiError.invalid(
                    f"The sum of credit_amount ({credit_amount}) and out_of_band_amount"
                    f" ({out_of_band}) must equal the credit note total ({total}).",
                    param="credit_amount",
                )
        credit_amount = credit_amount or 0
        now = self.api.now()
        customer = self.api._customer(invoice["customer"])
        balance_tx = None
        if credit_amount:
            balance_tx = self._credit_balance(customer, -credit_amount, invoice, now)
        sequence = self.store.find("credit_note", {"invoice": invoice["id"]}, newest_first=False)
        note_id = new_id("cn")
        subtotal = sum(line["amount"] for line in lines) if lines else total
        note: dict[str, Any] = {
            "id": note_id,
            "object": "credit_note",
            "amount": total,
            "amount_shipping": 0,
            "created": now,
            "currency": invoice["currency"],
            "customer": invoice["customer"],
            "customer_balance_transaction": balance_tx,
            "discount_amount": 0,
            "discount_amounts": [],
            "effective_at": f.opt_int(params, "effective_at") or now,
            "invoice": invoice["id"],
            "lines": [{**line, "credit_note": note_id} for line in lines],
            "livemode": False,
            "memo": f.opt_str(params, "memo"),
            "metadata": f.metadata(params),
            "number": f"{invoice['number']}-CN-{len(sequence) + 1:02d}",
            "out_of_band_amount": out_of_band or None,
            "pdf": None,
            "post_payment_amount": 0 if pre_payment else total,
            "pre_payment_amount": total if pre_payment else 0,
            "reason": reason,
            "refunds": [],
            "shipping_cost": None,
            "status": "issued",
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal,
            "total": total,
            "total_excluding_tax": subtotal,
            "total_taxes": [t for line in lines for t in line["taxes"]],
            "type": "pre_payment" if pre_payment else "post_payment",
            "voided_at": None,
        }
        self.store.insert(note)
        key = f"{note['type']}_credit_notes_amount"
        invoice[key] = invoice.get(key, 0) + total
        self.store.save(invoice)
        public = self._render(note)
        self.api._event("credit_note.created", public, ctx)
        if pre_payment and self.api._render_invoice(invoice)["amount_remaining"] == 0:
            # Stripe marks an invoice credited down to nothing as paid.
            self.api._mark_paid(invoice, ctx, payment_succeeded=False)
        else:
            self.api._event("invoice.updated", self.api._render_invoice(invoice), ctx)
        return public

    def retrieve_credit_note(self, note_id: str) -> dict[str, Any]:
        return self._render(self._note(note_id))

    def list_credit_notes(self, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(params, ("limit", "starting_after", "ending_before", "customer", "invoice"))
        filters: dict[str, Any] = {}
        for name in ("customer", "invoice"):
            if (value := f.opt_str(params, name)) is not None:
                filters[name] = value
        page = self.api._list("credit_note", "/v1/credit_notes", params, filters)
        page["data"] = [self._render(n) for n in page["data"]]
        return page

    def list_credit_note_lines(self, note_id: str, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(params, ("limit", "starting_after", "ending_before"))
        lines: dict[str, Any] = self._render(self._note(note_id))["lines"]
        return lines

    def void_credit_note(
        self, note_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(params, ())
        note = self._note(note_id)
        if note["status"] != "issued":
            raise ApiError.invalid(
                f"Credit note {note_id} is already void.", code="credit_note_already_voided"
            )
        invoice = self.api._invoice(note["invoice"])
        if note["type"] == "pre_payment":
            if invoice["status"] != "open" and invoice.get("amount_paid", 0):
                raise ApiError.invalid(
                    "A pre-payment credit note can no longer be voided once its invoice is paid.",
                    code="invoice_not_editable",
                )
            invoice["pre_payment_credit_notes_amount"] -= note["total"]
            if invoice["status"] == "paid":
                # Paid only by this credit: open again for what it no longer credits.
                invoice["status"] = "open"
                invoice["status_transitions"]["paid_at"] = None
        else:
            invoice["post_payment_credit_notes_amount"] -= note["total"]
            if note["customer_balance_transaction"]:
                customer = self.api._customer(note["customer"])
                credited = -note["customer_balance_transaction"]["amount"]
                self._credit_balance(customer, credited, invoice, self.api.now())
        self.store.save(invoice)
        note["status"] = "void"
        note["voided_at"] = self.api.now()
        self.store.save(note)
        public = self._render(note)
        self.api._event("credit_note.voided", public, ctx)
        self.api._event("invoice.updated", self.api._render_invoice(invoice), ctx)
        return public

    # ----------------------------------------------------------------- helpers

    def _credited(self, invoice_id: str) -> int:
        notes = self.store.find("credit_note", {"invoice": invoice_id, "status": "issued"})
        return sum(int(n["total"]) for n in notes)

    def _lines(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        given = f.opt_list(params, "lines") or []
        lines = []
        for n, raw in enumerate(given):
            prefix = f"lines[{n}]"
            if not isinstance(raw, dict):
                raise ApiError.invalid(f"Invalid hash: {prefix}", param=prefix)
            f.check_known(raw, LINE_FIELDS, prefix=prefix)
            kind = f.opt_enum(raw, "type", ("custom_line_item", "invoice_line_item"))
            if kind is None:
                raise ApiError.invalid(
                    f"Missing required param: {prefix}[type].",
                    param=f"{prefix}[type]",
                    code="parameter_missing",
                )
            if kind == "invoice_line_item":
                raise ApiError.invalid(
                    "The stand-in credits custom_line_item lines only.", param=f"{prefix}[type]"
                )
            unit_int = f.opt_int(raw, "unit_amount", minimum=0)
            unit_dec = f.opt_decimal(raw, "unit_amount_decimal")
            amount = f.opt_int(raw, "amount", minimum=0)
            unit = Decimal(unit_int) if unit_int is not None else unit_dec
            quantity = f.opt_int(raw, "quantity", minimum=0)
            if unit is None and amount is None:
                raise ApiError.invalid(
                    f"Missing required param: {prefix}[unit_amount].",
                    param=f"{prefix}[unit_amount]",
                    code="parameter_missing",
                )
            if unit is not None and amount is not None:
                raise ApiError.invalid(
                    "You may only specify one of these parameters: amount, unit_amount.",
                    param=f"{prefix}[amount]",
                    code="parameters_exclusive",
                )
            qty = Decimal(1 if quantity is None else quantity)
            if amount is None:
                assert unit is not None
                amount = int((unit * qty).to_integral_value(ROUND_HALF_UP))
            description = f.opt_str(raw, "description")
            if description is None:
                raise ApiError.invalid(
                    f"Missing required param: {prefix}[description].",
                    param=f"{prefix}[description]",
                    code="parameter_missing",
                )
            rate_ids = self.api._tax_rate_ids(raw, "tax_rates")
            rates = [self.api._tax_rate(r) for r in rate_ids]
            taxes = [_line_tax(amount, r) for r in rates]
            lines.append(
                {
                    "id": new_id("cnli"),
                    "object": "credit_note_line_item",
                    "amount": amount,
                    "description": description,
                    "discount_amount": 0,
                    "discount_amounts": [],
                    "invoice_line_item": None,
                    "livemode": False,
                    "quantity": int(qty),
                    "tax_rates": [_public(r) for r in rates],
                    "taxes": [t for t in taxes if t["tax_behavior"] == "exclusive"],
                    "type": kind,
                    "unit_amount": int(unit) if unit is not None and unit == int(unit) else None,
                    "unit_amount_decimal": _decimal_str(unit if unit is not None else qty),
                }
            )
        return lines

    def _credit_balance(
        self, customer: dict[str, Any], amount: int, invoice: dict[str, Any], now: int
    ) -> dict[str, Any]:
        """A customer balance transaction: negative is credit the customer can spend."""
        ending = int(customer.get("balance", 0)) + amount
        customer["balance"] = ending
        self.store.save(customer)
        return {
            "id": new_id("cbtxn"),
            "object": "customer_balance_transaction",
            "amount": amount,
            "created": now,
            "currency": invoice["currency"],
            "customer": customer["id"],
            "ending_balance": ending,
            "invoice": invoice["id"],
            "type": "applied_to_invoice" if amount > 0 else "adjustment",
        }

    def _note(self, note_id: str) -> dict[str, Any]:
        note = self.store.get(note_id, "credit_note")
        if note is None:
            raise ApiError.missing("credit_note", note_id)
        return note

    def _render(self, note: dict[str, Any]) -> dict[str, Any]:
        lines = note["lines"]
        balance_tx = note["customer_balance_transaction"]
        return {
            **note,
            "customer_balance_transaction": balance_tx["id"] if balance_tx else None,
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "url": f"/v1/credit_notes/{note['id']}/lines",
            },
        }
