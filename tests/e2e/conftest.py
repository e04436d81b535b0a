"""End to end: the real worker code on the real dev server, real Tryton, the stand-ins.

e2e_settings   settings pointing q2c at the session's Temporal, Tryton and stand-ins,
               with its own store and task queue
e2e_store      that store, migrated
e2e_worker     the session's workers, one per task queue (the workflows' and each system's),
               built by `worker.py` exactly as in production
crm            a Salesforce client on the stand-in, for seeding deals
downstream     read-only views on what Tryton and Stripe hold
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from canonical import customer_id_for
from connectors.salesforce import SalesforceClient
from connectors.stripe import StripeBilling
from connectors.tryton import TrytonClient, TrytonErp, TrytonPsa
from connectors.tryton.wire import ProjectInfo
from devstack.process import spawn, stop_process_group
from settings import Settings
from store import Store
from tests.fixtures.salesforce import SalesforceStandin
from tests.fixtures.stripe import StripeStandin
from tests.fixtures.tryton import TrytonServer
from worker import activities_for, build_workers, open_adapters

APPROVER = "controller@northwind.example"


@pytest.fixture(scope="session")
def e2e_settings(
    temporal_env: WorkflowEnvironment,
    tryton: TrytonServer,
    salesforce_standin: SalesforceStandin,
    stripe_standin: StripeStandin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    state = tmp_path_factory.mktemp("e2e")
    return Settings(
        state_dir=state,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"e2e-{uuid.uuid4()}",
        tryton_url=tryton.url,
        tryton_database=tryton.database,
        tryton_user=tryton.login,
        tryton_password=SecretStr(tryton.password),
        salesforce_url=salesforce_standin.url,
        salesforce_client_id=salesforce_standin.client_id,
        salesforce_client_secret=SecretStr(salesforce_standin.client_secret),
        salesforce_webhook_secret=SecretStr(salesforce_standin.webhook_secret),
        stripe_url=stripe_standin.url,
        stripe_api_key=SecretStr(stripe_standin.api_key),
        stripe_webhook_secret=SecretStr(stripe_standin.webhook_secret),
        database_url=f"sqlite+aiosqlite:///{Path(state) / 'q2c.sqlite'}",
        finance_approvers=[APPROVER],
    )


@pytest.fixture(scope="session")
async def e2e_store(e2e_settings: Settings) -> AsyncIterator[Store]:
    store = Store.from_url(e2e_settings.store_url)
    await store.migrate()
    yield store
    await store.close()


@asynccontextmanager
async def serving_every_queue(
    client: Client, settings: Settings, store: Store
) -> AsyncIterator[None]:
    """Every worker `worker.py` builds (the workflows' queue and one per system), running."""
    async with open_adapters(settings) as adapters, AsyncExitStack() as running:
        for worker in build_workers(client, settings, activities_for(settings, adapters, store)):
            await running.enter_async_context(worker)
        yield


@pytest.fixture(scope="session")
async def e2e_worker(
    temporal_env: WorkflowEnvironment, e2e_settings: Settings, e2e_store: Store
) -> AsyncIterator[None]:
    async with serving_every_queue(temporal_env.client, e2e_settings, e2e_store):
        yield


@pytest.fixture
async def crm(salesforce_standin: SalesforceStandin) -> AsyncIterator[SalesforceClient]:
    async with salesforce_standin.client() as client:
        yield client


@dataclass
class Downstream:
    """What a person would look at in Tryton and Stripe after a run."""

    tryton: TrytonClient
    stripe: StripeBilling

    async def erp_customers(self, crm_account_id: str) -> list[int]:
        from connectors.tryton import mapping

        ref = mapping.external_ref_code(customer_id_for("salesforce", crm_account_id))
        return await self.tryton.search(
            "party.party", [("identifiers.code", "=", ref)], context={"active_test": False}
        )

    async def projects_for(self, opportunity_id: str) -> list[ProjectInfo]:
        psa = TrytonPsa(self.tryton)
        ids = await self.tryton.search("project.work", [("type", "=", "project")])
        projects = [await psa.get_project(i) for i in ids]
        return [p for p in projects if p.opportunity_id == opportunity_id]

    async def project(self, project_id: str) -> ProjectInfo:
        return await TrytonPsa(self.tryton).get_project(int(project_id))

    async def billing_customers(self, crm_account_id: str) -> list[str]:
        wanted = customer_id_for("salesforce", crm_account_id)
        found, after = [], None
        while True:
            page = await self.stripe.list_customers(starting_after=after)
            found += [c.id for c in page.data if c.metadata.get("q2c_customer_id") == wanted]
            if not page.has_more:
                return found
            after = page.data[-1].id

    @property
    def erp(self) -> TrytonErp:
        return TrytonErp(self.tryton)


@pytest.fixture
async def downstream(
    tryton: TrytonServer, stripe_standin: StripeStandin
) -> AsyncIterator[Downstream]:
    client = await tryton.logged_in_client()
    async with client, StripeBilling(stripe_standin.api_key, base_url=stripe_standin.url) as stripe:
        yield Downstream(tryton=client, stripe=stripe)


def settings_env(settings: Settings) -> dict[str, str]:
    """The `Q2C_` environment that gives another process these same settings."""
    env: dict[str, str] = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = json.dumps(value)
        env[f"Q2C_{name.upper()}"] = str(value)
    return env


class WorkerProcesses:
    """Workers as separate processes (`python -m worker`), as production runs them."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.started)}.log"
        process = spawn([sys.executable, "-m", "worker"], log_path=log, env=self.env)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            stop_process_group(process.pid)
            process.wait(timeout=10)


@pytest.fixture
def workers(e2e_settings: Settings, e2e_store: Store, tmp_path: Path) -> Iterator[WorkerProcesses]:
    # e2e_store: the workers refuse a store `q2c store migrate` has not migrated.
    # Its own task queue: the session's in-process worker must not take this run.
    settings = e2e_settings.model_copy(update={"task_queue": f"workers-{uuid.uuid4()}"})
    env = settings_env(settings) | {"Q2C_TASK_QUEUE": settings.task_queue}
    processes = WorkerProcesses(env, tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()
