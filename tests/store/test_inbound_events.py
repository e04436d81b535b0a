"""Inbound webhook events: one row per (source, event id), whatever the number of deliveries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from store import Store
from store.migrate import downgrade, upgrade
from store.models import InboundEvent


async def test_an_event_is_recorded_once_and_found_again(store: Store) -> None:
    assert await store.inbound_event("salesforce", "evt-1") is None

    first, created = await store.record_inbound_event(
        source="salesforce",
        event_id="evt-1",
        workflow_id="opportunity-to-project:salesforce:006000000000001AAA",
        run_id="run-1",
        correlation_id="006000000000001AAA",
    )
    assert created
    again, created_again = await store.record_inbound_event(
        source="salesforce",
        event_id="evt-1",
        workflow_id="opportunity-to-project:salesforce:006000000000001AAA",
        run_id="run-2",
    )
    assert not created_again
    # The first acceptance wins: a redelivery reports the run the event started.
    assert (again.id, again.run_id) == (first.id, "run-1")

    found = await store.inbound_event("salesforce", "evt-1")
    assert found is not None
    assert found.workflow_id == "opportunity-to-project:salesforce:006000000000001AAA"
    assert found.correlation_id == "006000000000001AAA"
    assert found.received_at.tzinfo is not None
    assert datetime.now(UTC) - found.received_at < timedelta(minutes=1)

    # The same event id from another sender is another event.
    assert await store.inbound_event("stripe", "evt-1") is None
    _, created_elsewhere = await store.record_inbound_event(
        source="stripe", event_id="evt-1", workflow_id="invoice-to-cash:in_1"
    )
    assert created_elsewhere


async def test_received_at_is_kept_as_utc(store: Store) -> None:
    at = datetime(2025, 1, 31, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    await store.record_inbound_event(
        source="salesforce", event_id="evt-tz", workflow_id="wf", received_at=at
    )
    found = await store.inbound_event("salesforce", "evt-tz")
    assert found is not None
    assert found.received_at == at
    assert found.received_at.utcoffset() == timedelta(0)
    with pytest.raises(Exception, match="naive datetime refused"):
        await store.record_inbound_event(
            source="salesforce",
            event_id="evt-naive",
            workflow_id="wf",
            received_at=datetime(2025, 1, 31, 12, 0),
        )


async def test_concurrent_deliveries_record_one_row(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.record_inbound_event(
                source="salesforce", event_id="evt-race", workflow_id="wf-race", run_id=f"run-{i}"
            )
            for i in range(10)
        )
    )
    ids = {row.id for row, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    async with store.engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM inbound_event WHERE event_id = 'evt-race'")
        )
    assert count == 1


async def test_the_database_refuses_a_second_row_for_one_event(store: Store) -> None:
    await store.record_inbound_event(source="salesforce", event_id="evt-dup", workflow_id="wf")
    async with store.engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(
                InboundEvent.__table__.insert().values(  # type: ignore[attr-defined]
                    source="salesforce",
                    event_id="evt-dup",
                    workflow_id="wf-other",
                    received_at=datetime.now(UTC),
                )
            )


async def test_migration_0002_goes_down_and_up(store: Store) -> None:
    await downgrade(store.engine, "0001")
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "inbound_event" not in tables and "audit_entry" in tables
    await upgrade(store.engine)
    _, created = await store.record_inbound_event(
        source="salesforce", event_id="evt-after", workflow_id="wf"
    )
    assert created
