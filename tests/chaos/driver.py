"""The burst driver: seed a burst, close it, strike a `Fault` mid-burst, wait for every
run, and report what is not provisioned exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.client import Client

from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient
from tests.chaos.burst import (
    Burst,
    Progress,
    Systems,
    close_burst,
    exactly_once_report,
    seed_burst,
    terminate_open_runs,
    wait_for,
    wait_for_runs,
)
from tests.chaos.stack import ChaosStack
from workflows.client import connect

#: A burst is given this long to settle; a correct q2c needs a fraction of it.
RUN_DEADLINE_S = 300.0
#: What a person's look at Tryton may take on a loaded machine (the search scans comments).
CHECK_TIMEOUT = httpx.Timeout(180.0, connect=10.0)
#: How long a fault waits for its moment (e.g. the first run closed) before failing.
TRIGGER_DEADLINE_S = 180.0


@contextlib.asynccontextmanager
async def open_systems(stack: ChaosStack) -> AsyncIterator[Systems]:
    s = stack.settings
    temporal: Client = await connect(s)
    async with (
        SalesforceClient(
            s.salesforce_base_url, s.salesforce_client_id, s.salesforce_client_secret
        ) as crm,
        TrytonClient(
            s.tryton_base_url,
            s.tryton_database,
            s.tryton_user,
            s.tryton_password,
            timeout=CHECK_TIMEOUT,
        ) as tryton,
        StripeBilling(s.stripe_api_key.get_secret_value(), base_url=s.stripe_base_url) as stripe,
    ):
        yield Systems(temporal=temporal, crm=crm, tryton=tryton, stripe=stripe)


@dataclass(frozen=True)
class Fault:
    """Something that goes wrong mid-burst: when it strikes, and what it does.

    `strike` runs in a thread (it stops and starts processes) once `when` holds for the
    burst's runs as Temporal reports them.
    """

    name: str
    when: Callable[[Progress], bool]
    strike: Callable[[ChaosStack], None]


@dataclass(frozen=True)
class Outcome:
    burst: Burst
    #: The runs as they were when the fault struck (None without a fault).
    at_fault: Progress | None
    problems: list[str]
    #: Where every process of the stack logs, for the failure message.
    logs: Path


async def drive_burst(
    stack: ChaosStack,
    deals: int,
    *,
    accounts: int | None = None,
    fault: Fault | None = None,
) -> Outcome:
    """Seed, close together, strike the fault, wait for every run, then check everything.

    The stand-ins' faults are cleared and stopped parts started again before the check
    reads the CRM, Tryton and Stripe; runs left open by a failed test are terminated.
    """
    async with open_systems(stack) as systems:
        burst = await seed_burst(systems.crm, deals, accounts=accounts)
        at_fault = None
        try:
            burst = await close_burst(systems.crm, burst)
            if fault is not None:
                at_fault = await wait_for(
                    systems.temporal,
                    burst,
                    fault.when,
                    deadline_s=TRIGGER_DEADLINE_S,
                    what=f"ready for the fault '{fault.name}'",
                )
                await asyncio.to_thread(fault.strike, stack)
            await wait_for_runs(systems.temporal, burst, deadline_s=RUN_DEADLINE_S)
            await asyncio.to_thread(stack.heal)
            problems = await exactly_once_report(systems, burst)
        finally:
            await asyncio.to_thread(stack.heal)
            await terminate_open_runs(systems.temporal, burst)
    return Outcome(burst=burst, at_fault=at_fault, problems=problems, logs=stack.logs)
