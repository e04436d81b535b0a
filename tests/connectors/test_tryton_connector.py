"""The Tryton connector against a real Tryton server: what a user would find in Tryton."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import pytest

from canonical import (
    Address,
    BillingType,
    Contact,
    Customer,
    InvoiceStatus,
    LegalEntity,
    Money,
    PaymentTerms,
    Project,
    RateCard,
    RateCardEntry,
    Task,
    TimeEntry,
)
from connectors.errors import AuthFailed, ValidationFailed
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from tests.fixtures.tryton import TrytonServer, on_each_backend

NORTHWIND = LegalEntity(
    code="NW-US",
    name="Northwind Consulting Inc.",
    country="US",
    currency="USD",
    tax_regime="US-SALES-TAX",
)


@pytest.fixture
async def client(tryton_server: TrytonServer) -> AsyncIterator[TrytonClient]:
    c = await tryton_server.logged_in_client()
    try:
        yield c
    finally:
        await c.aclose()


def _ref() -> str:
    return f"sf:001{uuid.uuid4().hex[:12]}"


def _customer(name: str = "Acme Analytics", **changes: object) -> Customer:
    values: dict[str, object] = {
        "id": "acct-1",
        "name": name,
        "legal_entity": NORTHWIND,
        "addresses": [
            Address(street="100 Federal Street", city="Boston", postal_code="02110", country="US")
        ],
        "tax_id": "04-2103594",
        "currency": "USD",
        "payment_terms": PaymentTerms(net_days=30),
        "contacts": [Contact(name="Pat Billing", email="ap@acme.example", role="billing")],
    }
    values.update(changes)
    return Customer.model_validate(values)


def _project(start: date, *, name: str = "Data platform rollout") -> Project:
    return Project(
        id=f"prj-{uuid.uuid4().hex[:8]}",
        name=name,
        customer_id="acct-1",
        legal_entity_code="NW-US",
        currency="USD",
        budget=Money.of("50000", "USD"),
        rate_card=RateCard(
            currency="USD",
            entries=[
                RateCardEntry(
                    role="Solution Architect",
                    rate=Money.of("210", "USD"),
                    effective_from=start - timedelta(days=30),
                )
            ],
        ),
        tasks=[
            Task(name="Discovery", role="Consultant", rate=Money.of("175", "USD")),
            Task(name="Architecture", role="Solution Architect", planned_hours=Decimal("40")),
        ],
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=start,
    )


def _entries(project_id: int, tasks: dict[str, int], day: date) -> list[TimeEntry]:
    spec = [
        ("te-1", "Discovery", "Ada Lovelace", "Consultant", "3"),
        ("te-2", "Discovery", "Grace Hopper", "Consultant", "2.5"),
        ("te-3", "Architecture", "Grace Hopper", "Solution Architect", "4"),
    ]
    return [
        TimeEntry(
            id=entry_id,
            project_id=str(project_id),
            task_id=str(tasks[task]),
            employee=employee,
            role=role,
            work_date=day,
            hours=Decimal(hours),
            description=f"{task} work",
        )
        for entry_id, task, employee, role, hours in spec
    ]


@on_each_backend
async def test_customer_project_time_and_posted_invoice_land_in_tryton(
    client: TrytonClient,
) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    today = date.today()
    ref = _ref()

    party_id = await erp.upsert_customer(_customer(), ref)
    ref_project = await psa.create_project(
        _project(today), party_id=party_id, idempotency_key=f"otp:{ref}:create_project"
    )
    booked = await psa.create_timesheet_lines(
        _entries(ref_project.project_id, ref_project.task_ids, today),
        idempotency_key=f"otp:{ref}:book_time",
    )
    invoice_id = await erp.invoice_project(
        ref_project.project_id, idempotency_key=f"otp:{ref}:invoice"
    )
    posted = await erp.post_invoice(invoice_id)

    # The party: once, with its address, tax id and payment term.
    parties = await client.search_read(
        "party.party",
        [("identifiers.code", "=", f"q2c-ref:{ref}")],
        ["name", "addresses", "tax_identifier.code", "customer_payment_term.name"],
    )
    assert [p["id"] for p in parties] == [party_id]
    assert parties[0]["name"] == "Acme Analytics"
    assert parties[0]["tax_identifier."]["code"] == "04-2103594"
    assert parties[0]["customer_payment_term."]["name"] == "Net 30"
    (address,) = await client.read(
        "party.address", parties[0]["addresses"], ["street", "city", "postal_code", "country.code"]
    )
    assert (address["street"], address["city"], address["postal_code"]) == (
        "100 Federal Street",
        "Boston",
        "02110",
    )
    assert address["country."]["code"] == "US"

    # The project: two tasks, priced from the task's rate and from the rate card.
    works = await client.search_read(
        "project.work",
        [("parent", "=", ref_project.project_id)],
        ["name", "list_price", "product.name", "project_invoice_method"],
        order=[("name", "ASC")],
    )
    assert [(w["name"], w["list_price"], w["product."]["name"]) for w in works] == [
        ("Architecture", Decimal("210"), "Solution Architecture"),
        ("Discovery", Decimal("175"), "Consulting"),
    ]
    (project_row,) = await client.read(
        "project.work", [ref_project.project_id], ["party", "project_invoice_method", "type"]
    )
    assert project_row["party"] == party_id
    assert project_row["project_invoice_method"] == "timesheet"

    # Three timesheet lines with their hours, now billed.
    lines = await client.read(
        "timesheet.line", sorted(booked.values()), ["duration", "employee.party.name"]
    )
    assert sorted(ln["duration"] for ln in lines) == [
        timedelta(hours=2.5),
        timedelta(hours=3),
        timedelta(hours=4),
    ]
    entries = await psa.list_time_entries(ref_project.project_id)
    assert sorted((e.employee, e.hours, e.billed) for e in entries) == [
        ("Ada Lovelace", Decimal("3"), True),
        ("Grace Hopper", Decimal("2.5"), True),
        ("Grace Hopper", Decimal("4"), True),
    ]

    # The invoice: posted, numbered, total = hours x rate.
    expected = Decimal("5.5") * 175 + Decimal("4") * 210  # 962.50 + 840
    (invoice,) = await client.read(
        "account.invoice", [invoice_id], ["state", "number", "total_amount", "party"]
    )
    assert invoice["state"] == "posted"
    assert invoice["number"].startswith(f"NW-US-INV{today.year}-")
    assert invoice["total_amount"] == expected
    assert invoice["party"] == party_id
    assert posted.status is InvoiceStatus.OPEN
    assert posted.number == invoice["number"]
    assert posted.total == Money.of(expected, "USD")
    assert posted.customer_id == ref
    assert posted.due_date == today + timedelta(days=30)
    assert sorted((ln.quantity, ln.unit_price.amount) for ln in posted.lines) == [
        (Decimal("4"), Decimal("210")),
        (Decimal("5.5"), Decimal("175")),
    ]


@on_each_backend
async def test_upsert_with_the_same_reference_updates_the_one_party(client: TrytonClient) -> None:
    erp = TrytonErp(client)
    ref = _ref()
    first = await erp.upsert_customer(_customer("Globex"), ref)
    moved = Address(street="1 Dock Road", city="London", postal_code="E14 5AB", country="GB")
    second = await erp.upsert_customer(
        _customer(
            "Globex Corporation",
            addresses=[moved],
            tax_id="GB980780684",
            payment_terms=PaymentTerms(net_days=45),
        ),
        ref,
    )
    assert second == first
    parties = await client.search_read(
        "party.party",
        [("identifiers.code", "=", f"q2c-ref:{ref}")],
        ["name", "addresses", "customer_payment_term.name", "identifiers", "tax_identifier.code"],
    )
    assert [(p["id"], p["name"]) for p in parties] == [(first, "Globex Corporation")]
    identifiers = await client.read("party.identifier", parties[0]["identifiers"], ["type", "code"])
    assert sorted((i["type"] or "", i["code"]) for i in identifiers) == [
        ("", f"q2c-ref:{ref}"),
        ("gb_vat", "980 7806 84"),
        ("us_ein", "04-2103594"),
    ]
    assert parties[0]["tax_identifier."]["code"] == "980 7806 84"
    # A third upsert with nothing new changes nothing.
    unchanged = _customer(
        "Globex Corporation",
        addresses=[moved],
        tax_id="GB 980 7806 84",
        payment_terms=PaymentTerms(net_days=45),
    )
    (before,) = await client.read("party.party", [first], ["write_date"])
    assert await erp.upsert_customer(unchanged, ref) == first
    (after,) = await client.read("party.party", [first], ["write_date"])
    assert after["write_date"] == before["write_date"]
    assert parties[0]["customer_payment_term."]["name"] == "Net 45"
    # The old address is archived (invoices may point at it); the new one is the active one.
    (active,) = await client.read("party.address", parties[0]["addresses"], ["city", "invoice"])
    assert (active["city"], active["invoice"]) == ("London", True)


@on_each_backend
async def test_create_project_twice_with_the_same_key_makes_one_project(
    client: TrytonClient,
) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party_id = await erp.upsert_customer(_customer(), ref)
    key = f"otp:{ref}:create_project"
    first = await psa.create_project(_project(date.today()), party_id=party_id, idempotency_key=key)
    again = await psa.create_project(_project(date.today()), party_id=party_id, idempotency_key=key)
    assert (first.created, again.created) == (True, False)
    assert again.project_id == first.project_id
    assert again.task_ids == first.task_ids
    projects = await client.search(
        "project.work", [("party", "=", party_id), ("type", "=", "project")]
    )
    assert projects == [first.project_id]
    tasks = await client.search("project.work", [("parent", "=", first.project_id)])
    assert sorted(tasks) == sorted(first.task_ids.values())


@on_each_backend
async def test_retried_timesheet_booking_does_not_double_book(client: TrytonClient) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party_id = await erp.upsert_customer(_customer(), ref)
    project = await psa.create_project(
        _project(date.today()), party_id=party_id, idempotency_key=f"{ref}:p"
    )
    entries = _entries(project.project_id, project.task_ids, date.today())
    key = f"{ref}:book"
    # A first attempt that booked only part of the batch, then the full retry, then another.
    partial = await psa.create_timesheet_lines(entries[:2], idempotency_key=key)
    full = await psa.create_timesheet_lines(entries, idempotency_key=key)
    again = await psa.create_timesheet_lines(entries, idempotency_key=key)
    assert full == again
    assert {k: full[k] for k in partial} == partial
    booked = await psa.list_time_entries(project.project_id)
    assert len(booked) == 3
    assert sum(e.hours for e in booked) == Decimal("9.5")


@on_each_backend
async def test_invoicing_twice_with_the_same_key_makes_one_invoice(client: TrytonClient) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party_id = await erp.upsert_customer(_customer(), ref)
    project = await psa.create_project(
        _project(date.today()), party_id=party_id, idempotency_key=f"{ref}:p"
    )
    await psa.create_timesheet_lines(
        _entries(project.project_id, project.task_ids, date.today()), idempotency_key=f"{ref}:t"
    )
    first = await erp.invoice_project(project.project_id, idempotency_key=f"{ref}:invoice")
    again = await erp.invoice_project(project.project_id, idempotency_key=f"{ref}:invoice")
    assert again == first
    posted = await erp.post_invoice(first)
    reposted = await erp.post_invoice(first)
    assert reposted.number == posted.number
    assert await client.search("account.invoice", [("party", "=", party_id)]) == [first]


async def test_invoicing_a_project_with_nothing_to_invoice_is_refused(
    client: TrytonClient,
) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party_id = await erp.upsert_customer(_customer(), ref)
    project = await psa.create_project(
        _project(date.today()), party_id=party_id, idempotency_key=f"{ref}:p"
    )
    with pytest.raises(ValidationFailed) as caught:
        await erp.invoice_project(project.project_id, idempotency_key=f"{ref}:invoice")
    assert caught.value.code == "nothing_to_invoice"
    assert await client.search("account.invoice", [("party", "=", party_id)]) == []


async def test_data_tryton_refuses_is_a_permanent_validation_failure(
    client: TrytonClient,
) -> None:
    erp = TrytonErp(client)
    ref = _ref()
    berlin = Address(street="Unter den Linden 1", city="Berlin", postal_code="10117", country="DE")
    bad_vat = _customer("Initech GmbH", addresses=[berlin], tax_id="DE123456789")
    with pytest.raises(ValidationFailed) as caught:
        await erp.upsert_customer(bad_vat, ref)
    assert not caught.value.retryable
    assert "DE123456789" in caught.value.message
    assert "not valid" in caught.value.message
    # Nothing half-made: the party was refused with its identifier, in one transaction.
    assert await erp.find_customer(ref) is None


async def test_unknown_employee_is_refused_naming_the_field(client: TrytonClient) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party_id = await erp.upsert_customer(_customer(), ref)
    project = await psa.create_project(
        _project(date.today()), party_id=party_id, idempotency_key=f"{ref}:p"
    )
    entry = _entries(project.project_id, project.task_ids, date.today())[0]
    stranger = entry.model_copy(update={"employee": "Nobody Known"})
    with pytest.raises(ValidationFailed) as caught:
        await psa.create_timesheet_lines([stranger], idempotency_key=f"{ref}:t")
    assert caught.value.field == "employee"


async def test_bad_password_is_auth_failed(tryton: TrytonServer) -> None:
    async with tryton.client(password="not-the-password") as c:
        with pytest.raises(AuthFailed) as caught:
            await c.login()
    assert caught.value.status == 401
    assert not caught.value.retryable


async def test_employees_are_listed(client: TrytonClient, tryton: TrytonServer) -> None:
    psa = TrytonPsa(client)
    employees = await psa.list_employees()
    assert {(e.legal_entity_code, e.name): e.id for e in employees} == {
        (code, name): employee_id
        for code, company in tryton.bootstrap.companies.items()
        for name, employee_id in company.employee_ids.items()
    }
    uk = await psa.list_employees("NW-UK")
    assert sorted(e.name for e in uk) == ["Alan Turing", "Karen Sparck Jones"]
    assert {e.company_id for e in uk} == {tryton.bootstrap.company_ids["NW-UK"]}


async def test_bootstrap_again_reuses_everything(tryton_any: TrytonServer) -> None:
    from devstack.tryton import bootstrap

    again = await bootstrap(tryton_any.url, tryton_any.database, tryton_any.password)
    assert again == tryton_any.bootstrap
