"""Contracts as sold, on the Tryton side: tasks carry their billing type and the day they
were done, the project its contract value; expenses are project disbursements read and
billed by q2c; employee cost gives a project's cost; a fee's revenue is deferred and
recognized month by month."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from canonical import (
    Address,
    BillingType,
    Customer,
    Expense,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Money,
    PaymentTerms,
    Project,
    Task,
    TimeEntry,
)
from connectors.errors import ConnectorError, ValidationFailed
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from devstack import tryton as devtryton
from tests.fixtures.tryton import TrytonServer

UK = devtryton.load_legal_entities()["NW-UK"]
ALAN, KAREN = "Alan Turing", "Karen Sparck Jones"
TODAY = date.today()
#: A fee delivered over the first quarter of next year (the bootstrap opens two years).
Q1 = (date(TODAY.year + 1, 1, 1), date(TODAY.year + 1, 3, 31))


@pytest.fixture
async def client(tryton: TrytonServer) -> AsyncIterator[TrytonClient]:
    c = await tryton.logged_in_client()
    try:
        yield c
    finally:
        await c.aclose()


@dataclass
class Deal:
    erp: TrytonErp
    psa: TrytonPsa
    ref: str
    party_id: int
    project_id: int
    tasks: dict[str, int]

    def expense(self, category: str, amount: str, employee: str = ALAN) -> Expense:
        return Expense(
            id=f"exp-{uuid.uuid4().hex[:6]}",
            project_id=str(self.project_id),
            employee=employee,
            incurred_on=TODAY,
            category=category,
            amount=Money.of(amount, "GBP"),
            description=f"{category} for the workshop",
        )

    async def invoice(self, *lines: InvoiceLine) -> tuple[Invoice, int, list[int]]:
        invoice = Invoice(
            id=f"inv-{uuid.uuid4().hex[:8]}",
            customer_id="acct-uk",
            currency="GBP",
            lines=list(lines),
            status=InvoiceStatus.OPEN,
            number=f"{uuid.uuid4().hex[:8].upper()}-0001",
            project_id=str(self.project_id),
            issued_at=datetime.now(UTC),
            legal_entity_code="NW-UK",
        )
        assert invoice.number is not None
        made = await self.erp.create_invoice(
            invoice,
            party_id=self.party_id,
            reference=invoice.number,
            idempotency_key=f"{self.ref}:{invoice.id}:erp",
            payment_net_days=30,
        )
        return invoice, made.id, made.line_ids


def _line(description: str, price: str, span: tuple[date, date] | None = None) -> InvoiceLine:
    return InvoiceLine(
        description=description,
        quantity=Decimal(1),
        unit_price=Money.of(price, "GBP"),
        tax_rate=Decimal("0.20"),
        revenue_from=span[0] if span else None,
        revenue_to=span[1] if span else None,
    )


@pytest.fixture
async def deal(client: TrytonClient) -> Deal:
    """A GBP customer of NW-UK and a mixed project: hourly build, a fee, a milestone."""
    erp, psa = TrytonErp(client), TrytonPsa(client)
    ref = f"sf:001{uuid.uuid4().hex[:12]}"
    customer = Customer(
        id="acct-uk",
        name=f"Initech {ref[-6:]}",
        legal_entity=UK,
        addresses=[Address(street="1 Dock Road", city="London", postal_code="E14", country="GB")],
        currency="GBP",
        payment_terms=PaymentTerms(net_days=30),
    )
    party_id = await erp.upsert_customer(customer, ref)
    project = Project(
        id=f"prj-{uuid.uuid4().hex[:8]}",
        name=f"Mixed deal {ref[-6:]}",
        customer_id="acct-uk",
        legal_entity_code="NW-UK",
        currency="GBP",
        budget=Money.of("48000", "GBP"),
        tasks=[
            Task(name="Build", role="Developer", rate=Money.of("140", "GBP")),
            Task(
                name="Training",
                role="Consultant",
                rate=Money.of("120", "GBP"),
                billing_type=BillingType.FIXED_FEE,
            ),
            Task(
                name="Go-live",
                role="Project Manager",
                rate=Money.of("130", "GBP"),
                billing_type=BillingType.MILESTONE,
            ),
        ],
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=TODAY.replace(day=1),
    )
    made = await psa.create_project(project, party_id=party_id, idempotency_key=f"{ref}:project")
    return Deal(erp, psa, ref, party_id, made.project_id, dict(made.task_ids))


async def test_tasks_carry_billing_type_and_done_day_and_project_its_contract_value(
    deal: Deal,
) -> None:
    info = await deal.psa.get_project(deal.project_id)
    types = {t.name: t.billing_type for t in info.tasks}
    assert types == {
        "Build": BillingType.TIME_AND_MATERIALS,
        "Training": BillingType.FIXED_FEE,
        "Go-live": BillingType.MILESTONE,
    }
    assert info.contract_value == Money.of("48000.00", "GBP")
    assert all(t.done_on is None and t.state == "open" for t in info.tasks)

    done_on = await deal.psa.set_task_done(deal.tasks["Go-live"])
    assert done_on == TODAY  # Tryton's date, in the server's (this machine's) time zone
    # Again (a retry): nothing changes, the day is kept.
    assert await deal.psa.set_task_done(deal.tasks["Go-live"]) == done_on
    tasks = {t.name: t for t in (await deal.psa.get_project(deal.project_id)).tasks}
    assert tasks["Go-live"].state == "done" and tasks["Go-live"].done_on == TODAY
    assert tasks["Training"].done_on is None

    # Reopened in Tryton by hand: no longer done, no day.
    client = deal.psa.client
    open_status = int(await client.model("ir.model.data", "get_id", "project", "work_open_status"))
    await client.write("project.work", [deal.tasks["Go-live"]], {"status": open_status})
    tasks = {t.name: t for t in (await deal.psa.get_project(deal.project_id)).tasks}
    assert tasks["Go-live"].state == "open" and tasks["Go-live"].done_on is None


async def test_expenses_are_disbursements_read_by_page_and_billed_once(deal: Deal) -> None:
    travel = deal.expense("Travel", "412.60")
    key = f"{deal.ref}:expense:1"
    first = await deal.psa.book_expense(travel, idempotency_key=key)
    assert await deal.psa.book_expense(travel, idempotency_key=key) == first  # a retry
    dinner = await deal.psa.book_expense(
        deal.expense("Entertainment", "95", employee=KAREN),
        idempotency_key=f"{deal.ref}:expense:2",
        approve=False,
    )
    with pytest.raises(ValidationFailed) as no_category:
        await deal.psa.book_expense(
            deal.expense("Yachts", "1"), idempotency_key=f"{deal.ref}:expense:3"
        )
    assert no_category.value.field == "category"

    page = await deal.psa.list_expense_page(deal.project_id, start=TODAY, end=TODAY, limit=1)
    assert [e.id for e in page.entries] == [str(first)] and page.next_after == first
    (expense,) = page.entries
    assert expense.category == "Travel" and expense.employee == ALAN
    assert expense.amount == Money.of("412.60", "GBP")
    assert expense.description == "Travel for the workshop"
    assert expense.approved and not expense.billed
    rest = await deal.psa.list_expense_page(
        deal.project_id, start=TODAY, end=TODAY, after_id=page.next_after
    )
    assert [(e.id, e.category, e.approved) for e in rest.entries] == [
        (str(dinner), "Entertainment", False)
    ]
    assert rest.next_after is None

    _, invoice_id, (line_id,) = await deal.invoice(_line("Travel (at cost)", "412.60"))
    with pytest.raises(ConnectorError):  # not approved: not billable yet
        await deal.psa.mark_expenses_billed({dinner: line_id})
    await deal.psa.mark_expenses_billed({first: line_id})
    await deal.psa.mark_expenses_billed({first: line_id})  # idempotent
    unbilled = await deal.psa.list_expense_page(deal.project_id, start=TODAY, end=TODAY)
    assert [e.id for e in unbilled.entries] == [str(dinner)]

    await deal.psa.unmark_expenses_billed([first])  # the draft was abandoned
    again = await deal.psa.list_expense_page(deal.project_id, start=TODAY, end=TODAY)
    assert {e.id for e in again.entries} == {str(first), str(dinner)}
    await deal.psa.mark_expenses_billed({first: line_id})
    await deal.erp.post_invoice(invoice_id)
    with pytest.raises(ConnectorError):  # billed on a posted invoice: a credit note first
        await deal.psa.unmark_expenses_billed([first])


async def test_project_cost_is_hours_times_employee_cost(deal: Deal) -> None:
    entries = [
        TimeEntry(
            id=f"te-{i}",
            project_id=str(deal.project_id),
            task_id=str(deal.tasks[task]),
            employee=who,
            role="-",
            work_date=TODAY,
            hours=Decimal(hours),
        )
        for i, (task, who, hours) in enumerate(
            [("Build", ALAN, "3"), ("Training", KAREN, "2.5"), ("Build", KAREN, "0.25")]
        )
    ]
    await deal.psa.create_timesheet_lines(entries, idempotency_key=f"{deal.ref}:time")
    # Both UK people cost the default 70 USD an hour, 55 GBP at the demo rate.
    cost = await deal.psa.project_cost(deal.project_id, TODAY, TODAY)
    assert cost == Money.of("316.25", "GBP")  # 5.75 h x 55
    yesterday = date.fromordinal(TODAY.toordinal() - 1)
    assert await deal.psa.project_cost(deal.project_id, yesterday, yesterday) == Money.of(
        "0.00", "GBP"
    )


async def test_fee_revenue_is_deferred_and_recognized_month_by_month(deal: Deal) -> None:
    _, invoice_id, _ = await deal.invoice(
        _line("Training (fixed fee)", "3000", span=Q1), _line("Build, 5 h", "700")
    )
    await deal.erp.post_invoice(invoice_id)
    await deal.erp.post_invoice(invoice_id)  # a retry runs nothing twice
    revenue = await deal.erp.revenue_by_project(deal.project_id)
    # Time and materials is recognized as invoiced; the fee waits for its months.
    assert (revenue.recognized, revenue.deferred) == (
        Money.of("700.00", "GBP"),
        Money.of("3000.00", "GBP"),
    )

    await deal.erp.recognize_revenue("NW-UK", date(Q1[0].year, 1, 31))
    await deal.erp.recognize_revenue("NW-UK", date(Q1[0].year, 1, 31))  # idempotent
    revenue = await deal.erp.revenue_by_project(deal.project_id)
    assert (revenue.recognized, revenue.deferred) == (
        Money.of("1700.00", "GBP"),
        Money.of("2000.00", "GBP"),
    )

    await deal.erp.recognize_revenue("NW-UK", Q1[1])
    revenue = await deal.erp.revenue_by_project(deal.project_id)
    assert (revenue.recognized, revenue.deferred) == (
        Money.of("3700.00", "GBP"),
        Money.of("0.00", "GBP"),
    )


async def test_a_half_or_backward_revenue_span_names_the_field(deal: Deal) -> None:
    backward = _line("Fee", "100", span=(Q1[1], Q1[0]))
    with pytest.raises(ValidationFailed) as raised:
        await deal.invoice(backward)
    assert raised.value.field == "lines[0].revenue_to"
