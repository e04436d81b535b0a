"""Sweep checkpoints: kept per sweep, as aware UTC times, and never moved back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import inspect

from store import Store
from store.migrate import downgrade, upgrade

T0 = datetime(2026, 12, 1, 1, 0, 0, 123000, tzinfo=UTC)


async def test_a_sweep_starts_without_a_checkpoint_and_keeps_the_newest(store: Store) -> None:
    assert await store.sweep_checkpoint("crm:salesforce") is None

    assert await store.advance_sweep_checkpoint("crm:salesforce", T0) == T0
    later = T0 + timedelta(minutes=5)
    assert await store.advance_sweep_checkpoint("crm:salesforce", later) == later
    # A slower sweep that saw less does not move it back.
    assert await store.advance_sweep_checkpoint("crm:salesforce", T0) == later

    assert await store.sweep_checkpoint("crm:salesforce") == later
    assert await store.sweep_checkpoint("billing:stripe") is None


async def test_a_checkpoint_comes_back_as_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    await store.advance_sweep_checkpoint("billing:stripe", datetime(2026, 12, 1, 2, tzinfo=paris))
    found = await store.sweep_checkpoint("billing:stripe")
    assert found == datetime(2026, 12, 1, 1, tzinfo=UTC) and found.tzinfo == UTC


async def test_concurrent_first_checkpoints_keep_the_newest(store: Store) -> None:
    positions = [T0 + timedelta(seconds=n) for n in range(6)]
    await asyncio.gather(*(store.advance_sweep_checkpoint("crm:x", p) for p in positions))
    assert await store.sweep_checkpoint("crm:x") == positions[-1]
    # Once it exists, racing sweeps (newest first, so the older ones come last) keep the newest.
    later = [T0 + timedelta(minutes=1, seconds=n) for n in reversed(range(6))]
    await asyncio.gather(*(store.advance_sweep_checkpoint("crm:x", p) for p in later))
    assert await store.sweep_checkpoint("crm:x") == later[0]


async def test_migration_0004_goes_down_and_up(store: Store) -> None:
    await store.advance_sweep_checkpoint("crm:salesforce", T0)
    await downgrade(store.engine, "0003")
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "sweep_checkpoint" not in tables and "invoice_draft" in tables
    await upgrade(store.engine)
    assert await store.sweep_checkpoint("crm:salesforce") is None
    assert await store.advance_sweep_checkpoint("crm:salesforce", T0) == T0
