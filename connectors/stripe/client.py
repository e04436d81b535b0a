"""Stripe as q2c's billing engine, over the official `stripe` library.

The library does the wire work (form encoding, `Idempotency-Key`, API version, error
parsing, webhook signatures); this module adds q2c's rules on top:

- no retries of its own (`max_network_retries=0`): Temporal is the one retry owner, and
  every failure leaves here as a class of `connectors.errors`;
- every mutating call takes the caller's idempotency key and derives one key per Stripe
  request from it, so a whole activity can be re-run and Stripe replays each step;
- answers are parsed from the raw JSON into `wire` models, keeping numbers exact.

Stripe keeps idempotency keys for 24 hours. Past that window a replayed state change
(finalize, pay, void) meets an invoice already in the wanted state; that is taken as
done rather than an error, so a late retry still converges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import stripe
from pydantic import BaseModel

from canonical import Customer, Invoice, InvoiceLine, Payment
from connectors import correlation, webhook_json
from connectors.errors import (
    AuthFailed,
    ConflictError,
    ConnectorError,
    IdempotencyConflict,
    NotFound,
    PermanentError,
    RateLimitedError,
    TransientError,
    ValidationFailed,
    error_for_status,
    parse_retry_after,
)
from connectors.signing import WebhookError, verify_signature
from connectors.stripe import mapping, wire
from connectors.timeouts import STRIPE_HTTP_TIMEOUT

SYSTEM = mapping.SYSTEM
#: Largest page Stripe serves.
PAGE_LIMIT = 100
#: Webhook timestamps further than this from now are refused (Stripe's libraries: 5 minutes).
WEBHOOK_TOLERANCE_S = 300
SIGNATURE_HEADER = "Stripe-Signature"

M = TypeVar("M", bound=BaseModel)


class PaymentDeclined(PermanentError):
    """The card or bank refused the charge; another attempt needs a new payment method."""

    error_type = "PaymentDeclined"

    def __init__(self, message: str, *, decline_code: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.decline_code = decline_code


class WebhookRejected(Exception):
    """A webhook whose signature is missing, wrong or too old, or whose body is no event."""


def verify_webhook(
    payload: bytes,
    signature_header: str | None,
    secret: str,
    tolerance: int = WEBHOOK_TOLERANCE_S,
) -> dict[str, Any]:
    """The event, once `Stripe-Signature` proves Stripe sent exactly these bytes recently.

    `Stripe-Signature` is the scheme of `connectors.signing` (`t=<unix>,v1=<hex HMAC-SHA256
    of "t.payload">`), checked there rather than by `stripe.WebhookSignature`: the library
    decodes the body as UTF-8 before it checks the signature (so anyone, without the secret,
    could make it fail on bytes that are not UTF-8) and accepts timestamps from the future.
    Here the HMAC covers the raw bytes, and only a verified body is decoded and parsed,
    with `webhook_json`'s refusals (JSON fractions come back as `Decimal`, never `float`).
    """
    try:
        verify_signature(
            payload,
            signature_header,
            secret,
            header_name=SIGNATURE_HEADER,
            tolerance=timedelta(seconds=tolerance),
        )
        event = webhook_json.parse(payload)
    except WebhookError as exc:
        raise WebhookRejected(str(exc)) from None
    if not isinstance(event, dict) or event.get("object") != "event":
        raise WebhookRejected("webhook body is not a Stripe event")
    return event


def classify(exc: stripe.StripeError) -> ConnectorError:
    """The one place a Stripe failure becomes a class in `connectors.errors`."""
    status = exc.http_status
    message = exc.user_message or str(exc) or type(exc).__name__
    # The library keeps `code` only on some classes (not on a 409's APIError): read the body.
    body = exc.json_body.get("error") if isinstance(exc.json_body, dict) else None
    code = exc.code or (body.get("code") if isinstance(body, dict) else None)
    param = getattr(exc, "param", None)
    common: dict[str, Any] = {"system": SYSTEM, "status": status, "code": code}
    if isinstance(exc, stripe.IdempotencyError):
        # The key was used with other parameters or on another endpoint: a bug, not a race.
        return IdempotencyConflict(message, **common)
    if code == "idempotency_key_in_use":
        # Another request with this key is still in flight (409): its answer will be replayed.
        return ConflictError(message, **common)
    if isinstance(exc, stripe.CardError):
        body = exc.json_body or {}
        decline = body.get("error", {}).get("decline_code") if isinstance(body, dict) else None
        return PaymentDeclined(message, decline_code=decline, field=param, **common)
    if isinstance(exc, stripe.RateLimitError):
        delay = parse_retry_after(_header(exc, "Retry-After"))
        return RateLimitedError(message, retry_after=delay, **common)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthFailed(message, **common)
    if isinstance(exc, stripe.APIConnectionError):
        return TransientError(message, system=SYSTEM, code=code)
    if isinstance(exc, stripe.InvalidRequestError):
        if status == 404:
            return NotFound(message, field=param, **common)
        return ValidationFailed(message, field=param, **common)
    if status is None:
        return TransientError(message, system=SYSTEM, code=code)
    return error_for_status(
        status,
        message,
        system=SYSTEM,
        field=param,
        code=code,
        retry_after=_header(exc, "Retry-After"),
    )


def _header(exc: stripe.StripeError, name: str) -> str | None:
    headers = exc.headers or {}
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        raise classify(exc) from exc


class StripeBilling:
    """The billing role on Stripe. One instance per API key; close it when done."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: httpx.Timeout = STRIPE_HTTP_TIMEOUT,
    ) -> None:
        # Every phase bounded: `connectors.timeouts.STRIPE_CALL_MAX` is what a call can take.
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url} if base_url else None,
            http_client=self._http,
            max_network_retries=0,
        )
        # Tax rates never change percentage once created, so both lookups can be cached.
        self._rate_by_percentage: dict[Decimal, str] = {}
        self._percentage_by_rate: dict[str, Decimal] = {}

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _request(
        self,
        method: str,
        path: str,
        model: type[M],
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> M:
        options: dict[str, Any] = {}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        if headers := correlation.outbound_headers():
            options["headers"] = headers
        with _translated():
            response = await self._client.raw_request_async(
                method, path, **dict(params or {}), **options
            )
        return model.model_validate_json(response.body)

    # ----------------------------------------------------------------- customers

    async def create_customer(self, customer: Customer, *, idempotency_key: str) -> str:
        """The Stripe customer id for a canonical customer (`cus_...`)."""
        created = await self._request(
            "post",
            "/v1/customers",
            wire.Customer,
            mapping.customer_params(customer),
            idempotency_key=idempotency_key,
        )
        return created.id

    async def update_customer(
        self, customer_id: str, customer: Customer, *, idempotency_key: str
    ) -> None:
        await self._request(
            "post",
            f"/v1/customers/{customer_id}",
            wire.Customer,
            mapping.customer_params(customer, update=True),
            idempotency_key=idempotency_key,
        )

    async def set_customer_status(
        self, customer_id: str, status: str, *, idempotency_key: str
    ) -> None:
        """Mark the billing account active or inactive (a compensation deactivates it)."""
        await self._request(
            "post",
            f"/v1/customers/{customer_id}",
            wire.Customer,
            {"metadata": {mapping.META_STATUS: status}},
            idempotency_key=idempotency_key,
        )

    async def get_customer_metadata(self, customer_id: str, key: str) -> str:
        """One metadata value of the customer ("" when it has none)."""
        customer = await self.get_customer(customer_id)
        return str(customer.metadata.get(key, ""))

    async def set_customer_metadata(
        self, customer_id: str, values: Mapping[str, str], *, idempotency_key: str
    ) -> None:
        """Set metadata values on the customer; "" removes a key (as Stripe does)."""
        await self._request(
            "post",
            f"/v1/customers/{customer_id}",
            wire.Customer,
            {"metadata": dict(values)},
            idempotency_key=idempotency_key,
        )

    async def get_customer(self, customer_id: str) -> wire.Customer:
        return await self._request("get", f"/v1/customers/{customer_id}", wire.Customer)

    async def list_customers(
        self, *, limit: int = PAGE_LIMIT, starting_after: str | None = None
    ) -> wire.ListObject[wire.Customer]:
        """One page, newest first; pass the last id as `starting_after` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        return await self._request("get", "/v1/customers", wire.ListObject[wire.Customer], params)

    # ------------------------------------------------------------------ invoices

    async def create_invoice(
        self,
        invoice: Invoice,
        *,
        customer_id: str,
        idempotency_key: str,
        days_until_due: int,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """A draft invoice holding the canonical invoice's lines; returns its `in_...` id.

        Several Stripe calls, each with a key derived from `idempotency_key`: run it again
        after any failure and Stripe answers the finished steps from its idempotency store.
        """
        rate_ids: dict[Decimal, str] = {}
        for rate in sorted({line.tax_rate for line in invoice.lines if line.tax_rate}):
            rate_ids[rate] = await self._tax_rate_id(
                mapping.tax_percentage(rate), idempotency_key=f"{idempotency_key}:tax_rate"
            )
        draft = await self._request(
            "post",
            "/v1/invoices",
            wire.Invoice,
            mapping.invoice_params(
                invoice,
                customer_id=customer_id,
                days_until_due=days_until_due,
                metadata=metadata,
            ),
            idempotency_key=f"{idempotency_key}:invoice",
        )
        for n, line in enumerate(invoice.lines):
            await self._request(
                "post",
                "/v1/invoiceitems",
                wire.InvoiceItem,
                mapping.invoice_item_params(
                    line,
                    customer_id=customer_id,
                    invoice_id=draft.id,
                    tax_rate_id=rate_ids.get(line.tax_rate),
                ),
                idempotency_key=f"{idempotency_key}:item:{n}",
            )
        return draft.id

    async def finalize_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice:
        """Numbered and open for payment; nothing on it can change any more."""
        return await self._transition(
            invoice_id, "finalize", {"open", "paid", "uncollectible"}, idempotency_key
        )

    async def pay_invoice(
        self, invoice_id: str, *, idempotency_key: str, paid_out_of_band: bool = False
    ) -> Invoice:
        """Charge the customer's payment method, or record money received elsewhere.

        A declined charge raises `PaymentDeclined`; Stripe emits `invoice.payment_failed`.
        """
        params = {"paid_out_of_band": True} if paid_out_of_band else None
        return await self._transition(invoice_id, "pay", {"paid"}, idempotency_key, params)

    async def void_invoice(self, invoice_id: str, *, idempotency_key: str) -> Invoice:
        return await self._transition(invoice_id, "void", {"void"}, idempotency_key)

    async def mark_uncollectible(self, invoice_id: str, *, idempotency_key: str) -> Invoice:
        return await self._transition(
            invoice_id, "mark_uncollectible", {"uncollectible"}, idempotency_key
        )

    async def delete_draft_invoice(self, invoice_id: str, *, idempotency_key: str) -> None:
        """Undo `create_invoice` while the invoice is a draft (a saga's compensation)."""
        try:
            await self._request(
                "delete",
                f"/v1/invoices/{invoice_id}",
                wire.Wire,
                idempotency_key=idempotency_key,
            )
        except NotFound:
            return  # already deleted: the compensation's goal holds

    async def get_invoice(self, invoice_id: str) -> Invoice:
        stripe_invoice = await self.get_stripe_invoice(invoice_id)
        return await self._to_canonical(stripe_invoice)

    async def get_stripe_invoice(self, invoice_id: str) -> wire.Invoice:
        return await self._request("get", f"/v1/invoices/{invoice_id}", wire.Invoice)

    async def list_events(
        self,
        types: Sequence[str],
        *,
        created_gte: int,
        limit: int = PAGE_LIMIT,
        starting_after: str | None = None,
    ) -> wire.ListObject[wire.Event]:
        """One page of `GET /v1/events` of these types created at or after `created_gte`
        (unix seconds), newest first; pass the last id as `starting_after` for the next.

        Stripe keeps events 30 days: what a lost webhook would have said, with its event id.
        """
        params: dict[str, Any] = {
            "types": list(types),
            "created": {"gte": created_gte},
            "limit": limit,
        }
        if starting_after:
            params["starting_after"] = starting_after
        return await self._request("get", "/v1/events", wire.ListObject[wire.Event], params)

    async def get_payment(self, invoice_id: str) -> Payment | None:
        """The payment that settled the invoice, or None while it is unpaid."""
        return mapping.payment_from_stripe(await self.get_stripe_invoice(invoice_id))

    # -------------------------------------------------------------- credit notes

    async def create_credit_note(
        self,
        invoice_id: str,
        lines: Sequence[InvoiceLine],
        *,
        memo: str | None,
        idempotency_key: str,
        reason: str = "order_change",
    ) -> mapping.CreditNote:
        """Credit these lines on a finalized (open or paid) invoice; the invoice is untouched.

        On an open invoice the credit lowers `amount_remaining`; on a paid one it goes to the
        customer's balance. Crediting more than remains creditable is refused by Stripe
        (`ValidationFailed` naming `lines`). Idempotent by `idempotency_key`: Stripe replays
        the answer for 24 hours, and the key also rides in the note's metadata, so a retry
        after that finds the note instead of crediting twice. Re-billing at new terms is a
        normal new invoice (`create_invoice`).
        """
        if existing := await self._credit_note_by_key(invoice_id, idempotency_key):
            nets = [line.net for line in lines]
            asked = sum(nets[1:], nets[0]) if nets else None
            if asked != existing.subtotal or len(lines) != len(existing.lines):
                raise IdempotencyConflict(
                    f"credit note {existing.id} was made under key {idempotency_key!r} for"
                    f" {existing.subtotal}, not for these lines",
                    system=SYSTEM,
                )
            return existing
        invoice = await self.get_stripe_invoice(invoice_id)
        currency = invoice.currency.upper()
        rate_ids: dict[Decimal, str] = {}
        for rate in sorted({line.tax_rate for line in lines if line.tax_rate}):
            rate_ids[rate] = await self._tax_rate_id(
                mapping.tax_percentage(rate), idempotency_key=f"{idempotency_key}:tax_rate"
            )
        try:
            params = mapping.credit_note_params(
                invoice_id,
                lines,
                currency=currency,
                tax_rate_ids=rate_ids,
                memo=memo,
                reason=reason,
                idempotency_key=idempotency_key,
            )
        except ValueError as exc:
            raise ValidationFailed(str(exc), system=SYSTEM, field="lines") from None
        note = await self._request(
            "post",
            "/v1/credit_notes",
            wire.CreditNote,
            params,
            idempotency_key=f"{idempotency_key}:credit_note",
        )
        return mapping.credit_note_from_stripe(note)

    async def list_credit_notes(self, invoice_id: str) -> list[mapping.CreditNote]:
        """Every credit note of an invoice, void ones included, oldest first."""
        notes: list[mapping.CreditNote] = []
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"invoice": invoice_id, "limit": PAGE_LIMIT}
            if starting_after:
                params["starting_after"] = starting_after
            page = await self._request(
                "get", "/v1/credit_notes", wire.ListObject[wire.CreditNote], params
            )
            notes.extend(mapping.credit_note_from_stripe(n) for n in page.data)
            if not page.has_more or not page.data:
                break
            starting_after = page.data[-1].id
        return list(reversed(notes))

    async def void_credit_note(
        self, credit_note_id: str, *, idempotency_key: str
    ) -> mapping.CreditNote:
        """Give back what the credit note took (a compensation); a void one stays void."""
        try:
            note = await self._request(
                "post",
                f"/v1/credit_notes/{credit_note_id}/void",
                wire.CreditNote,
                idempotency_key=idempotency_key,
            )
        except ValidationFailed:
            note = await self._request("get", f"/v1/credit_notes/{credit_note_id}", wire.CreditNote)
            if note.status != "void":
                raise
        return mapping.credit_note_from_stripe(note)

    async def _credit_note_by_key(
        self, invoice_id: str, idempotency_key: str
    ) -> mapping.CreditNote | None:
        for note in await self.list_credit_notes(invoice_id):
            if note.idempotency_key == idempotency_key and note.status == "issued":
                return note
        return None

    async def _transition(
        self,
        invoice_id: str,
        action: str,
        done: set[str],
        idempotency_key: str,
        params: Mapping[str, Any] | None = None,
    ) -> Invoice:
        try:
            result = await self._request(
                "post",
                f"/v1/invoices/{invoice_id}/{action}",
                wire.Invoice,
                params,
                idempotency_key=idempotency_key,
            )
        except ValidationFailed as exc:
            # A refused state change may mean it already happened (a retry past the
            # idempotency window, or someone acting in the dashboard): look before failing.
            if (exc.code or "").startswith("parameter_"):
                raise
            current = await self.get_stripe_invoice(invoice_id)
            if current.status not in done:
                raise
            result = current
        return await self._to_canonical(result)

    async def _to_canonical(self, stripe_invoice: wire.Invoice) -> Invoice:
        lines = list(stripe_invoice.lines.data)
        more = stripe_invoice.lines.has_more
        while more:
            page = await self._request(
                "get",
                f"/v1/invoices/{stripe_invoice.id}/lines",
                wire.ListObject[wire.LineItem],
                {"limit": PAGE_LIMIT, "starting_after": lines[-1].id},
            )
            lines.extend(page.data)
            more = page.has_more and bool(page.data)
        rate_ids = {
            t.tax_rate_details.tax_rate for line in lines for t in line.taxes if t.tax_rate_details
        }
        percentages = {rate_id: await self._percentage(rate_id) for rate_id in rate_ids}
        return mapping.invoice_from_stripe(stripe_invoice, lines, percentages)

    # ----------------------------------------------------------------- tax rates

    async def _tax_rate_id(self, percentage: Decimal, *, idempotency_key: str) -> str:
        """An exclusive tax rate q2c made for this percentage, created on first need."""
        if percentage in self._rate_by_percentage:
            return self._rate_by_percentage[percentage]
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_LIMIT, "active": True, "inclusive": False}
            if starting_after:
                params["starting_after"] = starting_after
            page = await self._request(
                "get", "/v1/tax_rates", wire.ListObject[wire.TaxRate], params
            )
            for rate in page.data:
                self._percentage_by_rate[rate.id] = rate.percentage
                if rate.metadata.get("q2c") == "1" and rate.percentage == percentage:
                    self._rate_by_percentage[percentage] = rate.id
                    return rate.id
            if not page.has_more or not page.data:
                break
            starting_after = page.data[-1].id
        created = await self._request(
            "post",
            "/v1/tax_rates",
            wire.TaxRate,
            mapping.tax_rate_params(percentage),
            idempotency_key=f"{idempotency_key}:{percentage}",
        )
        self._rate_by_percentage[percentage] = created.id
        self._percentage_by_rate[created.id] = created.percentage
        return created.id

    async def _percentage(self, rate_id: str) -> Decimal:
        if rate_id not in self._percentage_by_rate:
            rate = await self._request("get", f"/v1/tax_rates/{rate_id}", wire.TaxRate)
            self._percentage_by_rate[rate_id] = rate.percentage
        return self._percentage_by_rate[rate_id]
