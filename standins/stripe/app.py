"""HTTP layer of the Stripe stand-in: routing, API keys, idempotency keys, transactions."""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from standins.faults import FaultInjector
from standins.stripe.api import API_VERSION, RequestContext, StripeApi
from standins.stripe.credit_notes import CreditNotes
from standins.stripe.errors import ApiError, injected_error_body
from standins.stripe.forms import parse_form
from standins.stripe.store import Store
from standins.stripe.webhooks import WebhookSender

log = logging.getLogger("standins.stripe")

WEBHOOK_SECRET_ENV = "STANDIN_STRIPE_WEBHOOK_SECRET"
#: Stripe keeps idempotent results for at least 24 hours.
IDEMPOTENCY_TTL_S = 24 * 3600
IDEMPOTENCY_KEY_MAX = 255

Handler = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    #: Handlers that change state take a RequestContext and run under an idempotency key.
    mutating: bool


def _endpoints(api: StripeApi) -> list[Endpoint]:
    oid = r"(?P<object_id>[A-Za-z0-9_]+)"
    notes = CreditNotes(api)
    table: list[tuple[str, str, Handler, bool]] = [
        ("POST", "/v1/customers", api.create_customer, True),
        ("GET", "/v1/customers", api.list_customers, False),
        ("GET", f"/v1/customers/{oid}", _no_params(api.retrieve_customer), False),
        ("POST", f"/v1/customers/{oid}", api.update_customer, True),
        ("POST", "/v1/tax_rates", api.create_tax_rate, True),
        ("GET", "/v1/tax_rates", api.list_tax_rates, False),
        ("GET", f"/v1/tax_rates/{oid}", _no_params(api.retrieve_tax_rate), False),
        ("POST", "/v1/invoiceitems", api.create_invoice_item, True),
        ("GET", "/v1/invoiceitems", api.list_invoice_items, False),
        ("GET", f"/v1/invoiceitems/{oid}", _no_params(api.retrieve_invoice_item), False),
        ("DELETE", f"/v1/invoiceitems/{oid}", _ctx_only(api.delete_invoice_item), True),
        ("POST", "/v1/invoices", api.create_invoice, True),
        ("GET", "/v1/invoices", api.list_invoices, False),
        ("GET", f"/v1/invoices/{oid}", _no_params(api.retrieve_invoice), False),
        ("POST", f"/v1/invoices/{oid}", api.update_invoice, True),
        ("DELETE", f"/v1/invoices/{oid}", _ctx_only(api.delete_invoice), True),
        ("GET", f"/v1/invoices/{oid}/lines", api.list_invoice_lines, False),
        ("POST", f"/v1/invoices/{oid}/finalize", api.finalize_invoice, True),
        ("POST", f"/v1/invoices/{oid}/pay", api.pay_invoice, True),
        ("POST", f"/v1/invoices/{oid}/void", api.void_invoice, True),
        ("POST", f"/v1/invoices/{oid}/mark_uncollectible", api.mark_uncollectible, True),
        ("POST", "/v1/credit_notes", notes.create_credit_note, True),
        ("GET", "/v1/credit_notes", notes.list_credit_notes, False),
        ("GET", f"/v1/credit_notes/{oid}", _no_params(notes.retrieve_credit_note), False),
        ("GET", f"/v1/credit_notes/{oid}/lines", notes.list_credit_note_lines, False),
        ("POST", f"/v1/credit_notes/{oid}/void", notes.void_credit_note, True),
        ("GET", "/v1/events", api.list_events, False),
        ("GET", f"/v1/events/{oid}", _no_params(api.retrieve_event), False),
    ]
    return [Endpoint(m, re.compile(f"^{p}$"), h, mut) for m, p, h, mut in table]


def _no_params(fn: Callable[[str], dict[str, Any]]) -> Handler:
    def handler(object_id: str, params: dict[str, Any]) -> dict[str, Any]:
        _only_expand(params)
        return fn(object_id)

    return handler


