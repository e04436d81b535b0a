"""Time to invoice in Tryton: unbilled time read page by page, q2c's invoice posted in the
ERP with q2c's total, time marked billed (and back), payments recorded, closed periods."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from canonical import (
    Address,
    BillingType,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Money,
    PaymentTerms,
    Project,
    Task,
    TimeEntry,
)
from connectors.errors import ValidationFailed
from connectors.tryton import Catalog, ErpInvoice, TrytonClient, TrytonErp, TrytonPsa
from devstack import tryton as devtryton
from tests.fixtures.tryton import TrytonServer, on_each_backend

UK = devtryton.load_legal_entities()["NW-UK"]
ALAN, KAREN = "Alan Turing", "Karen Sparck Jones"
#: The billing period the tests book time in; a day before it is outside.
START = date.today().replace(day=1)
END = date.today()


@pytest.fixture
async def client(tryton_server: TrytonServer) -> AsyncIterator[TrytonClient]:
    c = await tryton_server.logged_in_client()
    try:
        yield c
    finally:
        await c.aclose()


@dataclass
class UkProject:
    """A fresh GBP customer and project of the UK entity, with three tasks."""

    erp: TrytonErp
    psa: TrytonPsa
    ref: str
    party_id: int
    project_id: int
    tasks: dict[str, int]

    def entry(
        self, entry_id: str, task: str, employee: str, hours: str, day: date = END
    ) -> TimeEntry:
        return TimeEntry(
            id=entry_id,
            project_id=str(self.project_id),
            task_id=str(self.tasks[task]),
            employee=employee,
            role="-",
            work_date=day,
            hours=Decimal(hours),
            description=f"{task} work",
        )

    async def book(self, entries: list[TimeEntry]) -> dict[str, int]:
        return await self.psa.create_timesheet_lines(entries, idempotency_key=f"{self.ref}:time")


@pytest.fixture
async def uk(client: TrytonClient) -> UkProject:
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = f"sf:001{uuid.uuid4().hex[:12]}"
    customer = Customer(
        id="acct-uk",
        name=f"Globex {ref[-6:]}",
        legal_entity=UK,
        addresses=[
            Address(street="1 Dock Road", city="London", postal_code="E14 5AB", country="GB")
        ],
        currency="GBP",
        payment_terms=PaymentTerms(net_days=30),
    )
    party_id = await erp.upsert_customer(customer, ref)
    project = Project(
        id=f"prj-{uuid.uuid4().hex[:8]}",
        name=f"Ledger migration {ref[-6:]}",
        customer_id="acct-uk",
        legal_entity_code="NW-UK",
        currency="GBP",
        budget=Money.of("90000", "GBP"),
        tasks=[
            Task(name="Discovery", role="Senior Consultant", rate=Money.of("157.50", "GBP")),
            Task(name="Build", role="Developer", rate=Money.of("140", "GBP")),
            Task(name="Pre-sales", role="Consultant", billable=False),
        ],
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=START,
    )
    created = await psa.create_project(project, party_id=party_id, idempotency_key=f"{ref}:project")
    return UkProject(erp, psa, ref, party_id, created.project_id, dict(created.task_ids))


def _invoice(*lines: InvoiceLine, project: int | None = None) -> Invoice:
    """q2c's invoice as billing finalized it: numbered, issued now, in GBP for NW-UK."""
    return Invoice(
        id=f"inv-{uuid.uuid4().hex[:8]}",
        customer_id="acct-uk",
        currency="GBP",
        lines=list(lines),
        status=InvoiceStatus.OPEN,
        number=f"{uuid.uuid4().hex[:8].upper()}-0001",
        project_id=str(project) if project is not None else None,
        issued_at=datetime.now(UTC),
        legal_entity_code="NW-UK",
        memo="Time and materials",
    )


def _line(description: str, quantity: str, price: str, rate: str = "0.20") -> InvoiceLine:
    return InvoiceLine(
        description=description,
        quantity=Decimal(quantity),
        unit_price=Money.of(price, "GBP"),
        tax_rate=Decimal(rate),
    )


