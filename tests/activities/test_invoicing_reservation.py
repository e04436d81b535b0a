"""Drafting a period again, on the real store: an entry an issued invoice holds is never billed
again, even while the PSA still offers it as unbilled (the first run had not marked it yet, or
marking failed); a voided invoice frees its entries."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.invoicing import ContractContext, DraftInput, InvoicingActivities
from canonical import TimeEntry
from connectors.tryton.wire import ExpensePage, TimePage
from store import Store
from tests.workflows.fakes import RULES
from tests.workflows.invoice_fakes import contract

PERIOD = "2026-11"


class UnmarkedPsa:
    """A PSA that still offers every entry booked: none was ever marked billed."""

    def __init__(self) -> None:
        self.entries: list[TimeEntry] = []

    def book(self, entry_id: str, hours: str) -> None:
        self.entries.append(
            TimeEntry(
                id=entry_id,
                project_id="42",
                task_id="7",
                employee="Ada",
                role="Developer",
                work_date=date(2026, 11, 10),
                hours=Decimal(hours),
                approved=True,
            )
        )

    async def get_project(self, project_id: int) -> Any:
        raise NotImplementedError

    async def list_time_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> TimePage:
        return TimePage(entries=list(self.entries), next_after=None)

    async def list_expense_page(
        self, project_id: int, *, start: date, end: date, after_id: int | None = None, limit: int
    ) -> ExpensePage:
        return ExpensePage(entries=[], next_after=None)


def invoicing(psa: UnmarkedPsa, store: Store) -> InvoicingActivities:
    return InvoicingActivities(
        psa=psa,
        erp=None,  # type: ignore[arg-type]  # drafting reads no customer
        crms={},
        rules=RULES,  # the demo rules: drafting reads only the contract
        tax_rates={"GB": Decimal("0.20")},
        store=store,
    )


def draft_input(draft_id: str) -> DraftInput:
    return DraftInput(
        draft_id=draft_id,
        workflow_id=f"time-to-invoice:42:{PERIOD}",
        period=PERIOD,
        context=ContractContext(
            contract=contract(),
            crm=None,
            opportunity_id=None,
            erp_customer_id="17",
            billing_customer_id="cus_1",
            customer_country="GB",
        ),
    )


async def test_a_rerun_drafts_only_entries_no_issued_invoice_holds(store: Store) -> None:
    psa = UnmarkedPsa()
    psa.book("1001", "4")
    psa.book("1002", "2")
    activities = invoicing(psa, store)
    env = ActivityEnvironment()
    first = await env.run(activities.draft_invoice, draft_input("t2i/run-1"))
    assert first.time_entries == 2 and not first.supplementary
    # Finalized in billing, so issued; the PSA was never told (marking had not happened).
    await store.update_draft("t2i/run-1", status="billed", invoice_number="INV-0001")

    psa.book("1003", "3")  # booked after the first invoice
    second = await env.run(activities.draft_invoice, draft_input("t2i/run-2"))

    assert second.time_entries == 1 and second.hours == Decimal(3)
    assert second.subtotal == Decimal(480)  # 3 h x 160: only the new entry
    assert second.supplementary_to == ["INV-0001"]
    row = await store.draft("t2i/run-2")
    assert row is not None and row.rated["period"]["billed_time_entry_ids"] == ["1003"]
    assert row.rated["invoice"]["memo"].startswith("Supplementary invoice for billing period")


async def test_a_voided_invoice_frees_its_entries(store: Store) -> None:
    psa = UnmarkedPsa()
    psa.book("2001", "4")
    activities = invoicing(psa, store)
    env = ActivityEnvironment()
    await env.run(activities.draft_invoice, draft_input("t2i/run-1"))
    await store.update_draft("t2i/run-1", status="void", invoice_number="INV-0002")

    again = await env.run(activities.draft_invoice, draft_input("t2i/run-2"))

    assert again.time_entries == 1 and not again.supplementary
