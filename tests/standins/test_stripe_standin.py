"""The Stripe stand-in answers as Stripe's documented v1 API does (in process, over ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from standins.stripe import create_app
from standins.stripe.errors import ApiError
from standins.stripe.forms import parse_form
from standins.stripe.webhooks import signature_header

KEY = "sk_test_standin_unit"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(tmp_path / "stripe.sqlite")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://stripe.test", headers=AUTH
    ) as client:
        yield client


async def post(client: httpx.AsyncClient, path: str, data: Any = None, **kw: Any) -> httpx.Response:
    return await client.post(path, data=data or {}, **kw)


async def customer(client: httpx.AsyncClient, **data: str) -> dict[str, Any]:
    response = await post(client, "/v1/customers", {"name": "Acme GmbH", **data})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_form_decoding_follows_stripe_brackets() -> None:
    params = parse_form(
        "metadata[k]=v&metadata[0]=zero&address[city]=Berlin&expand[]=a&expand[]=b"
        "&items[1][price]=p1&items[0][price]=p0&tax_rates[0]=txr_1&empty="
    )
    assert params == {
        "metadata": {"k": "v", "0": "zero"},
        "address": {"city": "Berlin"},
        "expand": ["a", "b"],
        "items": [{"price": "p0"}, {"price": "p1"}],
        "tax_rates": ["txr_1"],
        "empty": "",
    }
    with pytest.raises(ApiError) as bad:
        parse_form("a[b=1")
    assert bad.value.status == 400


async def test_api_key_required_and_checked(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/customers", headers={"Authorization": ""})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "API key" in missing.json()["error"]["message"]

    live = await api.get("/v1/customers", headers={"Authorization": "Bearer sk_live_abc"})
    assert live.status_code == 401

    basic = await api.get("/v1/customers", headers={}, auth=(KEY, ""))
    assert basic.status_code == 200
    assert basic.json()["object"] == "list"


async def test_customer_create_retrieve_update_with_nested_params(
    api: httpx.AsyncClient,
) -> None:
    created = await customer(
        api,
        email="billing@acme.example",
        **{"address[city]": "Berlin", "address[country]": "DE", "metadata[q2c]": "C-1"},
    )
    assert created["id"].startswith("cus_")
    assert created["object"] == "customer"
    assert created["livemode"] is False
    assert created["address"]["city"] == "Berlin"
    assert created["address"]["line1"] is None
    assert created["metadata"] == {"q2c": "C-1"}

    updated = await post(
        api,
        f"/v1/customers/{created['id']}",
        {"metadata[extra]": "x", "metadata[q2c]": "", "email": ""},
    )
    assert updated.status_code == 200
    assert updated.json()["metadata"] == {"extra": "x"}  # merged; a blank value deletes
    assert updated.json()["email"] is None

    fetched = (await api.get(f"/v1/customers/{created['id']}")).json()
    assert fetched == updated.json()


async def test_unknown_missing_and_invalid_parameters_name_the_field(
    api: httpx.AsyncClient,
) -> None:
    unknown = await post(api, "/v1/customers", {"nmae": "typo"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "parameter_unknown"
    assert unknown.json()["error"]["param"] == "nmae"

    missing = await post(api, "/v1/invoices", {})
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "code": "parameter_missing",
        "doc_url": "https://docs.stripe.com/error-codes#parameter-missing",
        "message": "Missing required param: customer.",
        "param": "customer",
    }

    cus = await customer(api)
    bad_int = await post(api, "/v1/invoiceitems", {"customer": cus["id"], "amount": "12.5"})
    assert bad_int.json()["error"]["code"] == "parameter_invalid_integer"
    assert bad_int.json()["error"]["param"] == "amount"

    no_due = await post(
        api, "/v1/invoices", {"customer": cus["id"], "collection_method": "send_invoice"}
    )
    assert no_due.json()["error"]["param"] == "days_until_due"

    gone = await api.get("/v1/invoices/in_doesnotexist")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "resource_missing"
    assert gone.json()["error"]["message"] == "No such invoice: 'in_doesnotexist'"

    nowhere = await api.get("/v1/charges")
    assert nowhere.status_code == 404
    assert "Unrecognized request URL" in nowhere.json()["error"]["message"]


async def test_customer_list_pages_newest_first(api: httpx.AsyncClient) -> None:
    ids = [(await customer(api, name=f"C{n}"))["id"] for n in range(5)]
    newest_first = list(reversed(ids))

    first = (await api.get("/v1/customers", params={"limit": 2})).json()
    assert [c["id"] for c in first["data"]] == newest_first[:2]
    assert first["has_more"] is True
    assert first["url"] == "/v1/customers"

    seen = [c["id"] for c in first["data"]]
    page = first
    while page["has_more"]:
        page = (
            await api.get(
                "/v1/customers", params={"limit": 2, "starting_after": page["data"][-1]["id"]}
            )
        ).json()
        seen += [c["id"] for c in page["data"]]
    assert seen == newest_first

    before = (
        await api.get("/v1/customers", params={"limit": 2, "ending_before": newest_first[3]})
    ).json()
    assert [c["id"] for c in before["data"]] == newest_first[1:3]
    assert before["has_more"] is True

    too_many = await api.get("/v1/customers", params={"limit": 101})
    assert too_many.json()["error"]["param"] == "limit"


async def test_idempotency_key_replays_and_refuses_other_params(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "create-acme-1"}
    first = await post(api, "/v1/customers", {"name": "Acme", "metadata[a]": "1"}, headers=key)
    again = await post(api, "/v1/customers", {"metadata[a]": "1", "name": "Acme"}, headers=key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    listed = (await api.get("/v1/customers", params={"limit": 100})).json()["data"]
    assert [c["id"] for c in listed].count(first.json()["id"]) == 1
    assert len(listed) == 1

    other = await post(api, "/v1/customers", {"name": "Other"}, headers=key)
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"

    elsewhere = await post(api, "/v1/invoices", {"customer": first.json()["id"]}, headers=key)
    assert elsewhere.status_code == 400
    assert elsewhere.json()["error"]["type"] == "idempotency_error"

    # Keys belong to one API key: another account's same key is a new request.
    other_account = await post(
        api,
        "/v1/customers",
        {"name": "Acme", "metadata[a]": "1"},
        headers={**key, "Authorization": "Bearer sk_test_another_account"},
    )
    assert other_account.status_code == 200
    assert other_account.json()["id"] != first.json()["id"]

    # A request refused for its parameters is not kept: fixing them with the key works.
    fix_key = {"Idempotency-Key": "fix-me"}
    refused = await post(api, "/v1/invoices", {}, headers=fix_key)
    assert refused.status_code == 400
    fixed = await post(api, "/v1/invoices", {"customer": first.json()["id"]}, headers=fix_key)
    assert fixed.status_code == 200


async def test_invoice_lifecycle_amounts_taxes_and_numbering(api: httpx.AsyncClient) -> None:
    cus = await customer(api, invoice_prefix="ACME1234")
    rate = (
        await post(
            api,
            "/v1/tax_rates",
            {"display_name": "VAT", "inclusive": "false", "percentage": "19"},
        )
    ).json()
    assert rate["id"].startswith("txr_")
    draft = (
        await post(
            api,
            "/v1/invoices",
            {
                "customer": cus["id"],
                "collection_method": "send_invoice",
                "days_until_due": "30",
                "currency": "eur",
                "metadata[q2c_invoice_id]": "INV-1",
            },
        )
    ).json()
    assert draft["status"] == "draft"
    assert draft["number"] is None
    assert draft["total"] == 0

    # 7.5 h at 123.45 EUR/h = 925.875 EUR -> 92588 cents (half up); 19 % tax per line.
    item = await post(
        api,
        "/v1/invoiceitems",
        {
            "customer": cus["id"],
            "invoice": draft["id"],
            "quantity_decimal": "7.5",
            "unit_amount_decimal": "12345",
            "currency": "eur",
            "description": "Consulting, senior",
            "tax_rates[0]": rate["id"],
        },
    )
    assert item.status_code == 200, item.text
    assert item.json()["amount"] == 92588
    assert item.json()["invoice"] == draft["id"]
    credit = await post(
        api,
        "/v1/invoiceitems",
        {"customer": cus["id"], "invoice": draft["id"], "amount": "-2588", "currency": "eur"},
    )
    assert credit.status_code == 200

    finalized = await post(api, f"/v1/invoices/{draft['id']}/finalize")
    assert finalized.status_code == 200, finalized.text
    inv = finalized.json()
    assert inv["status"] == "open"
    assert inv["number"] == "ACME1234-0001"
    assert inv["subtotal"] == 90000
    assert inv["total_taxes"][0]["amount"] == 17592  # 19 % of 925.88 (the credit is untaxed)
    assert inv["total"] == inv["amount_due"] == inv["amount_remaining"] == 107592
    assert inv["hosted_invoice_url"].endswith(f"/i/{draft['id']}")
    assert inv["due_date"] == inv["status_transitions"]["finalized_at"] + 30 * 86400
    assert [line["amount"] for line in inv["lines"]["data"]] == [92588, -2588]
    assert inv["metadata"] == {"q2c_invoice_id": "INV-1"}

    refinalize = await post(api, f"/v1/invoices/{draft['id']}/finalize")
    assert refinalize.status_code == 400
    assert refinalize.json()["error"]["code"] == "invoice_not_editable"
    late_item = await post(
        api,
        "/v1/invoiceitems",
        {"customer": cus["id"], "invoice": draft["id"], "amount": "100", "currency": "eur"},
    )
    assert late_item.status_code == 400

    paid = await post(api, f"/v1/invoices/{draft['id']}/pay")
    assert paid.json()["status"] == "paid"
    assert paid.json()["amount_paid"] == 107592
    assert paid.json()["amount_remaining"] == 0

    void_paid = await post(api, f"/v1/invoices/{draft['id']}/void")
    assert void_paid.status_code == 400
    assert void_paid.json()["error"]["code"] == "invoice_not_editable"

    second = (await post(api, "/v1/invoices", {"customer": cus["id"], "currency": "eur"})).json()
    await post(
        api,
        "/v1/invoiceitems",
        {"customer": cus["id"], "invoice": second["id"], "amount": "500"},
    )
    assert (await post(api, f"/v1/invoices/{second['id']}/finalize")).json()["number"] == (
        "ACME1234-0002"
    )
    voided = await post(api, f"/v1/invoices/{second['id']}/void")
    assert voided.json()["status"] == "void"

    types = [e["type"] for e in (await api.get("/v1/events", params={"limit": 100})).json()["data"]]
    for expected in ("invoice.finalized", "invoice.paid", "invoice.voided", "customer.created"):
        assert expected in types


async def test_pending_items_join_the_next_invoice_when_asked(api: httpx.AsyncClient) -> None:
    cus = await customer(api)
    for amount in ("1000", "2500"):
        response = await post(
            api, "/v1/invoiceitems", {"customer": cus["id"], "amount": amount, "currency": "usd"}
        )
        assert response.json()["invoice"] is None
    pending = (await api.get("/v1/invoiceitems", params={"pending": "true"})).json()["data"]
    assert len(pending) == 2

    excluded = (await post(api, "/v1/invoices", {"customer": cus["id"]})).json()
    assert excluded["total"] == 0
    included = (
        await post(
            api,
            "/v1/invoices",
            {"customer": cus["id"], "pending_invoice_items_behavior": "include"},
        )
    ).json()
    assert included["total"] == 3500
    assert included["currency"] == "usd"
    assert (await api.get("/v1/invoiceitems", params={"pending": "true"})).json()["data"] == []

    deleted = await api.delete(f"/v1/invoices/{included['id']}")
    assert deleted.json() == {"id": included["id"], "object": "invoice", "deleted": True}
    assert (await api.get(f"/v1/invoices/{included['id']}")).status_code == 404


async def test_many_lines_are_paged(api: httpx.AsyncClient) -> None:
    cus = await customer(api)
    inv = (await post(api, "/v1/invoices", {"customer": cus["id"], "currency": "eur"})).json()
    for n in range(13):
        await post(
            api,
            "/v1/invoiceitems",
            {"customer": cus["id"], "invoice": inv["id"], "amount": str(100 + n)},
        )
    fetched = (await api.get(f"/v1/invoices/{inv['id']}")).json()
    assert len(fetched["lines"]["data"]) == 10
    assert fetched["lines"]["has_more"] is True
    assert fetched["total"] == sum(100 + n for n in range(13))
    rest = (
        await api.get(
            f"/v1/invoices/{inv['id']}/lines",
            params={"limit": 10, "starting_after": fetched["lines"]["data"][-1]["id"]},
        )
    ).json()
    assert [line["amount"] for line in rest["data"]] == [110, 111, 112]
    assert rest["has_more"] is False


async def test_declined_payment_is_recorded_and_replayed(api: httpx.AsyncClient) -> None:
    cus = await customer(api, **{"metadata[standin_payment]": "fail"})
    inv = (await post(api, "/v1/invoices", {"customer": cus["id"], "currency": "eur"})).json()
    await post(
        api, "/v1/invoiceitems", {"customer": cus["id"], "invoice": inv["id"], "amount": "900"}
    )
    await post(api, f"/v1/invoices/{inv['id']}/finalize")

    key = {"Idempotency-Key": "pay-1"}
    declined = await post(api, f"/v1/invoices/{inv['id']}/pay", headers=key)
    assert declined.status_code == 402
    assert declined.json()["error"]["type"] == "card_error"
    assert declined.json()["error"]["code"] == "card_declined"
    replay = await post(api, f"/v1/invoices/{inv['id']}/pay", headers=key)
    assert replay.status_code == 402
    assert replay.headers["Idempotent-Replayed"] == "true"

    after = (await api.get(f"/v1/invoices/{inv['id']}")).json()
    assert after["status"] == "open"
    assert after["attempt_count"] == 1  # the replay did not try again
    failed = (
        await api.get("/v1/events", params={"type": "invoice.payment_failed", "limit": 100})
    ).json()["data"]
    assert [e["data"]["object"]["id"] for e in failed] == [inv["id"]]

    outside = await post(api, f"/v1/invoices/{inv['id']}/pay", {"paid_out_of_band": "true"})
    assert outside.json()["status"] == "paid"


async def test_a_finalize_surcharge_changes_the_finalized_total(api: httpx.AsyncClient) -> None:
    cus = await customer(api, **{"metadata[standin_finalize_surcharge]": "125"})
    inv = (await post(api, "/v1/invoices", {"customer": cus["id"], "currency": "gbp"})).json()
    await post(
        api, "/v1/invoiceitems", {"customer": cus["id"], "invoice": inv["id"], "amount": "900"}
    )
    assert (await api.get(f"/v1/invoices/{inv['id']}")).json()["total"] == 900
    final = (await post(api, f"/v1/invoices/{inv['id']}/finalize")).json()
    assert final["status"] == "open" and final["total"] == 1025
    assert [line["amount"] for line in final["lines"]["data"]] == [900, 125]


async def test_injected_rate_limit_has_stripe_shape(api: httpx.AsyncClient) -> None:
    await api.post(
        "/_standin/faults", json={"kind": "429", "path": "/v1/customers", "retry_after": 3}
    )
    limited = await api.get("/v1/customers")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["error"]["code"] == "rate_limit"
    assert (await api.get("/v1/customers")).status_code == 200


def test_signature_header_matches_stripes_scheme() -> None:
    import stripe as stripe_lib

    payload = b'{"id": "evt_1", "object": "event"}'
    header = signature_header(payload, "whsec_test", 1_700_000_000)
    expected = stripe_lib.WebhookSignature.generate_signature_header(
        payload.decode(), "whsec_test", timestamp=1_700_000_000
    )
    assert header == expected


def test_webhook_url_needs_a_signing_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from standins.stripe import WEBHOOK_SECRET_ENV, build_app

    monkeypatch.delenv(WEBHOOK_SECRET_ENV, raising=False)
    args = argparse.Namespace(db=str(tmp_path / "s.sqlite"), webhook_url="http://127.0.0.1:9/h")
    with pytest.raises(SystemExit, match=WEBHOOK_SECRET_ENV):
        build_app(args)
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, "whsec_x")
    assert build_app(args) is not None


async def test_a_key_in_flight_refuses_its_twin_with_409_then_replays(
    api: httpx.AsyncClient,
) -> None:
    """Stripe holds a key while its first request runs: a concurrent twin gets 409
    `idempotency_key_in_use` and no object; retried after, it replays the first answer."""
    key = {"Idempotency-Key": "create-twin-1"}
    form = b"name=Twin+Ltd&metadata[q2c]=C-9"
    body_sent = asyncio.Event()
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield form[:5]
        body_sent.set()
        await release.wait()  # the first request stays in flight until released
        yield form[5:]

    form_headers = {**key, "Content-Type": "application/x-www-form-urlencoded"}
    first = asyncio.create_task(
        api.post("/v1/customers", content=slow_body(), headers=form_headers)
    )
    await body_sent.wait()
    twin = await post(
        api, "/v1/customers", {"name": "Twin Ltd", "metadata[q2c]": "C-9"}, headers=key
    )
    assert twin.status_code == 409
    assert twin.json()["error"]["code"] == "idempotency_key_in_use"
    assert "Idempotent-Replayed" not in twin.headers
    release.set()
    created = await first
    assert created.status_code == 200, created.text
    retried = await post(
        api, "/v1/customers", {"name": "Twin Ltd", "metadata[q2c]": "C-9"}, headers=key
    )
    assert retried.status_code == 200
    assert retried.json()["id"] == created.json()["id"]
    assert retried.headers["Idempotent-Replayed"] == "true"
    listed = (await api.get("/v1/customers", params={"limit": 100})).json()["data"]
    assert [c["id"] for c in listed] == [created.json()["id"]]
    # Another key is not held up by the one in flight.
    other = await post(api, "/v1/customers", {"name": "Other"}, headers={"Idempotency-Key": "x"})
    assert other.status_code == 200


async def test_events_filter_by_types_and_created_and_page(api: httpx.AsyncClient) -> None:
    cus = await customer(api)
    invoices = []
    for action in ("pay", "void", "mark_uncollectible"):
        inv = (await post(api, "/v1/invoices", {"customer": cus["id"], "currency": "eur"})).json()
        await post(
            api, "/v1/invoiceitems", {"customer": cus["id"], "invoice": inv["id"], "amount": "500"}
        )
        await post(api, f"/v1/invoices/{inv['id']}/finalize")
        extra = {"paid_out_of_band": "true"} if action == "pay" else {}
        await post(api, f"/v1/invoices/{inv['id']}/{action}", extra)
        invoices.append(inv["id"])
    wanted = ["invoice.paid", "invoice.voided", "invoice.marked_uncollectible"]

    first = (await api.get("/v1/events", params={"types[]": wanted, "limit": 2})).json()
    assert first["has_more"] is True
    rest = (
        await api.get(
            "/v1/events",
            params={"types[]": wanted, "limit": 2, "starting_after": first["data"][-1]["id"]},
        )
    ).json()
    found = [(e["type"], e["data"]["object"]["id"]) for e in first["data"] + rest["data"]]
    # Newest first, and only the asked types (no invoice.created, finalized, ...).
    assert found == list(reversed(list(zip(wanted, invoices, strict=True))))
    assert rest["has_more"] is False

    newest = first["data"][0]["created"]
    since = await api.get(
        "/v1/events", params={"types[0]": "invoice.paid", "created[gte]": str(newest)}
    )
    assert all(e["created"] >= newest for e in since.json()["data"])
    later = await api.get("/v1/events", params={"created[gt]": str(newest + 3600)})
    assert later.json()["data"] == []

    both = await api.get("/v1/events", params={"type": "invoice.paid", "types[]": wanted})
    assert both.status_code == 400 and both.json()["error"]["param"] == "types"
    bad = await api.get("/v1/events", params={"created[gte]": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "created[gte]"