async def _create(uk: UkProject, invoice: Invoice, key: str | None = None) -> ErpInvoice:
    assert invoice.number is not None
    return await uk.erp.create_invoice(
        invoice,
        party_id=uk.party_id,
        reference=invoice.number,
        idempotency_key=key or f"{uk.ref}:{invoice.id}:erp",
        payment_net_days=30,
    )


# -- pulling unbilled time -----------------------------------------------------------------------


@on_each_backend
async def test_unbilled_time_comes_page_by_page_with_roles_and_exact_hours(
    uk: UkProject,
) -> None:
    booked = await uk.book(
        [
            uk.entry("te-1", "Discovery", ALAN, "12.25"),
            uk.entry("te-2", "Build", KAREN, "7.75"),
            uk.entry("te-3", "Pre-sales", ALAN, "1.5"),
            uk.entry("te-4", "Build", ALAN, "0.25", day=START),
            uk.entry("te-old", "Build", ALAN, "3", day=START - timedelta(days=1)),
        ]
    )
    page = await uk.psa.list_time_page(uk.project_id, start=START, end=END)
    assert page.next_after is None
    by_id = {e.id: e for e in page.entries}
    assert [e.id for e in page.entries] == sorted(by_id, key=int)  # ordered by line id
    assert set(by_id) == {str(booked[k]) for k in ("te-1", "te-2", "te-3", "te-4")}
    first = by_id[str(booked["te-1"])]
    assert (first.employee, first.role, first.hours, first.work_date) == (
        ALAN,
        "Senior Consultant",
        Decimal("12.25"),
        END,
    )
    assert (first.project_id, first.task_id) == (str(uk.project_id), str(uk.tasks["Discovery"]))
    assert first.description == "Discovery work"
    assert (first.approved, first.billed, first.billable) == (True, False, True)
    assert by_id[str(booked["te-2"])].role == "Developer"
    assert by_id[str(booked["te-4"])].hours == Decimal("0.25")
    # The task sold as non-billable: its time is there, marked so.
    assert by_id[str(booked["te-3"])].billable is False
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 4

    # Small pages walk the same entries, each once, in order.
    seen: list[str] = []
    after: int | None = None
    pages = 0
    while True:
        small = await uk.psa.list_time_page(
            uk.project_id, start=START, end=END, after_id=after, limit=3
        )
        pages += 1
        seen += [e.id for e in small.entries]
        if small.next_after is None:
            break
        assert small.next_after == int(small.entries[-1].id)
        after = small.next_after
    assert (pages, seen) == (2, [e.id for e in page.entries])


async def test_time_booked_by_hand_that_q2c_cannot_bill_is_named(
    uk: UkProject, client: TrytonClient, tryton: TrytonServer
) -> None:
    company = tryton.bootstrap.companies["NW-UK"]
    (work,) = (await client.read("project.work", [uk.tasks["Build"]], ["timesheet_works"]))[0][
        "timesheet_works"
    ]

    async def by_hand(hours: float) -> int:
        return await client.for_company(company.company_id).create_one(
            "timesheet.line",
            {
                "company": company.company_id,
                "employee": company.employee_ids[ALAN],
                "work": work,
                "date": END,
                "duration": timedelta(hours=hours),
            },
        )

    await by_hand(0)  # nothing to bill: not offered
    assert (await uk.psa.list_time_page(uk.project_id, start=START, end=END)).entries == []
    too_long = await by_hand(26)
    with pytest.raises(ValidationFailed) as caught:
        await uk.psa.list_time_page(uk.project_id, start=START, end=END)
    assert caught.value.field == "duration"
    assert f"timesheet line {too_long}" in caught.value.message


# -- the ERP invoice -----------------------------------------------------------------------------


