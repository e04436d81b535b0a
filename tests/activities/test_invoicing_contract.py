"""Invoicing by the contract as sold, on the real store: the contract comes from the deal (the
Globex mix of hourly work and a Training fee), task progress from the PSA, and what earlier
invoices billed from q2c's drafts, so a fee is billed once across periods and reruns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.contracts import ContractActivities, RecordContractInput
from activities.invoicing import (
    ContractContext,
    ContractFacts,
    DraftInput,
    InvoicingActivities,
    LoadContractInput,
)
from canonical import (
    Account,
    BillingContract,
    BillingType,
    Customer,
    Expense,
    ExpensePolicy,
    LegalEntity,
    Money,
    Opportunity,
    OpportunityLine,
    RatedPeriod,
    TimeEntry,
    plan_deal,
)
from connectors.tryton.wire import ExpensePage, TimePage
from store import Store
from tests.workflows.fakes import RULES, account, opportunity

PROJECT = 42


@dataclass(frozen=True)
class Task:
    """A task as the PSA reports it (`connectors.tryton.TaskInfo`, with its completion day)."""

    id: int
    name: str
    role: str | None
    rate: Money
    state: str = "open"
    done_on: date | None = None


@dataclass
class Psa:
    """The PSA: the Globex project, its tasks, and the time booked (never marked billed)."""

    tasks: list[Task]
    entries: list[TimeEntry] = field(default_factory=list)
    expenses: list[Expense] = field(default_factory=list)
    party_id: int = 17
    opportunity_id: str = "006000000000001AAA"

    def book(self, entry_id: str, task: int, hours: str, day: date) -> None:
        self.entries.append(
            TimeEntry(
                id=entry_id,
                project_id=str(PROJECT),
                task_id=str(task),
                employee="Ada",
                role="Developer",
                work_date=day,
                hours=Decimal(hours),
                approved=True,
            )
        )

    def spend(self, expense_id: str, category: str, amount: str, day: date) -> None:
        self.expenses.append(
            Expense(
                id=expense_id,
                project_id=str(PROJECT),
                employee="Ada",
                incurred_on=day,
                category=category,
                amount=Money.of(amount, "USD"),
                approved=True,
            )
        )

    async def list_expense_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> ExpensePage:
        return ExpensePage(
            entries=[e for e in self.expenses if start <= e.incurred_on <= end], next_after=None
        )

    async def get_project(self, project_id: int) -> Any:
        @dataclass(frozen=True)
        class Project:
            id: int
            party_id: int | None
            legal_entity_code: str
            currency: str
            opportunity_id: str | None
            project_ref: str | None
            tasks: list[Task]

        return Project(
            id=project_id,
            party_id=self.party_id,
            legal_entity_code="NW-US",
            currency="USD",
            opportunity_id=self.opportunity_id,
            project_ref="salesforce:006000000000001AAA",
            tasks=self.tasks,
        )

    async def list_time_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> TimePage:
        return TimePage(
            entries=[e for e in self.entries if start <= e.work_date <= end], next_after=None
        )


def deal() -> Opportunity:
    """Architecture and Project Management by the hour, Training a fee (by the catalogue)."""
    base = opportunity()
    training = OpportunityLine(
        id="00k3",
        service="Training",
        quantity=Decimal(1),
        unit_rate=Money.of("4000", "USD"),
    )
    return base.model_copy(update={"lines": [*base.lines, training]})


@dataclass
class Crm:
    async def fetch_opportunity(self, opportunity_id: str) -> Opportunity:
        return deal()

    async def fetch_account(self, account_id: str) -> Account:
        return account()


class Erp:
    async def get_customer(
        self, party_id: int, legal_entity: LegalEntity | None = None
    ) -> Customer:
        customer = plan_deal(deal(), account(), RULES).customer
        assert customer is not None
        return customer


def globex_psa(training_done: date | None = None) -> Psa:
    return Psa(
        tasks=[
            Task(7, "Solution Architecture", "Solution Architect", Money.of("150", "USD")),
            Task(8, "Project Management", "Project Manager", Money.of("120", "USD")),
            Task(
                9,
                "Training",
                "Trainer",
                Money.of("120", "USD"),  # the PSA's price: the leak, if it were used
                state="done" if training_done else "open",
                done_on=training_done,
            ),
        ]
    )


async def invoicing(psa: Psa, store: Store) -> InvoicingActivities:
    await store.link("customer", "salesforce:001000000000001AAA", "erp", "17")
    await store.link("customer", "salesforce:001000000000001AAA", "billing", "cus_1")
    return InvoicingActivities(
        psa=psa,
        erp=Erp(),
        crms={"salesforce": Crm()},  # type: ignore[dict-item]
        rules=RULES,
        tax_rates={"US": Decimal("0.0825")},
        store=store,
    )


def draft(draft_id: str, period: str, context: ContractContext) -> DraftInput:
    return DraftInput(
        draft_id=draft_id,
        workflow_id=f"time-to-invoice:{PROJECT}:{period}",
        period=period,
        context=context,
    )


async def test_the_contract_is_the_deal_as_sold_with_the_psas_progress(store: Store) -> None:
    psa = globex_psa(training_done=date(2026, 11, 25))
    activities = await invoicing(psa, store)

    context = await ActivityEnvironment().run(
        activities.load_billing_contract, LoadContractInput(project_id=str(PROJECT))
    )

    contract = context.contract
    assert isinstance(contract, BillingContract)
    [sold] = contract.contract.versions
    assert [(ln.task, ln.billing_type) for ln in sold.lines] == [
        ("Solution Architecture", BillingType.TIME_AND_MATERIALS),
        ("Project Management", BillingType.TIME_AND_MATERIALS),
        ("Training", BillingType.FIXED_FEE),
    ]
    assert [(t.id, t.done_on) for t in contract.tasks] == [
        ("7", None),
        ("8", None),
        ("9", date(2026, 11, 25)),
    ]
    assert contract.billed.items == []  # read when drafting, not carried in history


async def test_the_training_fee_is_billed_once_and_its_hours_never(store: Store) -> None:
    psa = globex_psa(training_done=date(2026, 11, 25))
    psa.book("1001", 7, "10", date(2026, 11, 3))
    psa.book("1002", 9, "4", date(2026, 11, 4))
    activities = await invoicing(psa, store)
    env = ActivityEnvironment()
    context = await env.run(
        activities.load_billing_contract, LoadContractInput(project_id=str(PROJECT))
    )

    first = await env.run(activities.draft_invoice, draft("t2i/run-1", "2026-11", context))
    assert [(ln.description, ln.net) for ln in first.lines] == [
        ("Solution Architecture — Developer (10 h at 150.00 USD)", Decimal("1500.00")),
        ("Training — fixed fee on completion", Decimal("4000.00")),
    ]
    assert first.time_entries == 2  # Training's hours are covered, so marked billed
    row = await store.draft("t2i/run-1")
    assert row is not None
    rated = RatedPeriod.model_validate(row.rated["period"])
    assert rated.covered_time_entry_ids == ["1002"]
    assert [i.key for i in rated.billed_items] == ["completion:00k3"]
    await store.update_draft("t2i/run-1", status="billed", invoice_number="INV-0001")

    psa.book("1003", 7, "1", date(2026, 11, 28))
    rerun = await env.run(activities.draft_invoice, draft("t2i/run-2", "2026-11", context))
    assert [ln.description for ln in rerun.lines] == [
        "Solution Architecture — Developer (1 h at 150.00 USD)"
    ]
    december = await env.run(activities.draft_invoice, draft("t2i/dec", "2026-12", context))
    assert december.lines == []


async def test_a_context_loaded_by_an_earlier_worker_is_drafted_by_the_contract(
    store: Store,
) -> None:
    """A run in flight carries the contract an earlier worker loaded (no contract as sold):
    the draft loads the contract afresh, so Training's hours are not billed by the hour."""
    earlier = {
        "project_id": str(PROJECT),
        "customer_id": "salesforce:001000000000001AAA",
        "customer_name": "Globex Corporation",
        "currency": "USD",
        "billing_type": "time_and_materials",
        "rate_card": None,
        "tasks": [{"id": "9", "name": "Training", "role": "Trainer", "open": True}],
        "milestones": [],
        "not_to_exceed": None,
        "billed_to_date": None,
        "expense_rules": [],
        "tax_rate": "0.0825",
        "payment_terms": {"net_days": 30},
        "legal_entity_code": "NW-US",
        "po_number": None,
    }
    context = ContractContext.model_validate(
        {
            "contract": earlier,
            "crm": "salesforce",
            "opportunity_id": "006000000000001AAA",
            "erp_customer_id": "17",
            "billing_customer_id": "cus_1",
            "customer_country": "US",
        }
    )
    assert isinstance(context.contract, ContractFacts)
    assert context.contract.payment_terms.net_days == 30
    psa = globex_psa()
    psa.book("2001", 9, "4", date(2026, 11, 4))
    activities = await invoicing(psa, store)

    view = await ActivityEnvironment().run(
        activities.draft_invoice, draft("t2i/old", "2026-11", context)
    )

    assert view.lines == [] and view.time_entries == 1  # covered by the fee, not billed


