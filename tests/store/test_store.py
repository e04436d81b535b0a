"""The store round-trips on SQLite and PostgreSQL, and keeps its promises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from store import CrossReferenceConflict, Store


async def test_cross_references_round_trip(store: Store) -> None:
    await store.link("customer", "cust-1", "tryton", "17")
    await store.link("customer", "cust-1", "stripe", "cus_ABC")
    await store.link("customer", "cust-1", "salesforce", "001000000000001AAA")

    assert await store.external_id("customer", "cust-1", "tryton") == "17"
    assert await store.canonical_id("customer", "stripe", "cus_ABC") == "cust-1"
    assert await store.references("customer", "cust-1") == {
        "tryton": "17",
        "stripe": "cus_ABC",
        "salesforce": "001000000000001AAA",
    }
    assert await store.external_id("customer", "cust-2", "tryton") is None


async def test_linking_twice_is_harmless_and_a_different_id_is_refused(store: Store) -> None:
    first = await store.link("project", "p-1", "tryton", "42")
    again = await store.link("project", "p-1", "tryton", "42")
    assert again.id == first.id
    with pytest.raises(CrossReferenceConflict, match="already '42' in tryton"):
        await store.link("project", "p-1", "tryton", "43")
    with pytest.raises(CrossReferenceConflict):
        # One Tryton project cannot stand for two canonical projects.
        await store.link("project", "p-2", "tryton", "42")


async def test_audit_trail_appends_in_order_with_aware_timestamps(store: Store) -> None:
    await store.append_audit(
        workflow_id="opportunity-to-project:salesforce:006A",
        correlation_id="006A",
        step="upsert_customer",
        system="tryton",
        action="created",
        detail={"party_id": 17, "amount": "1200.00"},
        idempotency_key="opportunity-to-project:salesforce:006A:upsert_customer",
    )
    await store.append_audit(
        workflow_id="opportunity-to-project:salesforce:006A",
        correlation_id="006A",
        step="create_project",
        system="tryton",
        action="created",
    )
    # A retried activity appends with the same key: still two entries.
    await store.append_audit(
        workflow_id="opportunity-to-project:salesforce:006A",
        step="upsert_customer",
        action="created",
        idempotency_key="opportunity-to-project:salesforce:006A:upsert_customer",
    )
    trail = await store.audit_trail(correlation_id="006A")
    assert [entry.step for entry in trail] == ["upsert_customer", "create_project"]
    assert trail[0].detail == {"party_id": 17, "amount": "1200.00"}
    assert all(entry.at.tzinfo is not None for entry in trail)
    assert trail[0].at <= trail[1].at <= datetime.now(UTC)


async def test_audit_trail_is_append_only_in_the_database(store: Store) -> None:
    await store.append_audit(workflow_id="wf", step="s", action="created")
    with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE audit_entry SET action = 'forged'"))
    with pytest.raises((IntegrityError, DBAPIError), match="append-only"):
        async with store.engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_entry"))
    assert [e.action for e in await store.audit_trail(workflow_id="wf")] == ["created"]


async def test_exceptions_are_deduplicated_listed_and_resolved(store: Store) -> None:
    first = await store.record_exception(
        dedupe_key="wf-1:validate",
        kind="invalid_deal",
        message="legal_entity: no legal entity for billing country ZZ",
        workflow_id="wf-1",
        correlation_id="006B",
        detail={"fields": ["legal_entity"]},
    )
    again = await store.record_exception(
        dedupe_key="wf-1:validate", kind="invalid_deal", message="same"
    )
    assert again.id == first.id
    assert [e.message for e in await store.exceptions(correlation_id="006B")] == [
        "legal_entity: no legal entity for billing country ZZ"
    ]

    resolved = await store.resolve_exception(first.id or 0, "billing country fixed in CRM")
    assert resolved.status == "resolved"
    assert resolved.resolved_at is not None and resolved.resolved_at.tzinfo is not None
    assert await store.exceptions(correlation_id="006B") == []
    assert len(await store.exceptions(status=None, correlation_id="006B")) == 1
    with pytest.raises(LookupError, match="no exception with id 999"):
        await store.resolve_exception(999, "n/a")


async def test_naive_timestamps_are_refused(store: Store) -> None:
    with pytest.raises((ValueError, Exception), match="timezone-aware"):
        await store.append_audit(
            workflow_id="wf", step="s", action="a", at=datetime(2026, 11, 1, 12, 0)
        )


async def test_migrations_run_twice_without_harm(store: Store) -> None:
    await store.migrate()
    await store.link("invoice", "inv-1", "stripe", "in_1")
    await store.migrate()
    assert await store.external_id("invoice", "inv-1", "stripe") == "in_1"