@on_each_backend
async def test_q2c_invoice_posts_in_the_entity_with_q2c_total_and_billing_number(
    uk: UkProject, client: TrytonClient, tryton_server: TrytonServer
) -> None:
    invoice = _invoice(
        _line("Discovery: Senior Consultant, 12.25 h", "12.25", "157.50"),
        _line("Build: Developer, 7.75 h", "7.75", "140"),
        _line("Budget cap adjustment", "1", "-100.00"),
        # Half a penny: Tryton would round to even (0.12), q2c rounds half up (0.13).
        _line("Tiny expense", "0.5", "0.25"),
        # 45.825 of tax at 10 %: Tryton would say 45.82, q2c says 45.83.
        _line("Travel", "3.25", "141.00", rate="0.10"),
        project=uk.project_id,
    )
    assert invoice.total == Money.of("4001.50", "GBP")  # computed line by line, half up
    created = await _create(uk, invoice)
    assert len(created.line_ids) == len(invoice.lines)
    rows = await client.read(
        "account.invoice.line", created.line_ids, ["description", "quantity", "unit_price"]
    )
    assert [r["description"] for r in rows][:3] == [ln.description for ln in invoice.lines[:3]]
    assert (rows[0]["quantity"], rows[0]["unit_price"]) == (12.25, Decimal("157.50"))
    assert (rows[2]["quantity"], rows[2]["unit_price"]) == (1.0, Decimal("-100.00"))
    # The half-penny line goes as one unit at q2c's net, saying what it bills.
    assert (rows[3]["quantity"], rows[3]["unit_price"]) == (1.0, Decimal("0.13"))
    assert rows[3]["description"] == "Tiny expense (0.5 x 0.25)"

    draft = await uk.erp.get_invoice_info(created.id)
    assert (draft.state, draft.status, draft.number) == ("draft", InvoiceStatus.DRAFT, None)
    assert draft.total == invoice.total

    posted = await uk.erp.post_invoice(created.id)
    info = await uk.erp.get_invoice_info(created.id)
    assert (info.state, info.status) == ("posted", InvoiceStatus.OPEN)
    assert (info.untaxed, info.tax, info.total) == (invoice.subtotal, invoice.tax, invoice.total)
    assert info.amount_to_pay == invoice.total
    assert info.reference == invoice.number
    assert info.legal_entity_code == "NW-UK"
    assert info.number is not None and info.number.startswith(f"NW-UK-INV{END.year}-")
    assert invoice.issued_at is not None and info.invoice_date == invoice.issued_at.date()
    assert info.due_date == info.invoice_date + timedelta(days=30)
    assert info.line_ids == created.line_ids
    assert await uk.erp.invoice_reference(created.id) == invoice.number
    assert await uk.erp.invoices_of_project(uk.project_id) == [created.id]
    assert (posted.number, posted.status, posted.total) == (info.number, info.status, info.total)
    (row,) = await client.read(
        "account.invoice", [created.id], ["company", "currency.code", "party", "payment_term.name"]
    )
    assert row["company"] == tryton_server.bootstrap.company_ids["NW-UK"]
    assert (row["currency."]["code"], row["party"]) == ("GBP", uk.party_id)
    assert row["payment_term."]["name"] == "Net 30"

    # Asked again with the same key, draft or posted: the same invoice, nothing new.
    again = await _create(uk, invoice)
    assert again == created
    assert await client.search("account.invoice", [("reference", "=", invoice.number)]) == [
        created.id
    ]


