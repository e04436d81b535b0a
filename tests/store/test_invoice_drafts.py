"""Invoice drafts round-trip on SQLite and PostgreSQL, big ones included."""

from __future__ import annotations

import pytest

from store import InvoiceDraft, Store


async def test_draft_round_trip_and_update(store: Store) -> None:
    ids = [str(n) for n in range(20_000)]  # a big period: kept here, not in workflow history
    draft = InvoiceDraft(
        id="time-to-invoice:42:2026-11/run-1",
        workflow_id="time-to-invoice:42:2026-11",
        project_id="42",
        period="2026-11",
        currency="GBP",
        rated={"lines": [{"description": "Development", "net": "1600.00"}], "ids": ids},
    )
    await store.save_draft(draft)
    found = await store.draft(draft.id)
    assert found is not None and found.rated["ids"] == ids and found.status == "draft"

    updated = await store.update_draft(
        draft.id, status="approved", billing_invoice_id="in_1", erp_line_ids=[7, 8]
    )
    assert (updated.status, updated.billing_invoice_id, updated.erp_line_ids) == (
        "approved",
        "in_1",
        [7, 8],
    )
    assert updated.updated_at >= found.updated_at and updated.updated_at.tzinfo is not None


async def test_saving_again_replaces_the_draft(store: Store) -> None:
    first = InvoiceDraft(
        id="d1", workflow_id="w", project_id="1", period="2026-10", currency="USD", rated={"n": 1}
    )
    await store.save_draft(first)
    again = InvoiceDraft(
        id="d1", workflow_id="w", project_id="1", period="2026-10", currency="USD", rated={"n": 2}
    )
    await store.save_draft(again)
    found = await store.draft("d1")
    assert found is not None and found.rated == {"n": 2}


async def test_updating_an_unknown_draft_names_it(store: Store) -> None:
    with pytest.raises(LookupError, match="no invoice draft 'nope'"):
        await store.update_draft("nope", status="void")
