"""The composition root: settings -> store and connectors -> activities -> workers.

One process serves the workflows' task queue (`q2c`) and each system's queue (`q2c-tryton`,
`q2c-stripe`, `q2c-salesforce`), one `Worker` per queue; `activities_by_queue` says which
activity runs where. Run it with `q2c worker [--queues ...]` (or `python -m worker`). SIGTERM
or Ctrl-C drains: running activities get `graceful_shutdown_timeout` to finish before the
process exits. The store must be migrated first (`q2c store migrate`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.billing import BillingActivities
from activities.change_orders import ChangeOrderActivities, ChangeOrderRunActivities
from activities.contracts import ContractActivities
from activities.correlation import CorrelationInterceptor, CorrelationLogFilter
from activities.crm import CrmActivities
from activities.deal import DealActivities
from activities.erp import ErpActivities
from activities.heartbeat import HeartbeatInterceptor
from activities.invoicing import InvoicingActivities
from activities.ledger import LedgerActivities
from activities.psa import PsaActivities
from activities.sweeps import SweepActivities
from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from settings import Settings, load_settings
from settings.rules import load_deal_rules, load_tax_rates
from store import Store, StoreNotMigrated
from workflows.change_order import ChangeOrderQueueWorkflow, ChangeOrderWorkflow
from workflows.client import connect
from workflows.invoice_cycle import InvoiceCycleWorkflow
from workflows.opportunity_to_project import OpportunityToProjectWorkflow
from workflows.queues import SystemQueue, activity_queue, all_queues
from workflows.starters import ensure_billing_schedules, ensure_sweep_schedules
from workflows.sweeps import BillingSweepWorkflow, CrmSweepWorkflow
from workflows.time_to_invoice import TimeToInvoiceWorkflow

log = logging.getLogger("q2c.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=10)
WORKFLOWS: Sequence[type] = (
    OpportunityToProjectWorkflow,
    TimeToInvoiceWorkflow,
    InvoiceCycleWorkflow,
    CrmSweepWorkflow,
    BillingSweepWorkflow,
    ChangeOrderWorkflow,
    ChangeOrderQueueWorkflow,
)


@dataclass(frozen=True)
class Adapters:
    """One adapter per role, as this deployment's settings pick them."""

    crms: dict[str, SalesforceClient]
    erp: TrytonErp
    psa: TrytonPsa
    billing: StripeBilling


@asynccontextmanager
async def open_adapters(settings: Settings) -> AsyncIterator[Adapters]:
    async with AsyncExitStack() as stack:
        salesforce = await stack.enter_async_context(
            SalesforceClient(
                settings.salesforce_base_url,
                settings.salesforce_client_id,
                settings.salesforce_client_secret,
                api_version=settings.salesforce_api_version,
            )
        )
        tryton = await stack.enter_async_context(
            TrytonClient(
                settings.tryton_base_url,
                settings.tryton_database,
                settings.tryton_user,
                settings.tryton_password,
            )
        )
        stripe = await stack.enter_async_context(
            StripeBilling(
                settings.stripe_api_key.get_secret_value(), base_url=settings.stripe_base_url
            )
        )
        yield Adapters(
            crms={"salesforce": salesforce},
            erp=TrytonErp(tryton),
            psa=TrytonPsa(tryton),
            billing=stripe,
        )


@dataclass(frozen=True)
class Activities:
    """One instance per role class, holding this deployment's adapters and store."""

    crm: CrmActivities
    deal: DealActivities
    erp: ErpActivities
    psa: PsaActivities
    billing: BillingActivities
    ledger: LedgerActivities
    contracts: ContractActivities
    invoicing: InvoicingActivities
    sweeps: SweepActivities
    change_orders: ChangeOrderActivities
    change_order_runs: ChangeOrderRunActivities