async def test_every_entity_has_its_customer_taxes_and_rounds_tax_per_line(
    client: TrytonClient, tryton: TrytonServer
) -> None:
    cat = await Catalog.load(client)
    rates = devtryton.load_tax_rates()
    assert rates == [Decimal(r) for r in ("0", "0.10", "0.13", "0.19", "0.20")]
    for code, company in tryton.bootstrap.companies.items():
        for rate in rates:
            assert cat.tax_id(code, rate) == company.tax_ids[str(rate)]
        (config,) = await client.for_company(company.company_id).read(
            "account.configuration", [1], ["tax_rounding"]
        )
        assert config["tax_rounding"] == "line"
    (tax,) = await client.read(
        "account.tax",
        [cat.tax_id("NW-UK", Decimal("0.2"))],
        ["name", "rate", "type", "company", "invoice_account.code", "credit_note_account.code"],
    )
    assert (tax["name"], tax["rate"], tax["type"]) == ("Tax 20%", Decimal("0.2"), "percentage")
    assert tax["company"] == tryton.bootstrap.company_ids["NW-UK"]
    assert tax["invoice_account."]["code"] == devtryton.TAX_PAYABLE_CODE
    assert tax["credit_note_account."]["code"] == devtryton.TAX_PAYABLE_CODE
    with pytest.raises(ValidationFailed) as caught:
        cat.tax_id("NW-UK", Decimal("0.07"))
    assert caught.value.field == "tax_rate"


async def test_an_invoice_at_a_rate_the_entity_has_no_tax_for_is_refused(
    uk: UkProject, client: TrytonClient
) -> None:
    invoice = _invoice(_line("Discovery", "2", "157.50", rate="0.07"))
    with pytest.raises(ValidationFailed) as caught:
        await _create(uk, invoice)
    assert (caught.value.field, caught.value.retryable) == ("tax_rate", False)
    assert await client.search("account.invoice", [("reference", "=", invoice.number)]) == []


async def test_a_draft_is_deleted_and_a_posted_invoice_is_not(
    uk: UkProject, client: TrytonClient
) -> None:
    draft = await _create(uk, _invoice(_line("Discovery", "2", "157.50")))
    await uk.erp.delete_draft_invoice(draft.id)
    assert await client.search("account.invoice", [("id", "=", draft.id)]) == []
    await uk.erp.delete_draft_invoice(draft.id)  # a retried compensation

    posted = await _create(uk, _invoice(_line("Discovery", "2", "157.50")))
    await uk.erp.post_invoice(posted.id)
    with pytest.raises(ValidationFailed) as caught:
        await uk.erp.delete_draft_invoice(posted.id)
    assert (caught.value.code, caught.value.retryable) == ("invoice_posted", False)


# -- time billed ---------------------------------------------------------------------------------


async def _billed_invoice(uk: UkProject) -> tuple[dict[str, int], Invoice, ErpInvoice]:
    booked = await uk.book(
        [
            uk.entry("te-1", "Discovery", ALAN, "12.25"),
            uk.entry("te-2", "Discovery", KAREN, "2"),
            uk.entry("te-3", "Build", ALAN, "7.75"),
        ]
    )
    invoice = _invoice(
        _line("Discovery: Senior Consultant, 14.25 h", "14.25", "157.50"),
        _line("Build: Developer, 7.75 h", "7.75", "140"),
    )
    return booked, invoice, await _create(uk, invoice)


def _links(booked: dict[str, int], erp: ErpInvoice) -> dict[int, int]:
    discovery, build = erp.line_ids
    return {booked["te-1"]: discovery, booked["te-2"]: discovery, booked["te-3"]: build}


@on_each_backend
async def test_marked_time_leaves_the_unbilled_and_tryton_will_not_bill_it_again(
    uk: UkProject, client: TrytonClient
) -> None:
    booked, _, created = await _billed_invoice(uk)
    await uk.erp.post_invoice(created.id)
    links = _links(booked, created)

    await uk.psa.mark_time_billed(links)
    await uk.psa.mark_time_billed(links)  # a retry changes nothing
    assert (await uk.psa.list_time_page(uk.project_id, start=START, end=END)).entries == []
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 0
    lines = await client.read("timesheet.line", sorted(links), ["invoice_line"])
    assert {ln["id"]: ln["invoice_line"] for ln in lines} == links
    assert await uk.erp.invoices_of_project(uk.project_id) == [created.id]
    entries = await uk.psa.list_time_entries(uk.project_id)
    assert {e.billed for e in entries} == {True}
    # Tryton's own project invoicing counts them invoiced: nothing left to invoice.
    (project,) = await client.read("project.work", [uk.project_id], ["amount_to_invoice"])
    assert not project["amount_to_invoice"]
    with pytest.raises(ValidationFailed) as caught:
        await uk.erp.invoice_project(uk.project_id, idempotency_key=f"{uk.ref}:tryton-invoice")
    assert caught.value.code == "nothing_to_invoice"

    # Billed on a posted invoice: neither moved to another line nor taken back.
    with pytest.raises(ValidationFailed):
        await uk.psa.mark_time_billed({booked["te-1"]: created.line_ids[1]})
    with pytest.raises(ValidationFailed):
        await uk.psa.unmark_time_billed([booked["te-1"]])
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 0


