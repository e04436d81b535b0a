"""Bursts of Closed Won deals, and what a person checks afterwards.

`seed_burst` makes N open deals for new customers in the Salesforce stand-in; `close_burst`
moves them all to Closed Won at once, so the stand-in posts N signed webhooks to the q2c
service together, as at month end. `wait_for_runs` follows the runs in Temporal with a
deadline, and `exactly_once_report` lists everything that is not "provisioned exactly
once": a run not completed (with its failure), a CRM deal not showing "provisioned", an
account without exactly one Tryton party or Stripe customer, a deal without exactly one
open Tryton project.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from canonical import customer_id_for
from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient, TrytonPsa, mapping
from devstack.salesforce_seed import DealLine, DealSpec, SeededDeal, close_won, seed_deal
from workflows.opportunity_to_project import workflow_id

POLL_S = 0.5
#: The CRM's view of a deal q2c provisioned (`CRM_STATUS[Step.COMPLETED]`).
PROVISIONED = "provisioned"


@dataclass(frozen=True)
class Burst:
    """The deals of one burst; deal i belongs to account `deals[i].account_id`."""

    tag: str
    deals: list[SeededDeal]
    #: Seconds between the first and the last Closed Won update, as the stand-in saw them.
    close_spread_s: float = 0.0

    @property
    def workflow_ids(self) -> list[str]:
        return [workflow_id("salesforce", d.opportunity_id) for d in self.deals]

    @property
    def accounts(self) -> list[str]:
        return sorted({d.account_id for d in self.deals})


def deal_spec(key: str, n: int) -> DealSpec:
    """A clean deal that needs no approval: provisioned straight after Closed Won."""
    return DealSpec(
        key=key,
        account_name=f"Chaos Pty {key}",
        street=f"{n + 1} George St",
        city="Sydney",
        postal_code="2000",
        country="AU",
        deal_name=f"Chaos data platform {key}",
        currency="AUD",
        lines=[
            DealLine(product="Data Migration", quantity=Decimal("120"), unit_price=Decimal("190"))
        ],
    )


async def seed_burst(crm: SalesforceClient, deals: int, *, accounts: int | None = None) -> Burst:
    """`deals` open deals for `accounts` new customers (default: one per deal), round robin."""
    tag = uuid.uuid4().hex[:8]
    seeded = [await seed_deal(crm, deal_spec(f"{tag}-{n}", n)) for n in range(deals)]
    owners = seeded[: accounts or deals]
    placed = []
    for n, deal in enumerate(seeded):
        owner = owners[n % len(owners)].account_id
        if owner != deal.account_id:
            # Several deals of one account: the deal moves to the first deal's account
            # (the account seeded with it keeps no deal and is never provisioned).
            await crm.update("Opportunity", deal.opportunity_id, {"AccountId": owner})
        placed.append(SeededDeal(account_id=owner, opportunity_id=deal.opportunity_id))
    return Burst(tag=tag, deals=placed)


async def close_burst(crm: SalesforceClient, burst: Burst) -> Burst:
    """Every deal of the burst to Closed Won together; the stand-in sends the webhooks."""
    stamps: list[float] = []

    async def close(opportunity_id: str) -> None:
        await close_won(crm, opportunity_id)
        stamps.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(close(d.opportunity_id) for d in burst.deals))
    return Burst(tag=burst.tag, deals=burst.deals, close_spread_s=max(stamps) - started)


@dataclass(frozen=True)
class Progress:
    """Where the burst's runs are, as Temporal says: started, and closed (any end)."""

    statuses: dict[str, WorkflowExecutionStatus | None]

    @property
    def started(self) -> int:
        return sum(s is not None for s in self.statuses.values())

    @property
    def closed(self) -> int:
        return sum(s not in (None, WorkflowExecutionStatus.RUNNING) for s in self.statuses.values())

    @property
    def all_closed(self) -> bool:
        return self.closed == len(self.statuses)


async def progress(client: Client, burst: Burst) -> Progress:
    async def status(wid: str) -> WorkflowExecutionStatus | None:
        try:
            return (await client.get_workflow_handle(wid).describe()).status
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    found = await asyncio.gather(*(status(w) for w in burst.workflow_ids))
    return Progress(dict(zip(burst.workflow_ids, found, strict=True)))


