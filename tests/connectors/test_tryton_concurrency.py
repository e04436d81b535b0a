"""Concurrent creates in a real Tryton: each keyed record is made once, whoever races.

Each writer is its own client session, as separate activity workers would be; the
burst goes out at once with `asyncio.gather`, so Tryton sees the requests overlap.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import TypeVar

import pytest

from canonical import (
    Address,
    BillingType,
    Customer,
    LegalEntity,
    Money,
    PaymentTerms,
    Project,
    Task,
)
from connectors.tryton import ProjectRef, TrytonClient, TrytonErp, TrytonPsa
from tests.fixtures.tryton import TrytonServer

pytestmark = pytest.mark.chaos

T = TypeVar("T")

NORTHWIND = LegalEntity(
    code="NW-US",
    name="Northwind Consulting Inc.",
    country="US",
    currency="USD",
    tax_regime="US-SALES-TAX",
)


def _ref() -> str:
    return f"sf:001{uuid.uuid4().hex[:12]}"


def _customer(name: str) -> Customer:
    return Customer(
        id=name,
        name=name,
        legal_entity=NORTHWIND,
        addresses=[
            Address(street="100 Federal Street", city="Boston", postal_code="02110", country="US")
        ],
        currency="USD",
        payment_terms=PaymentTerms(net_days=30),
    )


def _project(name: str) -> Project:
    return Project(
        id=f"prj-{uuid.uuid4().hex[:8]}",
        name=name,
        customer_id="acct",
        legal_entity_code="NW-US",
        currency="USD",
        budget=Money.of("10000", "USD"),
        tasks=[
            Task(name="Discovery", role="Consultant", rate=Money.of("175", "USD")),
            Task(name="Build", role="Consultant", planned_hours=Decimal("8")),
        ],
        billing_type=BillingType.TIME_AND_MATERIALS,
        start_date=date.today() - timedelta(days=1),
    )


async def _each_in_own_session(
    tryton: TrytonServer, calls: list[Callable[[TrytonClient], Awaitable[T]]]
) -> list[T]:
    """Run each call on its own logged-in session, all at once."""
    clients = [tryton.client() for _ in calls]
    try:
        await asyncio.gather(*(c.login() for c in clients))
        return list(await asyncio.gather(*(call(c) for call, c in zip(calls, clients, strict=True))))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def _parties_with_code(client: TrytonClient, ref: str) -> list[int]:
    return await client.search(
        "party.party",
        ["OR", ("code", "=", f"q2c-ref:{ref}"), ("identifiers.code", "=", f"q2c-ref:{ref}")],
        context={"active_test": False},
    )


async def test_twenty_new_customers_at_once_make_twenty_parties(tryton: TrytonServer) -> None:
    refs = [_ref() for _ in range(20)]
    party_ids = await _each_in_own_session(
        tryton,
        [
            lambda c, r=r: TrytonErp(c).upsert_customer(_customer(f"Burst {r}"), r)  # type: ignore[misc]
            for r in refs
        ],
    )
    assert len(set(party_ids)) == 20
    client = await tryton.logged_in_client()
    try:
        for ref, party_id in zip(refs, party_ids, strict=True):
            assert await _parties_with_code(client, ref) == [party_id]
    finally:
        await client.aclose()