async def test_unmarked_time_and_time_of_a_deleted_draft_is_unbilled_again(
    uk: UkProject, client: TrytonClient
) -> None:
    booked, _, created = await _billed_invoice(uk)
    links = _links(booked, created)
    await uk.psa.mark_time_billed(links)
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 0

    await uk.psa.unmark_time_billed(list(links))
    await uk.psa.unmark_time_billed(list(links))  # a retried compensation
    page = await uk.psa.list_time_page(uk.project_id, start=START, end=END)
    assert sorted(int(e.id) for e in page.entries) == sorted(links)

    # Deleting the draft an entry was billed on returns it too (Tryton clears the link).
    await uk.psa.mark_time_billed(links)
    await uk.erp.delete_draft_invoice(created.id)
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 3
    lines = await client.read("timesheet.line", sorted(links), ["invoice_line"])
    assert {ln["invoice_line"] for ln in lines} == {None}


async def test_time_cannot_be_billed_on_another_entity_invoice(uk: UkProject) -> None:
    booked = await uk.book([uk.entry("te-1", "Discovery", ALAN, "2")])
    line = InvoiceLine(
        description="Discovery",
        quantity=Decimal(2),
        unit_price=Money.of("150", "USD"),
        tax_rate=Decimal(0),
    )
    us_invoice = _invoice().model_copy(
        update={"legal_entity_code": "NW-US", "currency": "USD", "lines": [line]}
    )
    created = await _create(uk, us_invoice)
    with pytest.raises(ValidationFailed) as caught:
        await uk.psa.mark_time_billed({booked["te-1"]: created.line_ids[0]})
    assert "different companies" in caught.value.message
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 1


# -- payments ------------------------------------------------------------------------------------


@on_each_backend
async def test_payments_settle_the_invoice_once_per_key(
    uk: UkProject, client: TrytonClient
) -> None:
    invoice = _invoice(_line("Discovery", "12.25", "157.50"))  # 1929.38 + 385.88 VAT
    created = await _create(uk, invoice)
    await uk.erp.post_invoice(created.id)
    total = invoice.total
    assert total == Money.of("2315.26", "GBP")

    first = Money.of("1000.00", "GBP")
    for _ in range(2):  # the second call is a retry: nothing more is paid
        await uk.erp.record_payment(
            created.id,
            amount=first,
            paid_on=END,
            reference="pi_1",
            idempotency_key=f"{uk.ref}:pay:1",
        )
    partly = await uk.erp.get_invoice_info(created.id)
    assert (partly.state, partly.amount_to_pay) == ("posted", total - first)

    with pytest.raises(ValidationFailed) as caught:
        await uk.erp.record_payment(
            created.id,
            amount=total,
            paid_on=END,
            reference="pi_2",
            idempotency_key=f"{uk.ref}:pay:too-much",
        )
    assert caught.value.field == "amount"

    for _ in range(2):
        await uk.erp.record_payment(
            created.id,
            amount=total - first,
            paid_on=END,
            reference="pi_2",
            idempotency_key=f"{uk.ref}:pay:2",
        )
    paid = await uk.erp.get_invoice_info(created.id)
    assert (paid.state, paid.status, paid.amount_to_pay) == (
        "paid",
        InvoiceStatus.PAID,
        Money.zero("GBP"),
    )
    assert (await uk.erp.get_invoice(created.id)).status is InvoiceStatus.PAID
    moves = await client.search_read(
        "account.move",
        [("origin", "=", f"account.invoice,{created.id}"), ("journal.type", "=", "cash")],
        ["description", "state"],
        order=[("id", "ASC")],
    )
    assert [(m["description"], m["state"]) for m in moves] == [
        (f"pi_1 [q2c-key: {uk.ref}:pay:1]", "posted"),
        (f"pi_2 [q2c-key: {uk.ref}:pay:2]", "posted"),
    ]
    # A paid invoice is left alone, whatever the key.
    await uk.erp.record_payment(
        created.id, amount=total, paid_on=END, reference="pi_3", idempotency_key="other"
    )
    after = await client.search(
        "account.move",
        [("origin", "=", f"account.invoice,{created.id}"), ("journal.type", "=", "cash")],
    )
    assert sorted(after) == [m["id"] for m in moves]


