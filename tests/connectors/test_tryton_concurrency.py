"""Concurrent creates in a real Tryton: each keyed record is made once, whoever races.

Each writer is its own client session, as separate activity workers would be; the
burst goes out at once with `asyncio.gather`, so Tryton sees the requests overlap.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from connectors.errors import ConflictError, RetryableError
from connectors.tryton import ProjectRef, TrytonClient, TrytonErp, TrytonPsa
from tests.fixtures.tryton import TrytonServer

pytestmark = pytest.mark.chaos

T = TypeVar("T")
#: Attempts per call, as a retry policy would allow.
ATTEMPTS = 3

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
    """Run each call on its own logged-in session, all at once.

    A retryable error is tried again at once, as Temporal would (a few times at most):
    a lock may outlast Tryton's own retries, but no call may fail for good.
    """
    clients = [tryton.client() for _ in calls]

    async def run(call: Callable[[TrytonClient], Awaitable[T]], client: TrytonClient) -> T:
        for _ in range(ATTEMPTS - 1):
            try:
                return await call(client)
            except RetryableError:
                pass
        return await call(client)

    try:
        await asyncio.gather(*(c.login() for c in clients))
        return list(await asyncio.gather(*(run(f, c) for f, c in zip(calls, clients, strict=True))))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


@pytest.fixture
async def client(tryton: TrytonServer) -> AsyncIterator[TrytonClient]:
    c = await tryton.logged_in_client()
    try:
        yield c
    finally:
        await c.aclose()


async def _parties_of(client: TrytonClient, ref: str) -> list[int]:
    """Every party, archived too, that carries the reference as code or identifier."""
    code = f"q2c-ref:{ref}"
    return await client.search(
        "party.party",
        ["OR", ("code", "=", code), ("identifiers.code", "=", code)],
        context={"active_test": False},
    )


async def _projects_of(client: TrytonClient, key: str) -> list[int]:
    return await client.search(
        "project.work",
        [("type", "=", "project"), ("comment", "like", f"%q2c-key: {key}%")],
        context={"active_test": False},
    )


def _upsert(ref: str, name: str) -> Callable[[TrytonClient], Awaitable[int]]:
    return lambda c: TrytonErp(c).upsert_customer(_customer(name), ref)


def _create_project(key: str, party_id: int) -> Callable[[TrytonClient], Awaitable[ProjectRef]]:
    return lambda c: TrytonPsa(c).create_project(
        _project(f"Project {key}"), party_id=party_id, idempotency_key=key
    )


async def test_twenty_new_customers_at_once_make_twenty_parties(
    tryton: TrytonServer, client: TrytonClient
) -> None:
    refs = [_ref() for _ in range(20)]
    party_ids = await _each_in_own_session(tryton, [_upsert(r, f"Burst {r}") for r in refs])
    assert len(set(party_ids)) == 20
    for ref, party_id in zip(refs, party_ids, strict=True):
        assert await _parties_of(client, ref) == [party_id]
    # Run again (a few suffice), the same references land on the same parties.
    again = await _each_in_own_session(tryton, [_upsert(r, f"Burst {r}") for r in refs[:4]])
    assert again == party_ids[:4]


async def test_two_deals_of_one_new_account_at_once_make_one_party(
    tryton: TrytonServer, client: TrytonClient
) -> None:
    refs = [_ref() for _ in range(5)]
    calls = [_upsert(r, f"Twin {r}") for r in refs for _ in range(2)]
    party_ids = await _each_in_own_session(tryton, calls)
    for n, ref in enumerate(refs):
        first, second = party_ids[2 * n], party_ids[2 * n + 1]
        assert first == second
        assert await _parties_of(client, ref) == [first]


async def test_upsert_that_loses_the_race_returns_the_winners_party(
    client: TrytonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loser looked before the winner committed: Tryton's unique code refuses its
    create, and it updates and returns the winner's party."""
    ref = _ref()
    winner = await TrytonErp(client).upsert_customer(_customer("Winner Ltd"), ref)
    loser = TrytonErp(client)
    looks: list[int | None] = []
    find = loser.find_customer

    async def too_early(external_ref: str) -> int | None:
        found = None if not looks else await find(external_ref)
        looks.append(found)
        return found

    monkeypatch.setattr(loser, "find_customer", too_early)
    assert await loser.upsert_customer(_customer("Winner Limited"), ref) == winner
    assert looks == [None, winner]
    assert await _parties_of(client, ref) == [winner]
    (party,) = await client.read("party.party", [winner], ["name", "code"])
    assert (party["name"], party["code"]) == ("Winner Limited", f"q2c-ref:{ref}")


