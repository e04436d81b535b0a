"""Two requests with one idempotency key at once, against the Stripe stand-in process.

Stripe holds a key while its first request runs: a second request with it meanwhile is
refused with 409 `idempotency_key_in_use`, which the connector reports as a retryable
conflict; the retry, once the first has answered, gets the first's answer replayed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from stripe._encode import _api_encode

from canonical import Address, Contact, Customer, LegalEntity, PaymentTerms
from connectors.errors import ConflictError, IdempotencyConflict
from connectors.stripe import StripeBilling, customer_params
from tests.fixtures.stripe import StripeStandin

pytestmark = pytest.mark.chaos

ENTITY = LegalEntity(code="DE01", name="q2c Consulting GmbH", country="DE", currency="EUR")


def _customer() -> Customer:
    tag = uuid.uuid4().hex[:10]
    return Customer(
        id=f"CUST-{tag}",
        name=f"Twin {tag} GmbH",
        legal_entity=ENTITY,
        addresses=[Address(street="Hauptstr. 1", city="Berlin", postal_code="10115", country="DE")],
        currency="EUR",
        payment_terms=PaymentTerms(net_days=30),
        contacts=[Contact(name="Ada", email=f"ap-{tag}@twin.example", role="billing")],
    )


def _customers_with_email(stripe: StripeStandin, email: str) -> list[str]:
    listed = stripe.api("GET", "/v1/customers", params={"email": email, "limit": 100})
    return [c["id"] for c in listed.json()["data"]]


async def test_same_key_in_flight_is_a_retryable_conflict_and_makes_one_customer(
    stripe: StripeStandin, stripe_billing: StripeBilling
) -> None:
    customer = _customer()
    key = f"billing-account:{customer.id}"
    # The first request, as the connector would send it, held in flight mid-body.
    form = urlencode(list(_api_encode(customer_params(customer)))).encode()
    body_sent, release = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield form[:10]
        body_sent.set()
        await release.wait()
        yield form[10:]

    async with httpx.AsyncClient(base_url=stripe.url) as raw:
        first = asyncio.create_task(
            raw.post(
                "/v1/customers",
                content=slow_body(),
                headers={
                    "Authorization": f"Bearer {stripe.api_key}",
                    "Idempotency-Key": key,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
        )
        await body_sent.wait()
        with pytest.raises(ConflictError) as conflict:
            await stripe_billing.create_customer(customer, idempotency_key=key)
        release.set()
        answered = await first
    assert conflict.value.retryable
    assert (conflict.value.error_type, conflict.value.status) == ("Conflict", 409)
    assert conflict.value.code == "idempotency_key_in_use"
    assert answered.status_code == 200, answered.text
    # Temporal's retry, after the first answered: the same customer, replayed.
    retried = await stripe_billing.create_customer(customer, idempotency_key=key)
    assert retried == answered.json()["id"]
    assert _customers_with_email(stripe, customer.contacts[0].email) == [retried]


async def test_concurrent_creates_with_one_key_make_one_customer(stripe: StripeStandin) -> None:
    customer = _customer()
    key = f"billing-account:{customer.id}"
    clients = [StripeBilling(stripe.api_key, base_url=stripe.url) for _ in range(5)]

    async def create(billing: StripeBilling) -> str:
        # A conflict is retried with backoff, as Temporal retries the activity, until the
        # request holding the key has answered (bounded: the test fails past the last try).
        for attempt in range(1, 20):
            try:
                return await billing.create_customer(customer, idempotency_key=key)
            except ConflictError:
                await asyncio.sleep(0.05 * attempt)
        return await billing.create_customer(customer, idempotency_key=key)

    try:
        ids = await asyncio.gather(*(create(c) for c in clients))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert len(set(ids)) == 1
    assert _customers_with_email(stripe, customer.contacts[0].email) == [ids[0]]


async def test_key_reused_with_other_parameters_stays_permanent(
    stripe_billing: StripeBilling,
) -> None:
    key = f"billing-account:{uuid.uuid4().hex[:10]}"
    await stripe_billing.create_customer(_customer(), idempotency_key=key)
    with pytest.raises(IdempotencyConflict) as conflict:
        await stripe_billing.create_customer(_customer(), idempotency_key=key)
    assert not conflict.value.retryable
    assert conflict.value.error_type == "IdempotencyConflict"