def activities_for(settings: Settings, adapters: Adapters, store: Store) -> Activities:
    rules = load_deal_rules(settings)
    invoicing = InvoicingActivities(
        psa=adapters.psa,
        erp=adapters.erp,
        crms=adapters.crms,
        rules=rules,
        tax_rates=load_tax_rates(settings),
        store=store,
    )
    return Activities(
        crm=CrmActivities(adapters.crms, run_link=settings.run_link("{workflow_id}")),
        deal=DealActivities(rules),
        erp=ErpActivities(adapters.erp, store),
        psa=PsaActivities(adapters.psa, store),
        billing=BillingActivities(adapters.billing, store),
        ledger=LedgerActivities(store),
        contracts=ContractActivities(store),
        invoicing=invoicing,
        sweeps=SweepActivities(settings, adapters.crms, adapters.billing, store),
        change_orders=ChangeOrderActivities(
            psa=adapters.psa,
            billing=adapters.billing,
            erp=adapters.erp,
            invoicing=invoicing,
            rules=rules,
            budget_threshold=settings.change_order_budget_threshold,
            store=store,
        ),
        change_order_runs=ChangeOrderRunActivities(settings.task_queue),
    )


def defined_activities(role: object) -> list[Callable[..., Any]]:
    """Every `@activity.defn` method of a role's instance, bound to it."""
    methods = (getattr(role, name) for name in dir(type(role)) if not name.startswith("_"))
    return [m for m in methods if activity._Definition.from_callable(m) is not None]


def activities_by_queue(task_queue: str, a: Activities) -> dict[str, list[Callable[..., Any]]]:
    """Which task queue serves which activity: the one place that says so.

    An activity that calls a system runs on that system's queue, whose worker carries the
    system's limits. What needs no system (audit, cross-references, deal rules, adjusting a
    stored draft) runs beside the workflows, where the workflows call it as a local activity.
    """
    invoicing = a.invoicing
    return {
        task_queue: [
            *defined_activities(a.ledger),
            *defined_activities(a.contracts),
            *defined_activities(a.deal),
            invoicing.adjust_draft,
            invoicing.set_draft_status,
            a.change_orders.change_rules,
            a.change_orders.remove_contract_version,
            a.change_orders.record_correction,
            # Change-order runs join their deal's queue with the worker's Temporal client.
            *defined_activities(a.change_order_runs),
            # Sweeps start and signal runs with the worker's Temporal client.
            *defined_activities(a.sweeps),
        ],
        activity_queue(task_queue, SystemQueue.TRYTON): [
            *defined_activities(a.erp),
            *defined_activities(a.psa),
            invoicing.load_billing_contract,
            invoicing.list_invoiceable_projects,
            invoicing.draft_invoice,
            a.change_orders.preview_change_order,
            a.change_orders.apply_psa_terms,
            a.change_orders.restore_psa_terms,
            a.change_orders.correct_erp_invoice,
        ],
        activity_queue(task_queue, SystemQueue.STRIPE): [
            *defined_activities(a.billing),
            a.change_orders.update_billing_plan,
            a.change_orders.restore_billing_plan,
            a.change_orders.correct_billing_invoice,
            a.change_orders.void_billing_correction,
        ],
        activity_queue(task_queue, SystemQueue.SALESFORCE): defined_activities(a.crm),
    }


@dataclass(frozen=True)
class QueueLimits:
    """A system's limits, as its queue's worker options."""

    max_concurrent_activities: int | None
    #: For the whole queue, across every worker (Temporal's server enforces it).
    max_task_queue_activities_per_second: float | None


#: Concurrent Tryton calls per worker when the settings leave it open.
TRYTON_CONCURRENCY_SQLITE = 1  # SQLite has one writer: more only wait for its lock
TRYTON_CONCURRENCY_POSTGRESQL = 8


