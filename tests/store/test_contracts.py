"""Contracts as provisioned: versions written once, read back in order, on both backends."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import text

from store import ContractVersionRow, InvoiceDraft, Store
from store.migrate import downgrade


def version(
    n: int, *, body: dict[str, object] | None = None, project: str = "17"
) -> ContractVersionRow:
    return ContractVersionRow(
        contract_id="salesforce:006A",
        version=n,
        project_id=project,
        effective_from=date(2026, 11, n),
        source="opportunity:006A" if n == 1 else f"change-order:a0{n}",
        body=body or {"version": n},
    )


async def test_a_version_is_written_once_and_read_back_in_order(store: Store) -> None:
    first, created = await store.add_contract_version(version(1, body={"value": "16000.00"}))
    assert created
    # A retried provisioning with other content keeps what was provisioned first.
    again, created_again = await store.add_contract_version(version(1, body={"value": "1.00"}))
    assert not created_again and again.id == first.id and again.body == {"value": "16000.00"}
    await store.add_contract_version(version(2))

    by_contract = await store.contract_versions(contract_id="salesforce:006A")
    by_project = await store.contract_versions(project_id="17")
    assert [v.version for v in by_contract] == [v.version for v in by_project] == [1, 2]
    assert by_contract[1].effective_from == date(2026, 11, 2)
    assert by_contract[1].created_at.tzinfo is not None
    assert await store.contract_versions(project_id="18") == []
    with pytest.raises(ValueError, match="contract_id or by project_id"):
        await store.contract_versions()


async def test_twins_racing_to_write_one_version_leave_one_row(store: Store) -> None:
    outcomes = await asyncio.gather(*(store.add_contract_version(version(1)) for _ in range(8)))
    assert sum(created for _, created in outcomes) == 1
    assert len({row.id for row, _ in outcomes}) == 1
    assert len(await store.contract_versions(contract_id="salesforce:006A")) == 1


async def test_migrating_keeps_drafts_written_before_contracts_existed(store: Store) -> None:
    await downgrade(store.engine, "0004")
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO invoice_draft (id, workflow_id, project_id, period, status, "
                "currency, rated, adjustments, erp_line_ids, created_at, updated_at) VALUES "
                "('d1', 'w', '17', '2026-11', 'billed', 'USD', '{}', '[]', '[]', "
                "'2026-11-30 10:00:00', '2026-11-30 10:00:00')"
            )
        )
    await store.migrate()
    found = await store.draft("d1")
    assert found is not None and (found.kind, found.status) == ("period", "billed")
    upfront = InvoiceDraft(
        id="d2", workflow_id="w2", project_id="17", period="2026-11", currency="USD", kind="upfront"
    )
    await store.save_draft(upfront)
    assert [d.kind for d in await store.billed_drafts("17")] == ["period"]