def _ctx_only(fn: Callable[[str, RequestContext], dict[str, Any]]) -> Handler:
    def handler(object_id: str, params: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        _only_expand(params)
        return fn(object_id, ctx)

    return handler


def _only_expand(params: dict[str, Any]) -> None:
    for name in params:
        if name != "expand":
            raise ApiError.invalid(
                f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
            )


class StripeStandin:
    def __init__(
        self,
        db: str | Path,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = Store(db)
        self.webhooks = WebhookSender(self.store, webhook_url, webhook_secret)
        self.api = StripeApi(self.store, webhooks_enabled=self.webhooks.enabled, clock=clock)
        self.clock = clock
        self.endpoints = _endpoints(self.api)
        #: (account, idempotency key) of the requests being answered.
        self._in_flight: set[tuple[str, str]] = set()

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.webhooks.resend_pending()
        try:
            yield
        finally:
            await self.webhooks.aclose()
            self.store.close()

    def starlette(self) -> Starlette:
        methods = ["GET", "POST", "DELETE"]
        return Starlette(
            routes=[
                Route("/i/{invoice_id}", self.hosted_invoice, methods=["GET"]),
                Route("/{path:path}", self.dispatch, methods=methods),
            ],
            lifespan=self.lifespan,
        )

    async def dispatch(self, request: Request) -> Response:
        request_id = "req_" + secrets.token_hex(7)
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION}
        try:
            endpoint, groups = self._route(request.method, request.url.path)
            account = _account(request)
        except ApiError as exc:
            return _json(exc.status, exc.body(), headers)
        key = request.headers.get("idempotency-key") if endpoint.mutating else None
        if key is None:
            return await self._handle(request, endpoint, groups, account, None, headers)
        headers["Idempotency-Key"] = key
        # Stripe holds a key from the moment a request arrives until it has answered; a
        # request with the same key meanwhile is refused, to be retried (not replayed).
        if (account, key) in self._in_flight:
            return _json(409, ApiError.key_in_use().body(), headers)
        self._in_flight.add((account, key))
        try:
            return await self._handle(request, endpoint, groups, account, key, headers)
        finally:
            self._in_flight.discard((account, key))

    async def _handle(
        self,
        request: Request,
        endpoint: Endpoint,
        groups: dict[str, str],
        account: str,
        key: str | None,
        headers: dict[str, str],
    ) -> Response:
        try:
            if request.method == "POST":
                params = parse_form(await request.body())
            else:
                params = parse_form(request.url.query)
        except ApiError as exc:
            return _json(exc.status, exc.body(), headers)
        if key is not None:
            early = self._check_idempotency(account, key, request, params, headers)
            if early is not None:
                return early
        ctx = RequestContext(
            request_id=headers["Request-Id"], base_url=str(request.base_url), idempotency_key=key
        )
        status, body = self._run(endpoint, groups, params, ctx, account, key, request)
        self.webhooks.send(ctx.events)
        return _json(status, body, headers)

    def _route(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
        for endpoint in self.endpoints:
            match = endpoint.pattern.match(path)
            if match and endpoint.method == method:
                return endpoint, match.groupdict()
        raise ApiError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs"
            " or we can help at https://support.stripe.com/.",
        )

    def _check_idempotency(
        self,
        account: str,
        key: str,
        request: Request,
        params: dict[str, Any],
        headers: dict[str, str],
    ) -> Response | None:
        if len(key) > IDEMPOTENCY_KEY_MAX:
            error = ApiError.invalid(
                f"Idempotency-Key must be at most {IDEMPOTENCY_KEY_MAX} characters long.",
                param="Idempotency-Key",
            )
            return _json(400, error.body(), headers)
        stored = self.store.idempotent_result(account, key, since=self.clock() - IDEMPOTENCY_TTL_S)
        if stored is None:
            return None
        endpoint = f"{request.method} {request.url.path}"
        if stored.endpoint != endpoint:
            message = (
                "Keys for idempotent requests can only be used for the same endpoint they"
                f" were first used for ('{stored.endpoint}' vs '{endpoint}'). Try using a key"
                f" other than '{key}' if you meant to execute a different request."
            )
        elif stored.fingerprint != _fingerprint(params):
            message = (
                "Keys for idempotent requests can only be used with the same parameters they"
                f" were first used with. Try using a key other than '{key}' if you meant to"
                " execute a different request."
            )
        else:
            replay = {
                **headers,
                "Idempotent-Replayed": "true",
                "Original-Request": stored.request_id,
            }
            return Response(
                stored.body,
                status_code=stored.status,
                headers=replay,
                media_type="application/json",
            )
        return _json(400, ApiError(400, "idempotency_error", message).body(), headers)

    def _run(
        self,
        endpoint: Endpoint,
        groups: dict[str, str],
        params: dict[str, Any],
        ctx: RequestContext,
        account: str,
        key: str | None,
        request: Request,
    ) -> tuple[int, dict[str, Any]]:
        """One transaction per request; nothing in here awaits, so requests never interleave."""
        self.store.begin()
        try:
            if endpoint.mutating:
                result = endpoint.handler(*groups.values(), params, ctx)
            else:
                result = endpoint.handler(*groups.values(), params)
            status, body, keep = 200, result, True
        except ApiError as exc:
            status, body, keep = exc.status, exc.body(), exc.keep_effects
        except Exception:
            self.store.rollback()
            log.exception("stand-in failure on %s %s", request.method, request.url.path)
            ctx.events.clear()
            return 500, ApiError(500, "api_error", "An unknown error occurred").body()
        if not keep:
            self.store.rollback()
            ctx.events.clear()
            return status, body
        if key is not None:
            self.store.keep_result(
                account,
                key,
                endpoint=f"{request.method} {request.url.path}",
                fingerprint=_fingerprint(params),
                status=status,
                body=json.dumps(body),
                request_id=ctx.request_id,
                now=self.clock(),
            )
        self.store.commit()
        return status, body

    async def hosted_invoice(self, request: Request) -> Response:
        """A bare stand-in for Stripe's hosted invoice page, for the demo's links."""
        invoice_id = request.path_params["invoice_id"]
        invoice = self.store.get(invoice_id, "invoice")
        if invoice is None or invoice["status"] == "draft":
            return HTMLResponse("<h1>Invoice not found</h1>", status_code=404)
        rendered = self.api.retrieve_invoice(invoice_id)
        rows = "".join(
            f"<tr><td>{html.escape(line['description'] or '')}</td>"
            f"<td>{html.escape(str(line['quantity_decimal']))}</td>"
            f"<td>{line['amount']}</td></tr>"
            for line in rendered["lines"]["data"]
        )
        page = (
            f"<h1>Invoice {html.escape(rendered['number'] or '')}</h1>"
            f"<p>Status: {html.escape(rendered['status'])}</p>"
            f"<table>{rows}</table>"
            f"<p>Total: {rendered['total']} {html.escape(rendered['currency'].upper())}"
            " (minor units)</p>"
        )
        return HTMLResponse(page)


def _account(request: Request) -> str:
    """Any test-mode secret key is an account of its own; idempotency keys live in it."""
    header = request.headers.get("authorization", "")
    key = ""
    if header.startswith("Bearer "):
        key = header.removeprefix("Bearer ").strip()
    elif header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        key = decoded.partition(":")[0]
    if not key:
        raise ApiError(
            401,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the"
            " Authorization header, using Bearer auth (e.g. 'Authorization: Bearer"
            " YOUR_SECRET_KEY').",
        )
    if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
        raise ApiError(
            401,
            "invalid_request_error",
            f"Invalid API Key provided: {key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}",
            code="api_key_invalid" if key.startswith("sk_") else None,
        )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _json(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    return Response(
        json.dumps(body, indent=2),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def create_app(
    db: str | Path,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    clock: Callable[[], float] = time.time,
) -> FaultInjector:
    standin = StripeStandin(db, webhook_url=webhook_url, webhook_secret=webhook_secret, clock=clock)
    return FaultInjector(standin.starlette(), error_body=injected_error_body)


def build_app(args: argparse.Namespace) -> ASGIApp:
    secret = os.environ.get(WEBHOOK_SECRET_ENV) or None
    if args.webhook_url and not secret:
        raise SystemExit(f"--webhook-url needs the signing secret in {WEBHOOK_SECRET_ENV}")
    if not args.webhook_url:
        log.warning("no --webhook-url: events are kept at /v1/events but not sent")
    return create_app(args.db, webhook_url=args.webhook_url, webhook_secret=secret)