async def test_the_upfront_invoice_bills_the_shares_once_and_periods_never(store: Store) -> None:
    psa = globex_psa(training_done=date(2026, 11, 25))
    activities = await invoicing(psa, store)
    env = ActivityEnvironment()
    context = await env.run(
        activities.load_billing_contract, LoadContractInput(project_id=str(PROJECT))
    )
    assert isinstance(context.contract, BillingContract)
    [sold] = context.contract.contract.versions
    training = sold.lines[2].model_copy(
        update={
            "schedule": sold.lines[2].fee_schedule.model_copy(
                update={"upfront_percent": Decimal(25)}
            )
        }
    )
    upfront_sold = sold.model_copy(update={"lines": [*sold.lines[:2], training]})
    contract = context.contract.model_copy(
        update={
            "contract": context.contract.contract.model_copy(update={"versions": [upfront_sold]})
        }
    )
    context = context.model_copy(update={"contract": contract})

    def upfront(draft_id: str) -> DraftInput:
        return draft(draft_id, "2026-11", context).model_copy(update={"kind": "upfront"})

    first = await env.run(activities.draft_invoice, upfront("t2i/upfront-1"))
    assert [(ln.description, ln.net) for ln in first.lines] == [
        ("Training — fixed fee, 25 % up front", Decimal("1000.00"))
    ]
    assert first.time_entries == 0 and not first.supplementary
    await store.update_draft("t2i/upfront-1", status="billed", invoice_number="INV-0010")

    assert (await env.run(activities.draft_invoice, upfront("t2i/upfront-2"))).lines == []
    period = await env.run(activities.draft_invoice, draft("t2i/nov", "2026-11", context))
    assert [(ln.description, ln.net) for ln in period.lines] == [
        ("Training — fixed fee on completion (the 75 % remaining)", Decimal("3000.00"))
    ]
    assert not period.supplementary  # an upfront invoice is not this period's