def queue_limits(settings: Settings) -> dict[str, QueueLimits]:
    """Each system queue's limits from settings; the workflows' queue has the SDK defaults."""
    uri = settings.tryton_database_uri
    on_sqlite = not uri or uri.startswith("sqlite")
    tryton_default = TRYTON_CONCURRENCY_SQLITE if on_sqlite else TRYTON_CONCURRENCY_POSTGRESQL
    queue = settings.task_queue
    return {
        activity_queue(queue, SystemQueue.TRYTON): QueueLimits(
            settings.tryton_max_concurrent_activities or tryton_default,
            settings.tryton_activities_per_second,
        ),
        activity_queue(queue, SystemQueue.STRIPE): QueueLimits(
            settings.stripe_max_concurrent_activities, settings.stripe_activities_per_second
        ),
        activity_queue(queue, SystemQueue.SALESFORCE): QueueLimits(
            settings.salesforce_max_concurrent_activities,
            settings.salesforce_activities_per_second,
        ),
    }


class UnknownQueue(ValueError):
    """A task queue this deployment does not serve."""


def select_queues(settings: Settings, names: Iterable[str] | None) -> list[str]:
    """The queues to serve: all of them, or those named (each checked, none twice)."""
    served = all_queues(settings.task_queue)
    if names is None:
        return served
    chosen = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    unknown = [name for name in chosen if name not in served]
    if unknown:
        raise UnknownQueue(
            f"unknown task queue {', '.join(map(repr, unknown))}: "
            f"this deployment serves {', '.join(served)}"
        )
    if not chosen:
        raise UnknownQueue(f"no task queue named: this deployment serves {', '.join(served)}")
    return chosen


def build_workers(
    client: Client,
    settings: Settings,
    activities: Activities,
    queues: Iterable[str] | None = None,
) -> list[Worker]:
    """One worker per queue served (all by default): the workflows' queue runs the workflows
    and their local activities, each system's queue that system's activities, within its
    limits."""
    served = activities_by_queue(settings.task_queue, activities)
    limits = queue_limits(settings)
    identity = f"q2c-worker@{socket.gethostname()}:{os.getpid()}"
    workers = []
    for queue in select_queues(settings, queues):
        limit = limits.get(queue, QueueLimits(None, None))
        workers.append(
            Worker(
                client,
                task_queue=queue,
                workflows=list(WORKFLOWS) if queue == settings.task_queue else [],
                activities=served[queue],
                max_concurrent_activities=limit.max_concurrent_activities,
                max_task_queue_activities_per_second=limit.max_task_queue_activities_per_second,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                interceptors=[CorrelationInterceptor(), HeartbeatInterceptor()],
                identity=identity,
            )
        )
    return workers


async def serve(workers: Sequence[Worker], stop: asyncio.Event) -> None:
    """Run the workers until `stop` is set or one of them fails; then drain them together,
    so a shutdown takes one `graceful_shutdown_timeout`, not one per queue."""
    running: asyncio.Future[Any] = asyncio.gather(*(w.run() for w in workers))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        log.info("shutting down: draining running activities")
        await asyncio.gather(*(w.shutdown() for w in workers))
    await running  # a worker's fatal error, if that is what ended the wait


async def run(settings: Settings, queues: Iterable[str] | None = None) -> None:
    chosen = select_queues(settings, queues)
    store = Store.from_url(settings.store_url)
    try:
        await store.require_migrated()
        client = await connect(settings)
        schedules = await ensure_billing_schedules(client, settings)
        log.info("billing schedules in place: %s", ", ".join(schedules))
        sweeps = await ensure_sweep_schedules(client, settings)
        log.info("sweep schedules in place: %s", ", ".join(sweeps))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_adapters(settings) as adapters:
            workers = build_workers(
                client, settings, activities_for(settings, adapters, store), chosen
            )
            log.info(
                "worker polling task queues %s on %s", ", ".join(chosen), settings.temporal_target
            )
            await serve(workers, stop)
    finally:
        await store.close()


def main(queues: Iterable[str] | None = None) -> None:
    """Serve every queue of the deployment, or those named; Ctrl-C or SIGTERM drains."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(CorrelationLogFilter())
    asyncio.run(run(load_settings(), queues))


if __name__ == "__main__":
    try:
        main()
    except (StoreNotMigrated, UnknownQueue) as exc:
        raise SystemExit(f"error: {exc}") from None
