"""The composition root: settings -> store and connectors -> activities -> one worker.

Run it with `q2c worker` (or `python -m worker`). SIGTERM or Ctrl-C drains: running
activities get `graceful_shutdown_timeout` to finish before the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.billing import BillingActivities
from activities.correlation import CorrelationInterceptor, CorrelationLogFilter
from activities.crm import CrmActivities
from activities.deal import DealActivities
from activities.erp import ErpActivities
from activities.invoicing import InvoicingActivities
from activities.ledger import LedgerActivities
from activities.psa import PsaActivities
from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from settings import Settings, load_settings
from settings.rules import load_deal_rules, load_tax_rates
from store import Store
from workflows.client import connect
from workflows.invoice_cycle import InvoiceCycleWorkflow
from workflows.opportunity_to_project import OpportunityToProjectWorkflow
from workflows.starters import ensure_billing_schedules
from workflows.time_to_invoice import TimeToInvoiceWorkflow

log = logging.getLogger("q2c.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=10)
WORKFLOWS: Sequence[type] = (
    OpportunityToProjectWorkflow,
    TimeToInvoiceWorkflow,
    InvoiceCycleWorkflow,
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


def activities_for(
    settings: Settings, adapters: Adapters, store: Store
) -> list[Callable[..., Any]]:
    rules = load_deal_rules(settings)
    crm = CrmActivities(adapters.crms, run_link=settings.run_link("{workflow_id}"))
    deal = DealActivities(rules)
    erp = ErpActivities(adapters.erp, store)
    psa = PsaActivities(adapters.psa, store)
    billing = BillingActivities(adapters.billing, store)
    ledger = LedgerActivities(store)
    invoicing = InvoicingActivities(
        psa=adapters.psa,
        erp=adapters.erp,
        crms=adapters.crms,
        rules=rules,
        tax_rates=load_tax_rates(settings),
        store=store,
    )
    return [
        invoicing.load_billing_contract,
        invoicing.list_invoiceable_projects,
        invoicing.draft_invoice,
        invoicing.adjust_draft,
        invoicing.set_draft_status,
        billing.create_billing_invoice,
        billing.finalize_billing_invoice,
        billing.void_billing_invoice,
        erp.post_erp_invoice,
        erp.discard_erp_draft,
        erp.credit_erp_invoice,
        erp.record_erp_payment,
        psa.mark_time_billed,
        psa.unmark_time_billed,
        crm.write_invoice_status,
        crm.fetch_deal,
        crm.write_back_deal,
        deal.deal_policy,
        deal.plan_deal,
        erp.upsert_customer,
        psa.create_project,
        psa.close_project,
        billing.provision_billing_customer,
        billing.deactivate_billing_customer,
        ledger.record_audit,
        ledger.record_exception,
        ledger.resolve_exception,
        ledger.link_reference,
    ]


def build_worker(
    client: Client, settings: Settings, activities: Sequence[Callable[..., Any]]
) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=list(activities),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        interceptors=[CorrelationInterceptor()],
        identity=f"q2c-worker@{socket.gethostname()}:{os.getpid()}",
    )


async def run(settings: Settings) -> None:
    store = Store.from_url(settings.store_url)
    await store.migrate()
    client = await connect(settings)
    schedules = await ensure_billing_schedules(client, settings)
    log.info("billing schedules in place: %s", ", ".join(schedules))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_adapters(settings) as adapters:
        worker = build_worker(client, settings, activities_for(settings, adapters, store))
        log.info(
            "worker polling task queue %s on %s", settings.task_queue, settings.temporal_target
        )
        async with worker:
            await stop.wait()
            log.info("shutting down: draining running activities")
    await store.close()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(CorrelationLogFilter())
    asyncio.run(run(load_settings()))


if __name__ == "__main__":
    main()
