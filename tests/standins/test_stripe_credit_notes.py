"""The Stripe stand-in's credit notes answer as Stripe's `/v1/credit_notes` does (over ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from standins.stripe import create_app

KEY = "sk_test_standin_credit_notes"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(tmp_path / "stripe.sqlite")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stripe.test", headers=AUTH
    ) as client:
        yield client


async def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def open_invoice(api: httpx.AsyncClient, *amounts: int) -> dict[str, Any]:
    """A finalized invoice of these line amounts (cents, EUR), open for payment."""
    cus = await ok(await api.post("/v1/customers", data={"name": "Acme", "invoice_prefix": "ACME"}))
    inv = await ok(
        await api.post(
            "/v1/invoices",
            data={
                "customer": cus["id"],
                "currency": "eur",
                "collection_method": "send_invoice",
                "days_until_due": "30",
            },
        )
    )
    for amount in amounts:
        await ok(
            await api.post(
                "/v1/invoiceitems",
                data={"customer": cus["id"], "invoice": inv["id"], "amount": str(amount)},
            )
        )
    return await ok(await api.post(f"/v1/invoices/{inv['id']}/finalize"))


def credit_lines(*lines: tuple[str, int, int]) -> dict[str, str]:
    form: dict[str, str] = {}
    for n, (description, quantity, unit) in enumerate(lines):
        form[f"lines[{n}][type]"] = "custom_line_item"
        form[f"lines[{n}][description]"] = description
        form[f"lines[{n}][quantity]"] = str(quantity)
        form[f"lines[{n}][unit_amount]"] = str(unit)
    return form


async def event_types(api: httpx.AsyncClient) -> list[str]:
    events = await ok(await api.get("/v1/events", params={"limit": 100}))
    return [e["type"] for e in reversed(events["data"])]


async def test_credit_note_on_an_open_invoice_lowers_amount_remaining(
    api: httpx.AsyncClient,
) -> None:
    invoice = await open_invoice(api, 100_000, 50_000)
    assert invoice["amount_remaining"] == 150_000
    note = await ok(
        await api.post(
            "/v1/credit_notes",
            data={
                "invoice": invoice["id"],
                "memo": "Rate change CO-1",
                "reason": "order_change",
                "metadata[q2c]": "1",
                **credit_lines(("10 h at the old rate", 10, 10_000)),
            },
        )
    )
    assert note["object"] == "credit_note"
    assert note["id"].startswith("cn_")
    assert (note["total"], note["amount"], note["subtotal"]) == (100_000, 100_000, 100_000)
    assert note["type"] == "pre_payment"
    assert note["pre_payment_amount"] == 100_000
    assert note["status"] == "issued"
    assert note["number"] == f"{invoice['number']}-CN-01"
    assert note["memo"] == "Rate change CO-1"
    assert note["metadata"] == {"q2c": "1"}
    (line,) = note["lines"]["data"]
    assert (line["type"], line["quantity"], line["amount"]) == ("custom_line_item", 10, 100_000)

    after = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    # The invoice is never edited: its lines and total stay, what it asks for drops.
    assert after["total"] == 150_000
    assert after["lines"]["data"] == invoice["lines"]["data"]
    assert after["status"] == "open"
    assert after["pre_payment_credit_notes_amount"] == 100_000
    assert (after["amount_due"], after["amount_remaining"]) == (50_000, 50_000)

    assert await ok(await api.get(f"/v1/credit_notes/{note['id']}")) == note
    listed = await ok(await api.get("/v1/credit_notes", params={"invoice": invoice["id"]}))
    assert [n["id"] for n in listed["data"]] == [note["id"]]
    assert "credit_note.created" in await event_types(api)

    paid = await ok(
        await api.post(f"/v1/invoices/{invoice['id']}/pay", data={"paid_out_of_band": "true"})
    )
    assert (paid["status"], paid["amount_paid"]) == ("paid", 50_000)


async def test_over_crediting_is_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    invoice = await open_invoice(api, 30_000)
    await ok(await api.post("/v1/credit_notes", data={"invoice": invoice["id"], "amount": "20000"}))
    too_much = await api.post(
        "/v1/credit_notes",
        data={"invoice": invoice["id"], **credit_lines(("3 h", 3, 5_000))},
    )
    assert too_much.status_code == 400
    error = too_much.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "lines"
    assert "15000" in error["message"] and "10000" in error["message"]
    by_amount = await api.post(
        "/v1/credit_notes", data={"invoice": invoice["id"], "amount": "10001"}
    )
    assert by_amount.json()["error"]["param"] == "amount"
    # Nothing of the refused attempts stuck.
    after = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    assert after["amount_remaining"] == 10_000


async def test_only_finalized_invoices_take_credit_notes(api: httpx.AsyncClient) -> None:
    cus = await ok(await api.post("/v1/customers", data={"name": "Acme"}))
    draft = await ok(
        await api.post("/v1/invoices", data={"customer": cus["id"], "currency": "eur"})
    )
    refused = await api.post("/v1/credit_notes", data={"invoice": draft["id"], "amount": "1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "invoice"
    assert "draft" in refused.json()["error"]["message"]

    voided = await open_invoice(api, 1_000)
    await ok(await api.post(f"/v1/invoices/{voided['id']}/void"))
    refused = await api.post("/v1/credit_notes", data={"invoice": voided["id"], "amount": "1"})
    assert refused.status_code == 400

    open_one = await open_invoice(api, 1_000)
    missing = await api.post("/v1/credit_notes", data={"invoice": open_one["id"]})
    assert missing.json()["error"]["code"] == "parameter_missing"
    assert missing.json()["error"]["param"] == "lines"
    unknown = await api.post("/v1/credit_notes", data={"invoice": "in_nope", "amount": "1"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "invoice"


async def test_crediting_all_that_is_due_marks_the_invoice_paid(api: httpx.AsyncClient) -> None:
    invoice = await open_invoice(api, 12_345)
    note = await ok(
        await api.post("/v1/credit_notes", data={"invoice": invoice["id"], "amount": "12345"})
    )
    after = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    assert (after["status"], after["amount_paid"], after["amount_remaining"]) == ("paid", 0, 0)

    voided = await ok(await api.post(f"/v1/credit_notes/{note['id']}/void"))
    assert voided["status"] == "void" and voided["voided_at"] is not None
    reopened = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    assert (reopened["status"], reopened["amount_remaining"]) == ("open", 12_345)
    again = await api.post(f"/v1/credit_notes/{note['id']}/void")
    assert again.status_code == 400
    assert (await event_types(api))[-2:] == ["credit_note.voided", "invoice.updated"]


async def test_credit_note_on_a_paid_invoice_credits_the_customer_balance(
    api: httpx.AsyncClient,
) -> None:
    invoice = await open_invoice(api, 40_000)
    await ok(await api.post(f"/v1/invoices/{invoice['id']}/pay", data={"paid_out_of_band": "true"}))
    split_wrong = await api.post(
        "/v1/credit_notes",
        data={"invoice": invoice["id"], "amount": "10000", "credit_amount": "5000"},
    )
    assert split_wrong.json()["error"]["param"] == "credit_amount"
    note = await ok(
        await api.post(
            "/v1/credit_notes",
            data={"invoice": invoice["id"], "amount": "10000", "out_of_band_amount": "4000"},
        )
    )
    assert note["type"] == "post_payment"
    assert (note["post_payment_amount"], note["out_of_band_amount"]) == (10_000, 4_000)
    assert note["customer_balance_transaction"].startswith("cbtxn_")
    customer = await ok(await api.get(f"/v1/customers/{invoice['customer']}"))
    assert customer["balance"] == -6_000
    after = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    assert after["status"] == "paid"
    assert after["post_payment_credit_notes_amount"] == 10_000

    await ok(await api.post(f"/v1/credit_notes/{note['id']}/void"))
    customer = await ok(await api.get(f"/v1/customers/{invoice['customer']}"))
    assert customer["balance"] == 0


async def test_idempotency_key_gives_one_credit_note(api: httpx.AsyncClient) -> None:
    invoice = await open_invoice(api, 10_000)
    form = {"invoice": invoice["id"], "amount": "2500"}
    headers = {"Idempotency-Key": "co-1:credit"}
    first = await api.post("/v1/credit_notes", data=form, headers=headers)
    second = await api.post("/v1/credit_notes", data=form, headers=headers)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json() == second.json()
    listed = await ok(await api.get("/v1/credit_notes", params={"invoice": invoice["id"]}))
    assert len(listed["data"]) == 1
    after = await ok(await api.get(f"/v1/invoices/{invoice['id']}"))
    assert after["amount_remaining"] == 7_500