async def wait_for(
    client: Client,
    burst: Burst,
    condition: Callable[[Progress], bool],
    *,
    deadline_s: float,
    what: str,
) -> Progress:
    """Poll the runs until `condition` holds; fail naming `what` after `timeout` seconds.

    Temporal being briefly unreachable (a fault under test) is waited out, not a failure.
    """
    deadline = time.monotonic() + deadline_s
    last: Progress | None = None
    while True:
        try:
            last = await progress(client, burst)
            if condition(last):
                return last
        except RPCError:
            pass
        if time.monotonic() > deadline:
            seen = "unknown" if last is None else f"{last.started} started, {last.closed} closed"
            raise AssertionError(
                f"not {what} within {deadline_s:.0f} s: {seen} of {len(burst.deals)}"
            )
        await asyncio.sleep(POLL_S)


async def wait_for_runs(client: Client, burst: Burst, *, deadline_s: float) -> Progress:
    return await wait_for(
        client, burst, lambda p: p.all_closed, deadline_s=deadline_s, what="every run closed"
    )


async def failure_of(client: Client, wid: str) -> str:
    """The message (and its causes) a failed run ended with, for the test's report."""
    handle = client.get_workflow_handle(wid)
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            messages = []
            while failure.message:
                messages.append(failure.message)
                failure = failure.cause
            return " <- ".join(messages)
    return "no failure recorded"


@dataclass
class Systems:
    """What a person would look at: Temporal, the CRM, Tryton and Stripe."""

    temporal: Client
    crm: SalesforceClient
    tryton: TrytonClient
    stripe: StripeBilling

    async def parties(self, account_id: str) -> list[int]:
        ref = mapping.external_ref_code(customer_id_for("salesforce", account_id))
        return await self.tryton.search(
            "party.party", [("identifiers.code", "=", ref)], context={"active_test": False}
        )

    async def projects(self, opportunity_id: str) -> list[str]:
        """The deal's projects in Tryton, each as "<id>:<state>"."""
        label = f"%{mapping.OPPORTUNITY_LABEL} {opportunity_id}%"
        ids = await self.tryton.search(
            "project.work", [("type", "=", "project"), ("comment", "ilike", label)]
        )
        psa = TrytonPsa(self.tryton)
        found = [await psa.get_project(i) for i in ids]
        return [f"{p.id}:{p.state}" for p in found if p.opportunity_id == opportunity_id]

    async def billing_customers(self) -> Counter[str]:
        """Stripe customers per q2c customer id, over every page of the list API."""
        counts: Counter[str] = Counter()
        after = None
        while True:
            page = await self.stripe.list_customers(starting_after=after)
            counts.update(c.metadata.get("q2c_customer_id", "") for c in page.data)
            if not page.has_more:
                return counts
            after = page.data[-1].id

    async def crm_status(self, opportunity_id: str) -> str | None:
        record = await self.crm.get("Opportunity", opportunity_id, fields=["Q2C_Status__c"])
        status: str | None = record.get("Q2C_Status__c")
        return status


async def exactly_once_report(systems: Systems, burst: Burst) -> list[str]:
    """Every way the burst falls short of "all provisioned, exactly once"; empty when none."""
    problems: list[str] = []
    statuses = (await progress(systems.temporal, burst)).statuses
    for deal, wid in zip(burst.deals, burst.workflow_ids, strict=True):
        status = statuses[wid]
        if status != WorkflowExecutionStatus.COMPLETED:
            name = "not started" if status is None else status.name
            cause = (
                f": {await failure_of(systems.temporal, wid)}"
                if status == WorkflowExecutionStatus.FAILED
                else ""
            )
            problems.append(f"run {wid} {name}{cause}")
        crm = await systems.crm_status(deal.opportunity_id)
        if crm != PROVISIONED:
            problems.append(f"CRM deal {deal.opportunity_id} shows {crm!r}")
        projects = await systems.projects(deal.opportunity_id)
        if len(projects) != 1 or not projects[0].endswith(":open"):
            problems.append(f"deal {deal.opportunity_id} has Tryton projects {projects}")
    billing = await systems.billing_customers()
    for account in burst.accounts:
        parties = await systems.parties(account)
        if len(parties) != 1:
            problems.append(f"account {account} has {len(parties)} Tryton parties {parties}")
        customers = billing[customer_id_for("salesforce", account)]
        if customers != 1:
            problems.append(f"account {account} has {customers} Stripe customers")
    return problems


async def terminate_open_runs(client: Client, burst: Burst) -> None:
    """Stop what a failed test left running, so it does not load the next test."""
    found = await progress(client, burst)
    for wid, status in found.statuses.items():
        if status == WorkflowExecutionStatus.RUNNING:
            await client.get_workflow_handle(wid).terminate(reason="chaos test over")
