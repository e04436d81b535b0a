"""Migrations run once, by `q2c store migrate`: safe from several places at once, and the
processes that only use the store refuse a schema it has not brought up to date."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from store import Store, StoreNotMigrated
from store.migrate import downgrade

#: As many as a deployment's workers and replicas that might all run the command at once.
AT_ONCE = 4


@pytest.fixture
async def empty_store_url(store_url: str) -> AsyncIterator[str]:
    """A store with no schema at all, on each backend in turn; emptied again afterwards."""
    yield store_url
    if store_url.startswith("postgresql"):
        cleaner = Store.from_url(store_url)
        async with cleaner.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await cleaner.close()


async def test_migrating_from_several_places_at_once_succeeds_everywhere(
    empty_store_url: str,
) -> None:
    stores = [Store.from_url(empty_store_url) for _ in range(AT_ONCE)]
    try:
        outcomes = await asyncio.gather(*(s.migrate() for s in stores), return_exceptions=True)
        assert [repr(o) for o in outcomes if o is not None] == []

        await stores[0].require_migrated()
        await stores[1].link("invoice", "inv-1", "stripe", "in_1")
        assert await stores[2].external_id("invoice", "inv-1", "stripe") == "in_1"
    finally:
        for store in stores:
            await store.close()


async def test_a_store_without_schema_is_refused_with_the_command_that_fixes_it(
    empty_store_url: str,
) -> None:
    store = Store.from_url(empty_store_url)
    try:
        with pytest.raises(StoreNotMigrated, match=r"has no schema yet: run `q2c store migrate`"):
            await store.require_migrated()
        await store.migrate()
        await store.require_migrated()

        await downgrade(store.engine, "-1")  # a release behind
        with pytest.raises(
            StoreNotMigrated, match=r"is at revision \w+, this q2c needs \w+: run `q2c store"
        ):
            await store.require_migrated()
    finally:
        await store.close()
