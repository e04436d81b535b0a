"""One Tryton company per legal entity: customers, projects, time and invoices land in the
company of their legal entity, in its currency, numbered by its own sequences."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from connectors.errors import PermanentError, ValidationFailed
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from devstack import tryton as devtryton
from tests.fixtures.tryton import TrytonServer

ENTITIES = devtryton.load_legal_entities()


@dataclass(frozen=True)
class Case:
    code: str
    address: Address
    tax_id: str
    employees: tuple[str, str]


CASES = {
    "NW-UK": Case(
        code="NW-UK",
        address=Address(street="1 Dock Road", city="London", postal_code="E14 5AB", country="GB"),
        tax_id="GB980780684",
        employees=("Alan Turing", "Karen Sparck Jones"),
    ),
    "NW-US": Case(
        code="NW-US",
        address=Address(
            street="100 Federal Street", city="Boston", postal_code="02110", country="US"
        ),
        tax_id="04-2103594",
        employees=("Ada Lovelace", "Grace Hopper"),
    ),
}


@pytest.fixture
async def client(tryton: TrytonServer) -> AsyncIterator[TrytonClient]:
    c = await tryton.logged_in_client()
    try:
        yield c
    finally:
        await c.aclose()


def _ref() -> str:
    return f"sf:001{uuid.uuid4().hex[:12]}"


def _customer(case: Case, **changes: object) -> Customer:
    entity = ENTITIES[case.code]
    values: dict[str, object] = {
        "id": "acct-1",
        "name": f"Acme {case.code}",
        "legal_entity": entity,
        "addresses": [case.address],
        "tax_id": case.tax_id,
        "currency": entity.currency,
        "payment_terms": PaymentTerms(net_days=30),
        "contacts": [Contact(name="Pat Billing", email="ap@acme.example", role="billing")],
    }
    values.update(changes)
    return Customer.model_validate(values)


def _project(code: str, start: date, *, currency: str | None = None) -> Project:
    currency = currency or ENTITIES[code].currency
    return Project(
        id=f"prj-{uuid.uuid4().hex[:8]}",
        name=f"Data platform {uuid.uuid4().hex[:6]}",
        customer_id="acct-1",
        legal_entity_code=code,
        currency=currency,
        budget=Money.of("120000", currency),
        rate_card=RateCard(
            currency=currency,
            entries=[
                RateCardEntry(
                    role="Solution Architect",
                    rate=Money.of("210", currency),
                    effective_from=start - timedelta(days=30),
                )
            ],
        ),
        tasks=[
            Task(name="Discovery", role="Consultant", rate=Money.of("175", currency)),
            Task(name="Architecture", role="Solution Architect", planned_hours=Decimal("40")),
        ],
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=start,
        opportunity_id=f"006{uuid.uuid4().hex[:12]}",
    )


def _entries(case: Case, project_id: int, tasks: dict[str, int], day: date) -> list[TimeEntry]:
    first, second = case.employees
    spec = [
        ("te-1", "Discovery", first, "Consultant", "3"),
        ("te-2", "Discovery", second, "Consultant", "2.5"),
        ("te-3", "Architecture", first, "Solution Architect", "4"),
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
        )
        for entry_id, task, employee, role, hours in spec
    ]


@pytest.mark.parametrize("code", ["NW-UK", "NW-US"])
async def test_deal_to_invoice_in_the_legal_entitys_company(
    code: str, client: TrytonClient, tryton: TrytonServer
) -> None:
    case, entity = CASES[code], ENTITIES[code]
    company = tryton.bootstrap.companies[code]
    erp, psa = TrytonErp(client), TrytonPsa(client)
    today = date.today()
    ref = _ref()

    party_id = await erp.upsert_customer(_customer(case), ref)
    # A customer of this legal entity: its receivable account in that company is set.
    (in_company,) = await client.for_company(company.company_id).read(
        "party.party", [party_id], ["account_receivable"]
    )
    assert in_company["account_receivable"] == company.receivable_account_id

    project = _project(code, today)
    created = await psa.create_project(
        project, party_id=party_id, idempotency_key=f"otp:{ref}:create_project"
    )
    held = await psa.get_project(created.project_id)
    assert (held.company_id, held.legal_entity_code, held.currency) == (
        company.company_id,
        code,
        entity.currency,
    )
    assert (held.name, held.party_id, held.state) == (project.name, party_id, "open")
    assert held.budget == Money.of("120000.00", entity.currency)
    assert held.opportunity_id == project.opportunity_id
    assert held.project_ref == project.id
    assert sorted((t.name, t.rate, t.product, t.state) for t in held.tasks) == [
        ("Architecture", Money.of("210", entity.currency), "Solution Architecture", "open"),
        ("Discovery", Money.of("175", entity.currency), "Consulting", "open"),
    ]
    tasks = await client.search_read(
        "project.work", [("parent", "=", created.project_id)], ["company"]
    )
    assert {t["company"] for t in tasks} == {company.company_id}

    booked = await psa.create_timesheet_lines(
        _entries(case, created.project_id, created.task_ids, today),
        idempotency_key=f"otp:{ref}:book_time",
    )
    lines = await client.read("timesheet.line", sorted(booked.values()), ["company"])
    assert [ln["company"] for ln in lines] == [company.company_id] * 3

    invoice_id = await erp.invoice_project(created.project_id, idempotency_key=f"otp:{ref}:inv")
    posted = await erp.post_invoice(invoice_id)

    expected = Decimal("5.5") * 175 + Decimal("4") * 210
    (invoice,) = await client.read(
        "account.invoice",
        [invoice_id],
        ["company", "currency.code", "number", "total_amount", "state", "account"],
    )
    assert invoice["company"] == company.company_id
    assert invoice["currency."]["code"] == entity.currency
    assert invoice["number"].startswith(f"{code}-INV{today.year}-")
    assert invoice["total_amount"] == expected
    assert invoice["state"] == "posted"
    assert invoice["account"] == company.receivable_account_id
    assert posted.currency == entity.currency
    assert posted.total == Money.of(expected, entity.currency)
    assert posted.number == invoice["number"]
    assert posted.legal_entity_code == code
    assert posted.status is InvoiceStatus.OPEN


async def test_invoice_numbers_run_per_legal_entity(
    client: TrytonClient, tryton: TrytonServer
) -> None:
    """Each company numbers from its own sequence: a UK invoice does not use a US number."""
    erp, psa = TrytonErp(client), TrytonPsa(client)
    today = date.today()
    numbers: dict[str, list[str]] = {}
    for code in ("NW-UK", "NW-US", "NW-UK"):
        ref = _ref()
        party = await erp.upsert_customer(_customer(CASES[code]), ref)
        project = await psa.create_project(
            _project(code, today), party_id=party, idempotency_key=f"{ref}:p"
        )
        entries = _entries(CASES[code], project.project_id, project.task_ids, today)[:1]
        await psa.create_timesheet_lines(entries, idempotency_key=f"{ref}:t")
        invoice = await erp.post_invoice(
            await erp.invoice_project(project.project_id, idempotency_key=f"{ref}:i")
        )
        assert invoice.number is not None
        numbers.setdefault(code, []).append(invoice.number)
    first_uk, second_uk = (int(n.rsplit("-", 1)[1]) for n in numbers["NW-UK"])
    assert second_uk == first_uk + 1  # the US invoice in between took no UK number
    assert numbers["NW-US"][0].startswith(f"NW-US-INV{today.year}-")


async def test_get_customer_gives_back_what_was_upserted(client: TrytonClient) -> None:
    erp = TrytonErp(client)
    ref = _ref()
    uk = ENTITIES["NW-UK"]
    office = Address(street="1 Dock Road", city="London", postal_code="E14 5AB", country="GB")
    depot = Address(
        street="Unit 4",
        street2="Trafford Park",
        city="Manchester",
        postal_code="M17 1AB",
        country="GB",
    )
    customer = _customer(
        CASES["NW-UK"],
        name="Globex Ltd",
        addresses=[office, depot],
        payment_terms=PaymentTerms(net_days=45),
        contacts=[
            Contact(name="Pat Billing", email="ap@globex.example", role="billing"),
            Contact(name="Sam Sponsor", email="sam@globex.example"),
        ],
    )
    party_id = await erp.upsert_customer(customer, ref)

    held = await erp.get_customer(party_id, uk)
    assert held.id == ref
    assert held.name == "Globex Ltd"
    assert held.legal_entity == uk
    assert held.currency == "GBP"
    assert held.addresses == [office, depot]
    assert held.tax_id == "GB980780684"  # as the CRM gave it (Tryton shows 980 7806 84)
    assert held.payment_terms == PaymentTerms(net_days=45)
    assert sorted((c.name, c.email, c.role) for c in held.contacts) == [
        ("Pat Billing", "ap@globex.example", "billing"),
        ("Sam Sponsor", "sam@globex.example", None),
    ]
    assert held.external_ids == {"tryton": str(party_id)}

    # Without a legal entity: the one the party is a customer of, as Tryton knows it.
    found = await erp.find_customer_record(ref)
    assert found is not None
    assert found.legal_entity.code == "NW-UK"
    assert (found.legal_entity.name, found.legal_entity.country) == (uk.name, "GB")
    assert found.model_dump(exclude={"legal_entity"}) == held.model_dump(exclude={"legal_entity"})
    assert await erp.find_customer_record(_ref()) is None

    # The customer moved out of London: the ERP holds the depot only (the office archived).
    await erp.upsert_customer(customer.model_copy(update={"addresses": [depot]}), ref)
    moved = await erp.get_customer(party_id, uk)
    assert moved.addresses == [depot]


async def test_a_party_can_be_the_customer_of_two_legal_entities(
    client: TrytonClient, tryton: TrytonServer
) -> None:
    erp = TrytonErp(client)
    ref = _ref()
    uk_party = await erp.upsert_customer(_customer(CASES["NW-UK"], name="Initech"), ref)
    us_customer = _customer(
        CASES["NW-US"], name="Initech", addresses=[CASES["NW-UK"].address], tax_id="GB980780684"
    )
    assert await erp.upsert_customer(us_customer, ref) == uk_party
    for code in ("NW-UK", "NW-US"):
        company = tryton.bootstrap.companies[code]
        (row,) = await client.for_company(company.company_id).read(
            "party.party", [uk_party], ["account_receivable"]
        )
        assert row["account_receivable"] == company.receivable_account_id
        held = await erp.get_customer(uk_party, ENTITIES[code])
        assert (held.legal_entity.code, held.currency) == (code, ENTITIES[code].currency)
    # A customer of those two, and of no other (not of the German entity).
    (row,) = await client.read(
        "party.party", [uk_party], ["accounts.company", "accounts.account_receivable"]
    )
    both = [tryton.bootstrap.companies[code] for code in ("NW-UK", "NW-US")]
    assert {a["company"]: a["account_receivable"] for a in row["accounts."]} == {
        c.company_id: c.receivable_account_id for c in both
    }


async def test_close_project_closes_it_and_its_tasks_once(client: TrytonClient) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party = await erp.upsert_customer(_customer(CASES["NW-UK"]), ref)
    created = await psa.create_project(
        _project("NW-UK", date.today()), party_id=party, idempotency_key=f"{ref}:p"
    )
    await psa.close_project(created.project_id)
    closed = await psa.get_project(created.project_id)
    assert closed.state == "done"
    assert [t.state for t in closed.tasks] == ["done", "done"]
    (before,) = await client.read("project.work", [created.project_id], ["write_date"])
    await psa.close_project(created.project_id)  # a retried compensation
    (after,) = await client.read("project.work", [created.project_id], ["write_date"])
    assert after["write_date"] == before["write_date"]
    # A project that is gone counts as closed.
    await psa.close_project(10_000_000)


async def test_project_in_another_currency_than_its_entity_is_refused(
    client: TrytonClient,
) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party = await erp.upsert_customer(_customer(CASES["NW-UK"]), ref)
    project = _project("NW-UK", date.today(), currency="USD")
    with pytest.raises(ValidationFailed) as caught:
        await psa.create_project(project, party_id=party, idempotency_key=f"{ref}:p")
    assert caught.value.field == "currency"
    assert not caught.value.retryable
    assert await psa.find_project(f"{ref}:p") is None
    assert await client.search("project.work", [("name", "=", project.name)]) == []

    unknown = _project("NW-UK", date.today()).model_copy(update={"legal_entity_code": "NW-FR"})
    with pytest.raises(ValidationFailed) as caught:
        await psa.create_project(unknown, party_id=party, idempotency_key=f"{ref}:p2")
    assert caught.value.field == "legal_entity_code"


async def test_customer_whose_entity_currency_differs_from_tryton_is_refused(
    client: TrytonClient,
) -> None:
    erp = TrytonErp(client)
    ref = _ref()
    wrong = LegalEntity(code="NW-UK", name="Northwind Consulting Ltd", country="GB", currency="EUR")
    with pytest.raises(ValidationFailed) as caught:
        await erp.upsert_customer(_customer(CASES["NW-UK"], legal_entity=wrong), ref)
    assert caught.value.field == "legal_entity"
    assert await erp.find_customer(ref) is None


async def test_time_by_an_employee_of_another_entity_is_refused(client: TrytonClient) -> None:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = _ref()
    party = await erp.upsert_customer(_customer(CASES["NW-US"]), ref)
    created = await psa.create_project(
        _project("NW-US", date.today()), party_id=party, idempotency_key=f"{ref}:p"
    )
    entry = _entries(CASES["NW-US"], created.project_id, created.task_ids, date.today())[0]
    from_uk = entry.model_copy(update={"employee": "Alan Turing"})
    with pytest.raises(ValidationFailed) as caught:
        await psa.create_timesheet_lines([from_uk], idempotency_key=f"{ref}:t")
    assert caught.value.field == "employee"
    assert "NW-US" in caught.value.message


async def test_bootstrap_again_makes_no_second_company(
    client: TrytonClient, tryton: TrytonServer
) -> None:
    again = await devtryton.bootstrap(tryton.url, tryton.database, tryton.password)
    assert again == tryton.bootstrap
    assert list(again.companies) == ["NW-US", "NW-CA", "NW-UK", "NW-DE", "NW-AU"]
    companies = await client.search_read("company.company", [], ["currency.code"])
    assert sorted(c["currency."]["code"] for c in companies) == ["AUD", "CAD", "EUR", "GBP", "USD"]
    assert len(await client.search("account.fiscalyear", [])) == 10
    assert len(await client.search("company.employee", [])) == 10
    (category,) = await client.search_read(
        "product.category", [("name", "=", devtryton.PRODUCT_CATEGORY)], ["accounts.company"]
    )
    assert sorted(a["company"] for a in category["accounts."]) == sorted(again.company_ids.values())


async def test_a_user_who_sees_one_company_only_is_told_what_to_change(
    client: TrytonClient, tryton: TrytonServer
) -> None:
    password = secrets.token_urlsafe(18)
    login = f"narrow-{uuid.uuid4().hex[:6]}"
    await client.create_one(
        "res.user",
        {
            "name": "Narrow",
            "login": login,
            "password": password,
            "companies": [["add", list(tryton.bootstrap.company_ids.values())]],
            "company": tryton.bootstrap.company_ids["NW-US"],
            "company_filter": "one",
        },
    )
    async with TrytonClient(tryton.url, tryton.database, login, password) as narrow:
        with pytest.raises(PermanentError) as caught:
            await TrytonErp(narrow).catalog()
    assert caught.value.code == "company_filter"
    assert "All" in caught.value.message