# -- two attempts of one step at once -------------------------------------------------------------


async def _invoices_with_key(client: TrytonClient, key: str) -> list[int]:
    return await client.search(
        "account.invoice", [("type", "=", "out"), ("comment", "like", f"%q2c-key: {key}%")]
    )


async def test_invoice_create_that_lost_the_race_leaves_the_first_invoice_only(
    uk: UkProject, client: TrytonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both looked before either created: the later invoice is removed, both calls
    answer with the first."""
    invoice = _invoice(_line("Discovery", "2", "157.50"))
    key = f"{uk.ref}:{invoice.id}:erp"
    first = await _create(uk, invoice, key)
    late = TrytonErp(client)
    looks: list[int | None] = []
    find = late.find_invoice

    async def too_early(idempotency_key: str) -> int | None:
        found = None if not looks else await find(idempotency_key)
        looks.append(found)
        return found

    monkeypatch.setattr(late, "find_invoice", too_early)
    again = await late.create_invoice(
        invoice, party_id=uk.party_id, reference="R", idempotency_key=key, payment_net_days=30
    )
    assert again == first
    assert looks == [None, first.id]
    assert await _invoices_with_key(client, key) == [first.id]


@pytest.mark.chaos
async def test_one_invoice_and_one_payment_when_two_attempts_run_at_once(
    uk: UkProject, client: TrytonClient, tryton: TrytonServer
) -> None:
    invoice = _invoice(_line("Build", "3", "140"))
    key = f"{uk.ref}:{invoice.id}:erp"
    sessions = [await tryton.logged_in_client() for _ in range(2)]
    try:
        made = await asyncio.gather(
            *(
                TrytonErp(s).create_invoice(
                    invoice,
                    party_id=uk.party_id,
                    reference="R",
                    idempotency_key=key,
                    payment_net_days=30,
                )
                for s in sessions
            )
        )
        assert made[0] == made[1]
        assert await _invoices_with_key(client, key) == [made[0].id]
        await uk.erp.post_invoice(made[0].id)
        await asyncio.gather(
            *(
                TrytonErp(s).record_payment(
                    made[0].id,
                    amount=invoice.total,
                    paid_on=END,
                    reference="pi_twin",
                    idempotency_key=f"{key}:pay",
                )
                for s in sessions
            )
        )
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))
    paid = await uk.erp.get_invoice_info(made[0].id)
    assert (paid.state, paid.amount_to_pay) == ("paid", Money.zero("GBP"))
    payments = await client.search(
        "account.move",
        [("origin", "=", f"account.invoice,{made[0].id}"), ("journal.type", "=", "cash")],
    )
    assert len(payments) == 1


@pytest.mark.chaos
async def test_one_time_batch_booked_twice_at_once_books_each_entry_once(
    uk: UkProject, client: TrytonClient, tryton: TrytonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [uk.entry(f"te-twin-{n}", "Build", ALAN, "1.5") for n in range(3)]
    first = await uk.book(entries)
    # A second attempt that looked before the first had booked anything.
    late = TrytonPsa(client)
    looks: list[dict[str, int]] = []
    lines_of_batch = late._lines_of_batch

    async def too_early(idempotency_key: str) -> dict[str, int]:
        found = {} if not looks else await lines_of_batch(idempotency_key)
        looks.append(found)
        return found

    monkeypatch.setattr(late, "_lines_of_batch", too_early)
    assert await late.create_timesheet_lines(entries, idempotency_key=f"{uk.ref}:time") == first
    # And two at once, on their own sessions.
    more = [uk.entry(f"te-twin-more-{n}", "Discovery", KAREN, "2") for n in range(3)]
    sessions = [await tryton.logged_in_client() for _ in range(2)]
    try:
        booked = await asyncio.gather(
            *(
                TrytonPsa(s).create_timesheet_lines(more, idempotency_key=f"{uk.ref}:time:2")
                for s in sessions
            )
        )
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))
    assert booked[0] == booked[1]
    on_project = await uk.psa.list_time_entries(uk.project_id)
    assert sorted(int(e.id) for e in on_project) == sorted([*first.values(), *booked[0].values()])


# -- a closed period -----------------------------------------------------------------------------


async def test_posting_into_a_closed_period_fails_for_good_until_reopened(
    uk: UkProject, client: TrytonClient
) -> None:
    created = await _create(uk, _invoice(_line("Discovery", "2", "157.50")))
    period = await devtryton.close_period(client, "NW-UK", END)
    try:
        with pytest.raises(ValidationFailed) as caught:
            await uk.erp.post_invoice(created.id)
        assert not caught.value.retryable
        assert "period" in caught.value.message
        assert (await uk.erp.get_invoice_info(created.id)).state == "draft"
    finally:
        assert await devtryton.reopen_period(client, "NW-UK", END) == period
    posted = await uk.erp.post_invoice(created.id)
    assert posted.status is InvoiceStatus.OPEN


# -- volume --------------------------------------------------------------------------------------

VOLUME = 20_000


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_period_of_twenty_thousand_entries_is_booked_and_paged(uk: UkProject) -> None:
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    entries = [
        uk.entry(
            f"bulk-{i}",
            ("Discovery", "Build")[i % 2],
            (ALAN, KAREN)[(i // 2) % 2],
            ("0.25", "0.5", "1.75", "2")[i % 4],
            day=days[i % len(days)],
        )
        for i in range(VOLUME)
    ]
    began = time.perf_counter()
    booked = await uk.book(entries)
    booking = time.perf_counter() - began
    assert len(set(booked.values())) == VOLUME

    began = time.perf_counter()
    again = await uk.book(entries)  # a retried batch finds every line, books none
    rebooking = time.perf_counter() - began
    assert again == booked

    began = time.perf_counter()
    total_hours = Decimal(0)
    count = 0
    after: int | None = None
    while True:
        page = await uk.psa.list_time_page(uk.project_id, start=START, end=END, after_id=after)
        count += len(page.entries)
        total_hours += sum((e.hours for e in page.entries), Decimal(0))
        if page.next_after is None:
            break
        after = page.next_after
    paging = time.perf_counter() - began
    assert count == VOLUME
    assert total_hours == Decimal("1.125") * VOLUME  # (0.25 + 0.5 + 1.75 + 2) / 4 each
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == VOLUME

    # Billed on one invoice, then returned (the compensation), all of them.
    created = await _create(uk, _invoice(_line("All the time", str(total_hours), "150")))
    began = time.perf_counter()
    await uk.psa.mark_time_billed({line: created.line_ids[0] for line in booked.values()})
    marking = time.perf_counter() - began
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == 0
    began = time.perf_counter()
    await uk.psa.unmark_time_billed(list(booked.values()))
    unmarking = time.perf_counter() - began
    assert await uk.psa.count_unbilled(uk.project_id, START, END) == VOLUME
    print(
        f"\n{VOLUME} entries: booked in {booking:.1f} s, retry found them in "
        f"{rebooking:.1f} s, paged (1000 a page) in {paging:.1f} s, marked billed in "
        f"{marking:.1f} s, unmarked in {unmarking:.1f} s"
    )
