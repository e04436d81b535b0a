"""Month end: twenty deals for twenty new customers closed won within one second, with and
without a fault striking mid-burst. Every deal must be provisioned exactly once: its run
completed, the CRM showing "provisioned", one Tryton party and one Stripe customer per
account, one open Tryton project per deal (issue 7, Acceptance).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.chaos.burst import Progress
from tests.chaos.driver import Fault, Outcome, drive_burst
from tests.chaos.stack import ChaosStack, StackConfig

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

DEALS = 20
#: Stripe is unreachable this long: the length of the outage under test, not a wait.
STRIPE_OUTAGE_S = 30.0
#: Salesforce answers 429 to this many API requests, each with `Retry-After`.
SALESFORCE_429S = 3 * DEALS
RETRY_AFTER_S = 2


def first_run_closed(p: Progress) -> bool:
    return p.closed >= 1


def every_run_started(p: Progress) -> bool:
    return p.started == DEALS


def at_once(p: Progress) -> bool:
    return True


def worker_killed(stack: ChaosStack) -> None:
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    stack.add_worker()


def temporal_restarted(stack: ChaosStack) -> None:
    stack.temporal.restart()


def stripe_refusing_connections(stack: ChaosStack) -> None:
    stack.stripe.stop()
    time.sleep(STRIPE_OUTAGE_S)
    stack.stripe.start()


def salesforce_429_storm(stack: ChaosStack) -> None:
    stack.inject_fault(
        stack.salesforce,
        kind="429",
        path="/services/data/",
        count=SALESFORCE_429S,
        retry_after=RETRY_AFTER_S,
    )


def tryton_restarted(stack: ChaosStack) -> None:
    stack.tryton.restart()


FAULTS = [
    # The only worker SIGKILLed once the first run has closed; a new one replaces it.
    Fault("worker SIGKILLed and replaced", first_run_closed, worker_killed),
    # The dev server stopped (SIGTERM) and started again on its port and SQLite file, once
    # every webhook has started its run.
    Fault("Temporal restarted", every_run_started, temporal_restarted),
    # The Stripe stand-in stopped, so connections are refused, and started again 30 s later.
    Fault("Stripe refusing connections for 30 s", first_run_closed, stripe_refusing_connections),
    # The next 60 Salesforce API requests answered 429 with Retry-After: 2.
    Fault("Salesforce 429 storm with Retry-After", at_once, salesforce_429_storm),
    # Tryton stopped and started again on its port and database.
    Fault("Tryton restarted", first_run_closed, tryton_restarted),
]


def assert_exactly_once(outcome: Outcome) -> None:
    assert len(outcome.burst.deals) == DEALS
    spread = outcome.burst.close_spread_s
    assert not outcome.problems, (
        f"{len(outcome.problems)} problems in a burst of {DEALS} closed won within "
        f"{spread:.2f} s (logs: {outcome.logs}):\n" + "\n".join(outcome.problems)
    )


#: Tryton's database backends the burst runs on (see `StackConfig.tryton`).
TRYTON_BACKENDS = ["sqlite", "postgres"]


@pytest.mark.parametrize("tryton", TRYTON_BACKENDS)
async def test_twenty_new_customers_at_once(
    stack: ChaosStack, make_stack: Callable[[StackConfig], ChaosStack], tryton: str
) -> None:
    """Fault: none; twenty deals for twenty new customers closed won within one second,
    with Tryton on `tryton`. Assertion: every run completed and the CRM shows
    "provisioned"; each account has exactly one Tryton party and one Stripe customer, each
    deal exactly one open Tryton project."""
    if tryton != stack.config.tryton:
        stack = await asyncio.to_thread(make_stack, StackConfig(tryton=tryton))
    assert_exactly_once(await drive_burst(stack, DEALS))


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.name) for f in FAULTS])
async def test_twenty_new_customers_under_fault(stack: ChaosStack, fault: Fault) -> None:
    """Fault: the twenty-deal burst with `fault` striking while runs are in flight (see
    FAULTS). Assertion: the fault struck mid-burst (not every run had closed), and still
    every run completed, the CRM shows "provisioned", each account has exactly one Tryton
    party and one Stripe customer, each deal exactly one open Tryton project."""
    outcome = await drive_burst(stack, DEALS, fault=fault)
    assert outcome.at_fault is not None
    assert outcome.at_fault.closed < DEALS, "the fault struck after the burst was over"
    assert_exactly_once(outcome)


async def test_two_deals_of_one_new_account(stack: ChaosStack) -> None:
    """Fault: two deals of ONE new account closed won together, so two runs create its
    customer at the same time. Assertion: both runs completed and show "provisioned"; the
    account has exactly one Tryton party and one Stripe customer; each deal one project."""
    outcome = await drive_burst(stack, 2, accounts=1)
    assert len(outcome.burst.accounts) == 1
    assert not outcome.problems, "\n".join(outcome.problems)


@pytest.mark.postgres
async def test_many_workers_and_replicas_on_postgres(
    make_stack: Callable[[StackConfig], ChaosStack], store_database: str
) -> None:
    """Fault: none, but many processes: three workers and two service replicas (behind a
    round-robin balancer) on one PostgreSQL store take the twenty-deal burst. Assertion:
    the webhooks reached both replicas, and every deal is provisioned exactly once (runs
    completed, CRM "provisioned", one party, one Stripe customer, one project)."""
    config = StackConfig(store_url=store_database, workers=3, services=2)
    stack = await asyncio.to_thread(make_stack, config)
    outcome = await drive_burst(stack, DEALS)
    assert stack.balancer is not None
    assert all(served > 0 for served in stack.balancer.served), stack.balancer.served
    assert_exactly_once(outcome)