async def test_twenty_projects_at_once_make_twenty_projects(
    tryton: TrytonServer, client: TrytonClient
) -> None:
    party_id = await TrytonErp(client).upsert_customer(_customer("Many Deals Inc"), _ref())
    keys = [f"project:sf:{uuid.uuid4().hex[:10]}" for _ in range(20)]
    refs = await _each_in_own_session(tryton, [_create_project(k, party_id) for k in keys])
    assert len({r.project_id for r in refs}) == 20
    for key, ref in zip(keys, refs, strict=True):
        assert await _projects_of(client, key) == [ref.project_id]
        tasks = await client.search("project.work", [("parent", "=", ref.project_id)])
        assert sorted(tasks) == sorted(ref.task_ids.values())
        assert set(ref.task_ids) == {"Discovery", "Build"}
    again = await _each_in_own_session(tryton, [_create_project(k, party_id) for k in keys[:4]])
    assert [(r.project_id, r.task_ids, r.created) for r in again] == [
        (r.project_id, r.task_ids, False) for r in refs[:4]
    ]


async def test_one_project_created_twice_at_once_is_one_project(
    tryton: TrytonServer, client: TrytonClient
) -> None:
    party_id = await TrytonErp(client).upsert_customer(_customer("Retry Corp"), _ref())
    keys = [f"project:sf:{uuid.uuid4().hex[:10]}" for _ in range(5)]
    calls = [_create_project(k, party_id) for k in keys for _ in range(2)]
    refs = await _each_in_own_session(tryton, calls)
    for n, key in enumerate(keys):
        first, second = refs[2 * n], refs[2 * n + 1]
        assert (first.project_id, first.task_ids) == (second.project_id, second.task_ids)
        assert await _projects_of(client, key) == [first.project_id]
        assert len(await client.search("project.work", [("parent", "=", first.project_id)])) == 2


async def test_project_create_that_loses_the_race_returns_the_winners_project(
    client: TrytonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    party_id = await TrytonErp(client).upsert_customer(_customer("Race Ltd"), _ref())
    key = f"project:sf:{uuid.uuid4().hex[:10]}"
    winner = await TrytonPsa(client).create_project(
        _project("Won"), party_id=party_id, idempotency_key=key
    )
    loser = TrytonPsa(client)
    find = loser.find_project
    looks: list[ProjectRef | None] = []

    async def too_early(idempotency_key: str) -> ProjectRef | None:
        found = None if not looks else await find(idempotency_key)
        looks.append(found)
        return found

    monkeypatch.setattr(loser, "find_project", too_early)
    found = await loser.create_project(_project("Lost"), party_id=party_id, idempotency_key=key)
    assert (found.project_id, found.task_ids, found.created) == (
        winner.project_id,
        winner.task_ids,
        False,
    )
    assert await _projects_of(client, key) == [winner.project_id]


async def test_a_taken_unique_value_is_a_retryable_conflict(client: TrytonClient) -> None:
    """What a race on a numbering sequence looks like: Tryton refuses a unique value."""
    ref = _ref()
    party_id = await TrytonErp(client).upsert_customer(_customer("Taken Code"), ref)
    with pytest.raises(ConflictError) as caught:
        await client.create_one("party.party", {"name": "Copy", "code": f"q2c-ref:{ref}"})
    assert caught.value.retryable and caught.value.error_type == "Conflict"
    assert await _parties_of(client, ref) == [party_id]
    key = f"project:sf:{uuid.uuid4().hex[:10]}"
    project = await TrytonPsa(client).create_project(
        _project("Numbered"), party_id=party_id, idempotency_key=key
    )
    (row,) = await client.read("project.work", [project.project_id], ["number", "company"])
    with pytest.raises(ConflictError):
        await client.for_company(row["company"]).create_one(
            "project.work", {"name": "Copy", "type": "project", "number": row["number"]}
        )