async def test_the_contract_as_provisioned_wins_over_the_deal_edited_since(store: Store) -> None:
    """What was provisioned is billed: a deal edited in the CRM afterwards changes nothing
    (only a change order makes a new version)."""
    psa = globex_psa(training_done=date(2026, 11, 25))
    psa.book("1001", 7, "10", date(2026, 11, 3))
    plan = plan_deal(deal(), account(), RULES)
    assert plan.contract is not None
    provisioned = plan.contract.model_copy(
        update={
            "lines": [
                ln.model_copy(update={"rate": Money.of("155", "USD")})
                if ln.task == "Solution Architecture"
                else ln
                for ln in plan.contract.lines
            ]
        }
    )
    await ContractActivities(store).record_contract(
        RecordContractInput(
            contract=provisioned,
            project_id=str(PROJECT),
            task_ids={"Solution Architecture": "7", "Project Management": "8", "Training": "9"},
        )
    )
    activities = await invoicing(psa, store)
    env = ActivityEnvironment()
    context = await env.run(
        activities.load_billing_contract, LoadContractInput(project_id=str(PROJECT))
    )
    assert isinstance(context.contract, BillingContract)
    [kept] = context.contract.contract.versions
    assert {ln.task: ln.task_id for ln in kept.lines}["Training"] == "9"

    drafted = await env.run(activities.draft_invoice, draft("t2i/kept", "2026-11", context))
    assert [(ln.description, ln.net) for ln in drafted.lines] == [
        ("Solution Architecture — Developer (10 h at 155.00 USD)", Decimal("1550.00")),
        ("Training — fixed fee on completion", Decimal("4000.00")),
    ]


async def test_expenses_in_the_policy_are_billed_once_with_their_markup(store: Store) -> None:
    """Travel is billable at 10 % markup; Entertainment is not, and is never billed."""
    psa = globex_psa()
    psa.spend("501", "Travel", "400", date(2026, 11, 5))
    psa.spend("502", "Entertainment", "90", date(2026, 11, 6))
    sold = deal().model_copy(
        update={
            "expense_policy": ExpensePolicy(
                billable_categories=["travel"], markup_percent=Decimal(10)
            )
        }
    )
    activities = await invoicing(psa, store)
    activities.crms = {"salesforce": SoldAs(sold)}  # type: ignore[dict-item]
    env = ActivityEnvironment()
    context = await env.run(
        activities.load_billing_contract, LoadContractInput(project_id=str(PROJECT))
    )
    first = await env.run(activities.draft_invoice, draft("t2i/exp-1", "2026-11", context))
    assert [(ln.net, ln.sources) for ln in first.lines] == [(Decimal("440.00"), ["expense:501"])]
    row = await store.draft("t2i/exp-1")
    assert row is not None
    rated = RatedPeriod.model_validate(row.rated["period"])
    assert rated.billed_expense_ids == ["501"] and rated.non_billable_expense_ids == ["502"]
    await store.update_draft("t2i/exp-1", status="billed")

    again = await env.run(activities.draft_invoice, draft("t2i/exp-2", "2026-11", context))
    assert again.lines == []


@dataclass
class SoldAs:
    sold: Opportunity

    async def fetch_opportunity(self, opportunity_id: str) -> Opportunity:
        return self.sold

    async def fetch_account(self, account_id: str) -> Account:
        return account()
