"""The catch-up sweeps' activities: find in the CRM and in billing what webhooks missed, and
start or signal it exactly as the webhook intake would have (`workflows.starters`).

Both run on the workflow queue (`settings.task_queue`), not on a system queue: their work is
starting and signalling runs with the worker's Temporal client; their list calls to
Salesforce and Stripe (one paged query each per sweep) skip those queues' rate limits.

Each is idempotent: a deal that already has a run starts nothing, an event id already
delivered signals nothing, and the checkpoint only moves forward. A sweep that fails midway
leaves its checkpoint where it was; the retry or the next sweep looks again from there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.errors import translate_connector_errors
from connectors.errors import ValidationFailed
from connectors.salesforce import ChangedOpportunity, check_id
from connectors.stripe import INVOICE_EVENT_KINDS, payment_kind
from connectors.stripe import wire as stripe_wire
from settings import Settings
from store import Store
from store.models import utcnow
from workflows.starters import (
    RUN_CLOSED,
    DeliveryFailed,
    SignalRefused,
    deliver_billing_event,
    find_opportunity_run,
    start_opportunity_run,
)
from workflows.sweeps import SWEEP_BILLING, SWEEP_CRM, SweepInput, SweepResult

log = logging.getLogger("q2c.sweeps")

#: How far back a sweep looks the very first time, before it has a checkpoint.
FIRST_LOOKBACK = timedelta(days=1)
#: The CRM sweep saves its checkpoint every so many deals, so a retry need not start over.
CHECKPOINT_EVERY = 200
#: Billing events per page (Stripe's maximum).
BILLING_PAGE = 100
#: Workflow ids a sweep result lists at most (the counts are complete).
MAX_LISTED = 100
SIGNAL_TIMEOUT_S = 10.0


def crm_checkpoint(crm: str) -> str:
    return f"crm:{crm}"


BILLING_CHECKPOINT = "billing:stripe"


def _is_record_id(value: str) -> bool:
    """Never false for what Salesforce sends; the id becomes part of a workflow id."""
    try:
        check_id(value)
    except ValidationFailed:
        log.warning("sweep skipped opportunity %r: not a Salesforce record id", value)
        return False
    return True


class ChangedDeals(Protocol):
    """What the CRM sweep asks of a CRM (`connectors.salesforce.SalesforceClient`)."""

    def closed_won_changed_since(
        self, since: datetime, *, limit: int | None = None
    ) -> AsyncIterator[ChangedOpportunity]: ...


class BillingEvents(Protocol):
    """What the billing sweep asks of billing (`connectors.stripe.StripeBilling`)."""

    async def list_events(
        self,
        types: Sequence[str],
        *,
        created_gte: int,
        limit: int = ...,
        starting_after: str | None = None,
    ) -> stripe_wire.ListObject[stripe_wire.Event]: ...


class SweepActivities:
    """The sweeps, holding the CRM and billing clients, the store and the settings.

    `client` is the Temporal client runs are started and signalled with; by default the
    worker's own (`activity.client()`).
    """

    def __init__(
        self,
        settings: Settings,
        crms: Mapping[str, ChangedDeals],
        billing: BillingEvents,
        store: Store,
        client: Client | None = None,
    ) -> None:
        self.settings = settings
        self.crms = crms
        self.billing = billing
        self.store = store
        self._client = client

    def _temporal(self) -> Client:
        return self._client or activity.client()

    async def _temporal_async(self) -> Client:
        return self._temporal()

    async def _since(self, name: str) -> datetime:
        return await self.store.sweep_checkpoint(name) or utcnow() - FIRST_LOOKBACK

    @activity.defn(name=SWEEP_CRM)
    @translate_connector_errors
    async def sweep_crm(self, request: SweepInput) -> SweepResult:
        """Start the run of every Closed Won deal changed since the checkpoint that has none."""
        client = self._temporal()
        found = already = skipped = 0
        started: list[str] = []
        checkpoint: datetime | None = None
        for crm, connector in self.crms.items():
            name = crm_checkpoint(crm)
            newest: datetime | None = None
            # Oldest change first: once a deal is handled, every older change is too, so the
            # checkpoint may move up to it.
            async for deal in connector.closed_won_changed_since(await self._since(name)):
                found += 1
                activity.heartbeat(deal.id)
                newest = deal.last_modified_date
                if not _is_record_id(deal.id):
                    skipped += 1
                elif await self._start_unless_seen(client, crm, deal, started):
                    already += 1
                if found % CHECKPOINT_EVERY == 0:
                    checkpoint = await self.store.advance_sweep_checkpoint(name, newest)
            if newest is not None:
                checkpoint = await self.store.advance_sweep_checkpoint(name, newest)
        return SweepResult(
            sweep=request.sweep,
            found=found,
            delivered=started[:MAX_LISTED],
            delivered_count=len(started),
            already_handled=already,
            skipped=skipped,
            checkpoint=checkpoint,
        )

    async def _start_unless_seen(
        self, client: Client, crm: str, deal: ChangedOpportunity, started: list[str]
    ) -> bool:
        """Start the deal's run as its webhook would have; True if it had one already."""
        if await find_opportunity_run(client, deal.id, crm=crm) is not None:
            return True
        run = await start_opportunity_run(
            client,
            self.settings,
            deal.id,
            crm=crm,
            trigger=f"sweep:{crm}",
            changed_at=deal.last_modified_date,
        )
        if not run.started:  # a webhook or another sweep started it a moment ago
            return True
        started.append(run.workflow_id)
        log.info("sweep started %s (its webhook was missed)", run.workflow_id)
        return False

    @activity.defn(name=SWEEP_BILLING)
    @translate_connector_errors
    async def sweep_billing(self, request: SweepInput) -> SweepResult:
        """Deliver every invoice event since the checkpoint to its run, as the webhook does."""
        since = await self._since(BILLING_CHECKPOINT)
        events: list[stripe_wire.Event] = []
        after: str | None = None
        while True:  # newest first, as Stripe lists
            page = await self.billing.list_events(
                list(INVOICE_EVENT_KINDS),
                created_gte=int(since.timestamp()),
                limit=BILLING_PAGE,
                starting_after=after,
            )
            events += page.data
            activity.heartbeat(len(events))
            if not page.has_more or not page.data:
                break
            after = page.data[-1].id
        signalled: list[str] = []
        already = unknown = skipped = 0
        for event in sorted(events, key=lambda e: e.created):  # in the order they happened
            kind = payment_kind(event.type)
            try:
                invoice = stripe_wire.Invoice.model_validate(event.data.object)
            except ValidationError:
                kind = None
            if kind is None:
                skipped += 1
                log.warning("sweep skipped billing event %s (%s): unreadable", event.id, event.type)
                continue
            activity.heartbeat(event.id)
            try:
                delivery = await deliver_billing_event(
                    self._temporal_async,
                    self.store,
                    event,
                    invoice,
                    kind=kind,
                    signal_timeout=SIGNAL_TIMEOUT_S,
                )
            except SignalRefused as exc:
                # Visible in the Web UI at once; the next sweep tries again from the checkpoint.
                raise ApplicationError(
                    f"Temporal refused the {kind} signal of {event.id}: {exc}",
                    type="SignalRefused",
                    non_retryable=True,
                ) from exc
            except DeliveryFailed as exc:
                raise ApplicationError(
                    f"could not deliver {event.id} now: {exc}", type=type(exc).__name__
                ) from exc
            if delivery.duplicate or delivery.outcome == RUN_CLOSED:
                already += 1
            elif delivery.outcome == "signalled" and delivery.workflow_id:
                signalled.append(delivery.workflow_id)
                log.info("sweep delivered %s (%s) to %s", event.id, kind, delivery.workflow_id)
            else:
                unknown += 1
        checkpoint = None
        if events:
            newest = datetime.fromtimestamp(max(e.created for e in events), since.tzinfo)
            checkpoint = await self.store.advance_sweep_checkpoint(BILLING_CHECKPOINT, newest)
        return SweepResult(
            sweep=request.sweep,
            found=len(events),
            delivered=signalled[:MAX_LISTED],
            delivered_count=len(signalled),
            already_handled=already,
            unknown=unknown,
            skipped=skipped,
            checkpoint=checkpoint,
        )
