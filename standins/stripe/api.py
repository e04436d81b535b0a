"""The Stripe objects and their rules: customers, tax rates, invoice items, invoices, events.

Each public method is one endpoint. It reads the decoded form parameters, checks them
as Stripe does (unknown parameter, missing parameter, wrong state), changes the store
and records the events it causes; the HTTP layer owns the transaction around it.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from standins.stripe import forms as f
from standins.stripe.errors import ApiError
from standins.stripe.store import IS_NULL, Store

API_VERSION = "2025-03-31.basil"
#: Lines embedded in an invoice; the rest are paged at /v1/invoices/{id}/lines.
EMBEDDED_LINES = 10
#: Customer metadata that makes `/pay` decline, as a test card would.
FAIL_PAYMENT_KEY = "standin_payment"
FAIL_PAYMENT_VALUE = "fail"
#: Customer metadata for tests: finalizing this customer's invoice adds a line of this many
#: cents first, so the finalized total disagrees with what the caller drafted (as when
#: billing applies a fee or a tax the caller did not expect).
FINALIZE_SURCHARGE_KEY = "standin_finalize_surcharge"

#: Stripe keeps at most 12 decimal places of a unit amount.
_UNIT_PRECISION = Decimal("1e-12")
_ID_ALPHABET = string.ascii_letters + string.digits

CUSTOMER_FIELDS = (
    "name",
    "email",
    "description",
    "phone",
    "address",
    "metadata",
    "preferred_locales",
    "tax_exempt",
    "invoice_prefix",
    "invoice_settings",
    "shipping",
)
ADDRESS_FIELDS = ("line1", "line2", "city", "state", "postal_code", "country")


def new_id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ID_ALPHABET) for _ in range(24))}"


@dataclass
class RequestContext:
    """What an endpoint knows about the request beyond its parameters."""

    request_id: str
    base_url: str
    idempotency_key: str | None = None
    events: list[str] = field(default_factory=list)


class StripeApi:
    def __init__(
        self, store: Store, *, webhooks_enabled: bool, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.webhooks_enabled = webhooks_enabled
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    # ----------------------------------------------------------------- customers

    def create_customer(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        f.check_known(params, CUSTOMER_FIELDS)
        prefix = f.opt_str(params, "invoice_prefix", max_len=12)
        if prefix is not None and not prefix.isalnum():
            raise ApiError.invalid("Invalid invoice_prefix", param="invoice_prefix")
        customer: dict[str, Any] = {
            "id": new_id("cus"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": self.now(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": (prefix or _invoice_prefix()).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self._apply_customer_params(customer, params)
        self.store.insert(customer)
        self._event("customer.created", customer, ctx)
        return customer

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        return self._customer(customer_id)

    def update_customer(
        self, customer_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(params, CUSTOMER_FIELDS)
        customer = self._customer(customer_id)
        before = dict(customer)
        self._apply_customer_params(customer, params)
        self.store.save(customer)
        changed = {k: v for k, v in before.items() if customer.get(k) != v}
        if changed:
            self._event("customer.updated", customer, ctx, previous=changed)
        return customer

    def list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(params, ("limit", "starting_after", "ending_before", "email", "created"))
        filters = {"email": email} if (email := f.opt_str(params, "email")) else {}
        return self._list("customer", "/v1/customers", params, filters)

    def _apply_customer_params(self, customer: dict[str, Any], params: dict[str, Any]) -> None:
        for name in ("name", "email", "description", "phone"):
            if name in params:
                customer[name] = f.opt_str(params, name, max_len=512 if name == "email" else 5000)
        if "address" in params:
            address = f.opt_hash(params, "address")
            if address:
                f.check_known(address, ADDRESS_FIELDS, prefix="address")
                customer["address"] = {k: address.get(k) or None for k in ADDRESS_FIELDS}
            else:
                customer["address"] = None
        if "preferred_locales" in params:
            customer["preferred_locales"] = f.opt_list(params, "preferred_locales") or []
        if "tax_exempt" in params:
            customer["tax_exempt"] = (
                f.opt_enum(params, "tax_exempt", ("none", "exempt", "reverse")) or "none"
            )
        if "invoice_settings" in params:
            settings = f.opt_hash(params, "invoice_settings") or {}
            f.check_known(
                settings,
                ("custom_fields", "default_payment_method", "footer", "rendering_options"),
                prefix="invoice_settings",
            )
            customer["invoice_settings"] = {**customer["invoice_settings"], **settings}
        if "shipping" in params:
            customer["shipping"] = f.opt_hash(params, "shipping") or None
        customer["metadata"] = f.metadata(params, customer["metadata"])

    def _customer(self, customer_id: str, *, param: str = "id") -> dict[str, Any]:
        customer = self.store.get(customer_id, "customer")
        if customer is None:
            raise ApiError.missing("customer", customer_id, param=param)
        return customer

    # ----------------------------------------------------------------- tax rates

    def create_tax_rate(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        f.check_known(
            params,
            (
                "display_name",
                "inclusive",
                "percentage",
                "active",
                "country",
                "description",
                "jurisdiction",
                "metadata",
                "state",
                "tax_type",
            ),
        )
        display_name = f.req_str(params, "display_name", max_len=50)
        f.required(params, "inclusive")
        inclusive = f.opt_bool(params, "inclusive")
        f.required(params, "percentage")
        percentage = f.opt_decimal(params, "percentage")
        assert percentage is not None
        if not Decimal(0) <= percentage <= Decimal(100):
            raise ApiError.invalid("percentage must be between 0 and 100", param="percentage")
        rate: dict[str, Any] = {
            "id": new_id("txr"),
            "object": "tax_rate",
            "active": f.opt_bool(params, "active") is not False,
            "country": f.opt_str(params, "country"),
            "created": self.now(),
            "description": f.opt_str(params, "description"),
            "display_name": display_name,
            "effective_percentage": float(percentage),
            "inclusive": bool(inclusive),
            "jurisdiction": f.opt_str(params, "jurisdiction"),
            "livemode": False,
            "metadata": f.metadata(params),
            # Stripe serialises percentages as JSON numbers; keep the exact decimal too.
            "percentage": float(percentage),
            "percentage_decimal": str(percentage),
            "state": f.opt_str(params, "state"),
            "tax_type": f.opt_str(params, "tax_type"),
        }
        self.store.insert(rate)
        self._event("tax_rate.created", _public(rate), ctx)
        return _public(rate)

    def retrieve_tax_rate(self, rate_id: str) -> dict[str, Any]:
        return _public(self._tax_rate(rate_id))

    def list_tax_rates(self, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(params, ("limit", "starting_after", "ending_before", "active", "inclusive"))
        filters: dict[str, Any] = {}
        for name in ("active", "inclusive"):
            value = f.opt_bool(params, name)
            if value is not None:
                filters[name] = value
        page = self._list("tax_rate", "/v1/tax_rates", params, filters)
        page["data"] = [_public(r) for r in page["data"]]
        return page

    def _tax_rate(self, rate_id: str, *, param: str = "id") -> dict[str, Any]:
        rate = self.store.get(rate_id, "tax_rate")
        if rate is None:
            raise ApiError.missing("tax_rate", rate_id, param=param)
        return rate

    # ------------------------------------------------------------- invoice items

    def create_invoice_item(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        f.check_known(
            params,
            (
                "customer",
                "amount",
                "currency",
                "description",
                "discountable",
                "invoice",
                "metadata",
                "period",
                "quantity",
                "quantity_decimal",
                "tax_rates",
                "unit_amount",
                "unit_amount_decimal",
            ),
        )
        customer = self._customer(f.req_str(params, "customer"), param="customer")
        invoice = None
        if (invoice_id := f.opt_str(params, "invoice")) is not None:
            invoice = self._invoice(invoice_id, param="invoice")
            if invoice["customer"] != customer["id"]:
                raise ApiError.invalid("The invoice belongs to another customer.", param="invoice")
            self._require_draft(invoice, "add invoice items to")

        amount = f.opt_int(params, "amount")
        unit_amount = f.opt_int(params, "unit_amount")
        unit_decimal = f.opt_decimal(params, "unit_amount_decimal")
        if unit_amount is not None and unit_decimal is not None:
            raise ApiError.invalid(
                "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
                param="unit_amount_decimal",
                code="parameters_exclusive",
            )
        unit = Decimal(unit_amount) if unit_amount is not None else unit_decimal
        if amount is not None and unit is not None:
            raise ApiError.invalid(
                "You may only specify one of these parameters: amount, unit_amount_decimal.",
                param="amount",
                code="parameters_exclusive",
            )
        quantity = self._quantity(params)
        if amount is None and unit is None:
            raise ApiError.invalid(
                "Missing required param: amount.", param="amount", code="parameter_missing"
            )
        if amount is None:
            assert unit is not None
            amount = int((unit * quantity).to_integral_value(ROUND_HALF_UP))
        else:
            unit = (Decimal(amount) / quantity).quantize(_UNIT_PRECISION) if quantity else None
            unit = Decimal(amount) if unit is None else unit

        item_currency = f.currency(params) or (invoice and invoice["currency"])
        item_currency = item_currency or customer["currency"]
        if item_currency is None:
            raise ApiError.invalid(
                "Missing required param: currency.", param="currency", code="parameter_missing"
            )
        if invoice is not None and item_currency != invoice["currency"]:
            raise ApiError.invalid(
                f"The currency of the invoice item ({item_currency}) must match the currency"
                f" of the invoice ({invoice['currency']}).",
                param="currency",
            )
        tax_rate_ids = self._tax_rate_ids(params, "tax_rates")
        now = self.now()
        period = f.opt_hash(params, "period") or {}
        item_id = new_id("ii")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "invoiceitem",
            "amount": amount,
            "currency": item_currency,
            "customer": customer["id"],
            "date": now,
            "description": f.opt_str(params, "description"),
            "discountable": f.opt_bool(params, "discountable") is not False,
            "discounts": [],
            "invoice": invoice["id"] if invoice else None,
            "livemode": False,
            "metadata": f.metadata(params),
            "parent": None,
            "period": {
                "start": f.opt_int(period, "start") or now,
                "end": f.opt_int(period, "end") or now,
            },
            "pricing": {
                "price_details": None,
                "type": "unit_amount_decimal",
                "unit_amount_decimal": _decimal_str(unit),
            },
            "proration": False,
            # The integer field cannot say 7.5 hours; `quantity_decimal` carries the truth.
            "quantity": int(quantity) if quantity == quantity.to_integral_value() else 1,
            "quantity_decimal": _decimal_str(quantity),
            "tax_rates": tax_rate_ids,
            "test_clock": None,
        }
        if customer["currency"] is None:
            customer["currency"] = item_currency
            self.store.save(customer)
        self.store.insert(item)
        rendered = self._render_item(item)
        self._event("invoiceitem.created", rendered, ctx)
        return rendered

    def retrieve_invoice_item(self, item_id: str) -> dict[str, Any]:
        return self._render_item(self._item(item_id))

    def list_invoice_items(self, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(
            params, ("limit", "starting_after", "ending_before", "customer", "invoice", "pending")
        )
        filters: dict[str, Any] = {}
        if (customer := f.opt_str(params, "customer")) is not None:
            filters["customer"] = customer
        if (invoice := f.opt_str(params, "invoice")) is not None:
            filters["invoice"] = invoice
        if f.opt_bool(params, "pending"):
            filters["invoice"] = IS_NULL
        page = self._list("invoiceitem", "/v1/invoiceitems", params, filters)
        page["data"] = [self._render_item(i) for i in page["data"]]
        return page

    def delete_invoice_item(self, item_id: str, ctx: RequestContext) -> dict[str, Any]:
        item = self._item(item_id)
        if item["invoice"] is not None:
            self._require_draft(self._invoice(item["invoice"]), "delete items of")
        self.store.delete(item_id)
        rendered = self._render_item(item)
        self._event("invoiceitem.deleted", rendered, ctx)
        return {"id": item_id, "object": "invoiceitem", "deleted": True}

    def _quantity(self, params: dict[str, Any]) -> Decimal:
        quantity = f.opt_int(params, "quantity", minimum=0)
        quantity_decimal = f.opt_decimal(params, "quantity_decimal")
        if quantity is not None and quantity_decimal is not None:
            raise ApiError.invalid(
                "You may only specify one of these parameters: quantity, quantity_decimal.",
                param="quantity_decimal",
                code="parameters_exclusive",
            )
        if quantity_decimal is not None and quantity_decimal < 0:
            raise ApiError.invalid(
                "This value must be greater than or equal to 0.", param="quantity_decimal"
            )
        if quantity_decimal is not None:
            return quantity_decimal
        return Decimal(1 if quantity is None else quantity)

    def _tax_rate_ids(self, params: dict[str, Any], name: str) -> list[str]:
        ids = f.opt_list(params, name) or []
        for n, rate_id in enumerate(ids):
            if not isinstance(rate_id, str):
                raise ApiError.invalid("Invalid tax rate id", param=f"{name}[{n}]")
            self._tax_rate(rate_id, param=f"{name}[{n}]")
        return list(ids)

    def _item(self, item_id: str) -> dict[str, Any]:
        item = self.store.get(item_id, "invoiceitem")
        if item is None:
            raise ApiError.missing("invoiceitem", item_id)
        return item

    def _render_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "tax_rates": [_public(self._tax_rate(t)) for t in item["tax_rates"]]}

    # ------------------------------------------------------------------ invoices

    def create_invoice(self, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        f.check_known(
            params,
            (
                "customer",
                "auto_advance",
                "collection_method",
                "currency",
                "days_until_due",
                "default_tax_rates",
                "description",
                "due_date",
                "footer",
                "metadata",
                "pending_invoice_items_behavior",
            ),
        )
        customer = self._customer(f.req_str(params, "customer"), param="customer")
        collection = (
            f.opt_enum(params, "collection_method", ("charge_automatically", "send_invoice"))
            or "charge_automatically"
        )
        days_until_due = f.opt_int(params, "days_until_due", minimum=0)
        due_date = f.opt_int(params, "due_date")
        if collection == "send_invoice" and days_until_due is None and due_date is None:
            raise ApiError.invalid(
                "Missing required param: days_until_due.",
                param="days_until_due",
                code="parameter_missing",
            )
        if collection == "charge_automatically" and (
            days_until_due is not None or due_date is not None
        ):
            raise ApiError.invalid(
                "Invoices with collection_method=charge_automatically cannot have a due date.",
                param="days_until_due" if days_until_due is not None else "due_date",
            )
        behavior = f.opt_enum(params, "pending_invoice_items_behavior", ("include", "exclude"))
        pending = []
        if behavior == "include":
            pending = self.store.find(
                "invoiceitem",
                {"customer": customer["id"], "invoice": IS_NULL},
                newest_first=False,
            )
        currency = f.currency(params) or customer["currency"]
        currency = currency or (pending[0]["currency"] if pending else "usd")
        now = self.now()
        invoice: dict[str, Any] = {
            "id": new_id("in"),
            "object": "invoice",
            "account_country": "US",
            "account_name": "Stripe stand-in",
            "amount_paid": 0,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": bool(f.opt_bool(params, "auto_advance")),
            "billing_reason": "manual",
            "collection_method": collection,
            "created": now,
            "currency": currency,
            "customer": customer["id"],
            "days_until_due": days_until_due,
            "default_tax_rates": self._tax_rate_ids(params, "default_tax_rates"),
            "description": f.opt_str(params, "description"),
            "due_date": due_date,
            "effective_at": None,
            "footer": f.opt_str(params, "footer"),
            "hosted_invoice_url": None,
            "livemode": False,
            "metadata": f.metadata(params),
            "number": None,
            "paid_out_of_band": False,
            "period_end": now,
            "period_start": now,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "customer_snapshot": None,
        }
        self.store.insert(invoice)
        for item in pending:
            if item["currency"] == currency:
                item["invoice"] = invoice["id"]
                self.store.save(item)
        rendered = self._render_invoice(invoice)
        self._event("invoice.created", rendered, ctx)
        return rendered

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._render_invoice(self._invoice(invoice_id))

    def update_invoice(
        self, invoice_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(
            params, ("metadata", "description", "footer", "auto_advance", "days_until_due")
        )
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "draft" and set(params) - {"metadata", "expand"}:
            self._require_draft(invoice, "update")
        previous = self._render_invoice(invoice)
        for name in ("description", "footer"):
            if name in params:
                invoice[name] = f.opt_str(params, name)
        if "auto_advance" in params:
            invoice["auto_advance"] = bool(f.opt_bool(params, "auto_advance"))
        if "days_until_due" in params:
            invoice["days_until_due"] = f.opt_int(params, "days_until_due", minimum=0)
        invoice["metadata"] = f.metadata(params, invoice["metadata"])
        self.store.save(invoice)
        rendered = self._render_invoice(invoice)
        changed = {k: v for k, v in previous.items() if rendered.get(k) != v}
        if changed:
            self._event("invoice.updated", rendered, ctx, previous=changed)
        return rendered

    def delete_invoice(self, invoice_id: str, ctx: RequestContext) -> dict[str, Any]:
        invoice = self._invoice(invoice_id)
        self._require_draft(invoice, "delete")
        rendered = self._render_invoice(invoice)
        for item in self.store.find("invoiceitem", {"invoice": invoice_id}):
            self.store.delete(item["id"])
        self.store.delete(invoice_id)
        self._event("invoice.deleted", rendered, ctx)
        return {"id": invoice_id, "object": "invoice", "deleted": True}

    def list_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(
            params,
            ("limit", "starting_after", "ending_before", "customer", "status", "collection_method"),
        )
        filters: dict[str, Any] = {}
        if (customer := f.opt_str(params, "customer")) is not None:
            filters["customer"] = customer
        status = f.opt_enum(params, "status", ("draft", "open", "paid", "uncollectible", "void"))
        if status is not None:
            filters["status"] = status
        method = f.opt_enum(params, "collection_method", ("charge_automatically", "send_invoice"))
        if method is not None:
            filters["collection_method"] = method
        page = self._list("invoice", "/v1/invoices", params, filters)
        page["data"] = [self._render_invoice(i) for i in page["data"]]
        return page

    def list_invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        f.check_known(params, ("limit", "starting_after", "ending_before"))
        invoice = self._invoice(invoice_id)
        lines = self._lines(invoice)
        limit = _limit(params)
        start = 0
        if (after := f.opt_str(params, "starting_after")) is not None:
            ids = [line["id"] for line in lines]
            if after not in ids:
                raise ApiError.missing("line_item", after, param="starting_after")
            start = ids.index(after) + 1
        page = lines[start : start + limit]
        return {
            "object": "list",
            "data": page,
            "has_more": start + limit < len(lines),
            "url": f"/v1/invoices/{invoice_id}/lines",
        }

    def finalize_invoice(
        self, invoice_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(params, ("auto_advance",))
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "draft":
            raise ApiError.invalid(
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                code="invoice_not_editable",
            )
        customer = self._customer(invoice["customer"])
        now = self.now()
        if surcharge := customer["metadata"].get(FINALIZE_SURCHARGE_KEY):
            self._add_surcharge(invoice, int(surcharge), now)
        if (auto_advance := f.opt_bool(params, "auto_advance")) is not None:
            invoice["auto_advance"] = auto_advance
        sequence = int(customer["next_invoice_sequence"])
        customer["next_invoice_sequence"] = sequence + 1
        self.store.save(customer)
        invoice["number"] = f"{customer['invoice_prefix']}-{sequence:04d}"
        invoice["status"] = "open"
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        invoice["hosted_invoice_url"] = f"{ctx.base_url}i/{invoice['id']}"
        if invoice["collection_method"] == "send_invoice" and invoice["due_date"] is None:
            invoice["due_date"] = now + 86400 * int(invoice["days_until_due"] or 0)
        invoice["customer_snapshot"] = _customer_snapshot(customer)
        self.store.save(invoice)
        rendered = self._render_invoice(invoice)
        self._event("invoice.finalized", rendered, ctx)
        if rendered["amount_due"] == 0:
            # Stripe closes a zero invoice at once: there is nothing to collect.
            return self._mark_paid(invoice, ctx, payment_succeeded=False)
        return rendered

    def _add_surcharge(self, invoice: dict[str, Any], amount: int, now: int) -> None:
        self.store.insert(
            {
                "id": new_id("ii"),
                "object": "invoiceitem",
                "amount": amount,
                "currency": invoice["currency"],
                "customer": invoice["customer"],
                "date": now,
                "description": "Surcharge (stand-in)",
                "discountable": False,
                "discounts": [],
                "invoice": invoice["id"],
                "livemode": False,
                "metadata": {},
                "parent": None,
                "period": {"start": now, "end": now},
                "pricing": {
                    "price_details": None,
                    "type": "unit_amount_decimal",
                    "unit_amount_decimal": str(amount),
                },
                "proration": False,
                "quantity": 1,
                "quantity_decimal": "1",
                "tax_rates": [],
                "test_clock": None,
            }
        )

    def pay_invoice(
        self, invoice_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(
            params,
            ("paid_out_of_band", "forgive", "off_session", "payment_method", "source", "mandate"),
        )
        out_of_band = bool(f.opt_bool(params, "paid_out_of_band"))
        invoice = self._invoice(invoice_id)
        status = invoice["status"]
        if status == "paid":
            raise ApiError.invalid("Invoice is already paid", code="invoice_not_editable")
        if status not in ("open", "uncollectible"):
            raise ApiError.invalid(
                f"You can only pay an invoice that is open or uncollectible; this one is {status}.",
                code="invoice_not_editable",
            )
        if out_of_band:
            invoice["paid_out_of_band"] = True
            return self._mark_paid(invoice, ctx, payment_succeeded=False)
        customer = self._customer(invoice["customer"])
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if customer["metadata"].get(FAIL_PAYMENT_KEY) == FAIL_PAYMENT_VALUE:
            self.store.save(invoice)
            self._event("invoice.payment_failed", self._render_invoice(invoice), ctx)
            raise ApiError(
                402,
                "card_error",
                "Your card was declined.",
                code="card_declined",
                extra={"decline_code": "generic_decline"},
                keep_effects=True,
            )
        return self._mark_paid(invoice, ctx, payment_succeeded=True)

    def void_invoice(
        self, invoice_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(params, ())
        invoice = self._invoice(invoice_id)
        if invoice["status"] not in ("open", "uncollectible"):
            raise ApiError.invalid(
                "You can only void an invoice that is open or uncollectible;"
                f" this one is {invoice['status']}.",
                code="invoice_not_editable",
            )
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = self.now()
        self.store.save(invoice)
        rendered = self._render_invoice(invoice)
        self._event("invoice.voided", rendered, ctx)
        return rendered

    def mark_uncollectible(
        self, invoice_id: str, params: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        f.check_known(params, ())
        invoice = self._invoice(invoice_id)
        if invoice["status"] != "open":
            raise ApiError.invalid(
                "You can only mark an open invoice as uncollectible;"
                f" this one is {invoice['status']}.",
                code="invoice_not_editable",
            )
        invoice["status"] = "uncollectible"
        invoice["status_transitions"]["marked_uncollectible_at"] = self.now()
        self.store.save(invoice)
        rendered = self._render_invoice(invoice)
        self._event("invoice.marked_uncollectible", rendered, ctx)
        return rendered

    def _mark_paid(
        self, invoice: dict[str, Any], ctx: RequestContext, *, payment_succeeded: bool
    ) -> dict[str, Any]:
        invoice["status"] = "paid"
        # What was due: the total less what pre-payment credit notes took off it.
        invoice["amount_paid"] = self._totals(invoice)["total"] - invoice.get(
            "pre_payment_credit_notes_amount", 0
        )
        invoice["status_transitions"]["paid_at"] = self.now()
        self.store.save(invoice)
        rendered = self._render_invoice(invoice)
        if payment_succeeded:
            self._event("invoice.payment_succeeded", rendered, ctx)
        self._event("invoice.paid", rendered, ctx)
        return rendered

    def _invoice(self, invoice_id: str, *, param: str = "id") -> dict[str, Any]:
        invoice = self.store.get(invoice_id, "invoice")
        if invoice is None:
            raise ApiError.missing("invoice", invoice_id, param=param)
        return invoice

    @staticmethod
    def _require_draft(invoice: dict[str, Any], action: str) -> None:
        if invoice["status"] != "draft":
            raise ApiError.invalid(
                f"You can only {action} a draft invoice; this one is {invoice['status']}.",
                code="invoice_not_editable",
            )

    def _lines(self, invoice: dict[str, Any]) -> list[dict[str, Any]]:
        items = self.store.find("invoiceitem", {"invoice": invoice["id"]}, newest_first=False)
        rates = {r: self._tax_rate(r) for i in items for r in i["tax_rates"]}
        rates.update({r: self._tax_rate(r) for r in invoice["default_tax_rates"]})
        lines = []
        for item in items:
            applied = item["tax_rates"] or invoice["default_tax_rates"]
            lines.append(
                {
                    "id": "il_" + item["id"].removeprefix("ii_"),
                    "object": "line_item",
                    "amount": item["amount"],
                    "currency": item["currency"],
                    "description": item["description"],
                    "discount_amounts": [],
                    "discountable": item["discountable"],
                    "discounts": [],
                    "invoice": invoice["id"],
                    "livemode": False,
                    "metadata": item["metadata"],
                    "parent": {
                        "type": "invoice_item_details",
                        "invoice_item_details": {
                            "invoice": invoice["id"],
                            "invoice_item": item["id"],
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": None,
                        },
                        "subscription_item_details": None,
                    },
                    "period": item["period"],
                    "pretax_credit_amounts": [],
                    "pricing": item["pricing"],
                    "quantity": item["quantity"],
                    "quantity_decimal": item["quantity_decimal"],
                    "subtotal": item["amount"],
                    "taxes": [_line_tax(item["amount"], rates[r]) for r in applied],
                }
            )
        return lines

    def _totals(self, invoice: dict[str, Any]) -> dict[str, Any]:
        lines = self._lines(invoice)
        subtotal = sum(line["amount"] for line in lines)
        by_rate: dict[str, dict[str, Any]] = {}
        for line in lines:
            for tax in line["taxes"]:
                rate_id = tax["tax_rate_details"]["tax_rate"]
                agg = by_rate.setdefault(rate_id, {**tax, "amount": 0, "taxable_amount": 0})
                agg["amount"] += tax["amount"]
                agg["taxable_amount"] += tax["taxable_amount"]
        exclusive = sum(t["amount"] for t in by_rate.values() if t["tax_behavior"] == "exclusive")
        inclusive = sum(t["amount"] for t in by_rate.values() if t["tax_behavior"] == "inclusive")
        return {
            "lines": lines,
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal - inclusive,
            "total": subtotal + exclusive,
            "total_excluding_tax": subtotal - inclusive,
            "total_taxes": list(by_rate.values()),
        }

    def _render_invoice(self, invoice: dict[str, Any]) -> dict[str, Any]:
        totals = self._totals(invoice)
        lines = totals.pop("lines")
        status = invoice["status"]
        snapshot = invoice["customer_snapshot"] or _customer_snapshot(
            self._customer(invoice["customer"])
        )
        pre_credit = invoice.get("pre_payment_credit_notes_amount", 0)
        post_credit = invoice.get("post_payment_credit_notes_amount", 0)
        amount_due = totals["total"] - pre_credit
        remaining = amount_due - invoice["amount_paid"] if status in ("draft", "open") else 0
        if status == "uncollectible":
            remaining = amount_due - invoice["amount_paid"]
        internal = ("customer_snapshot", "days_until_due")
        public = {k: v for k, v in invoice.items() if k not in internal}
        return {
            **public,
            **snapshot,
            **totals,
            "amount_due": amount_due,
            "amount_overpaid": 0,
            "amount_remaining": remaining,
            "amount_shipping": 0,
            "application": None,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "custom_fields": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [_public(self._tax_rate(r)) for r in invoice["default_tax_rates"]],
            "discounts": [],
            "ending_balance": None if status == "draft" else 0,
            "from_invoice": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": {
                "object": "list",
                "data": lines[:EMBEDDED_LINES],
                "has_more": len(lines) > EMBEDDED_LINES,
                "total_count": len(lines),
                "url": f"/v1/invoices/{invoice['id']}/lines",
            },
            "next_payment_attempt": None,
            "on_behalf_of": None,
            "parent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "post_payment_credit_notes_amount": post_credit,
            "pre_payment_credit_notes_amount": pre_credit,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "test_clock": None,
            "threshold_reason": None,
            "total_discount_amounts": [],
            "total_pretax_credit_amounts": [],
            "webhooks_delivered_at": None,
        }

    # -------------------------------------------------------------------- events

    def retrieve_event(self, event_id: str) -> dict[str, Any]:
        event = self.store.get(event_id, "event")
        if event is None:
            raise ApiError.missing("event", event_id)
        return event

    def list_events(self, params: dict[str, Any]) -> dict[str, Any]:
        """Stripe's `GET /v1/events`: `type` (one exact type) or `types` (up to 20), and
        `created` as a timestamp or a range (`created[gte]=...`; gt, gte, lt, lte)."""
        f.check_known(
            params, ("limit", "starting_after", "ending_before", "type", "types", "created")
        )
        kind = f.opt_str(params, "type")
        kinds = f.opt_list(params, "types")
        if kind is not None and kinds is not None:
            raise ApiError.invalid(
                "You may only specify one of these parameters: type, types.",
                param="types",
                code="parameters_exclusive",
            )
        filters: dict[str, Any] = {"type": kind} if kind else {}
        one_of: dict[str, list[Any]] = {}
        if kinds is not None:
            if len(kinds) > 20 or not all(isinstance(k, str) and k for k in kinds):
                raise ApiError.invalid(
                    "Invalid array: types must hold at most 20 event types", param="types"
                )
            one_of["type"] = kinds
        return self._list(
            "event", "/v1/events", params, filters, one_of=one_of, ranges=_created(params)
        )

    def _event(
        self,
        kind: str,
        obj: dict[str, Any],
        ctx: RequestContext,
        *,
        previous: dict[str, Any] | None = None,
    ) -> None:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event_id = new_id("evt")
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1 if self.webhooks_enabled else 0,
            "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": kind,
        }
        self.store.insert(event)
        ctx.events.append(event_id)

    # ------------------------------------------------------------------- listing

    def _list(
        self,
        type_: str,
        url: str,
        params: dict[str, Any],
        filters: dict[str, Any],
        *,
        one_of: dict[str, list[Any]] | None = None,
        ranges: dict[str, dict[str, int]] | None = None,
    ) -> dict[str, Any]:
        """Newest first, `limit` (1-100, default 10), cursors by object id, as Stripe pages."""
        limit = _limit(params)
        after = f.opt_str(params, "starting_after")
        before = f.opt_str(params, "ending_before")
        if after and before:
            raise ApiError.invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="starting_after",
                code="parameters_exclusive",
            )
        if before is not None:
            rows = self.store.find(
                type_,
                filters,
                newest_first=False,
                after_seq=self._cursor(type_, before, "ending_before"),
                limit=limit + 1,
                one_of=one_of,
                ranges=ranges,
            )
            has_more = len(rows) > limit
            data = list(reversed(rows[:limit]))
        else:
            seq = self._cursor(type_, after, "starting_after") if after else None
            rows = self.store.find(
                type_, filters, after_seq=seq, limit=limit + 1, one_of=one_of, ranges=ranges
            )
            has_more = len(rows) > limit
            data = rows[:limit]
        return {"object": "list", "data": data, "has_more": has_more, "url": url}

    def _cursor(self, type_: str, object_id: str, param: str) -> int:
        seq = self.store.seq_of(object_id, type_)
        if seq is None:
            raise ApiError.missing(type_, object_id, param=param)
        return seq


def _created(params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """`created=<unix>` or `created[gte]=<unix>` (gt, gte, lt, lte), as Stripe lists take it."""
    value = params.get("created")
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {
            "created": {"gte": _timestamp(value, "created"), "lte": _timestamp(value, "created")}
        }
    f.check_known(value, ("gt", "gte", "lt", "lte"), prefix="created")
    return {"created": {op: _timestamp(v, f"created[{op}]") for op, v in value.items()}}


def _timestamp(value: Any, param: str) -> int:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise ApiError.invalid(f"Invalid integer: {value}", param=param)


def _limit(params: dict[str, Any]) -> int:
    limit = f.opt_int(params, "limit")
    if limit is None:
        return 10
    if not 1 <= limit <= 100:
        raise ApiError.invalid("This value must be between 1 and 100 (inclusive).", param="limit")
    return limit


def _invoice_prefix() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


def _customer_snapshot(customer: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_address": customer["address"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": customer["shipping"],
        "customer_tax_exempt": customer["tax_exempt"],
        "customer_tax_ids": [],
    }


def _line_tax(amount: int, rate: dict[str, Any]) -> dict[str, Any]:
    percentage = Decimal(rate["percentage_decimal"])
    if rate["inclusive"]:
        net = Decimal(amount) * 100 / (100 + percentage)
        tax = Decimal(amount) - net.to_integral_value(ROUND_HALF_UP)
        taxable = amount - int(tax)
    else:
        tax = Decimal(amount) * percentage / 100
        taxable = amount
    return {
        "amount": int(tax.to_integral_value(ROUND_HALF_UP)),
        "tax_behavior": "inclusive" if rate["inclusive"] else "exclusive",
        "tax_rate_details": {"tax_rate": rate["id"]},
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def _public(rate: dict[str, Any]) -> dict[str, Any]:
    """The stored tax rate keeps its exact percentage; Stripe shows only the number."""
    return {k: v for k, v in rate.items() if k != "percentage_decimal"}


def _decimal_str(value: Decimal) -> str:
    return format(value.normalize(), "f")
