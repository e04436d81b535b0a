"""`worker.py` serves the workflows' task queue and one queue per system, each system's
activities on its own queue with that system's limits (`q2c worker [--queues ...]`)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

import activities
import activities.change_orders
import activities.contracts
from settings import Settings
from store import Store
from worker import (
    Activities,
    UnknownQueue,
    activities_by_queue,
    activities_for,
    build_workers,
    open_adapters,
    queue_limits,
    select_queues,
)

POLLER_WAIT_S = 10.0


@pytest.fixture
async def role_activities(tmp_path: Path) -> AsyncIterator[Activities]:
    """The real activity objects; nothing here calls a system or the store."""
    settings = Settings(state_dir=tmp_path)
    store = Store.from_url(settings.store_url)
    async with open_adapters(settings) as adapters:
        yield activities_for(settings, adapters, store)
    await store.close()


def names(served: Sequence[Callable[..., Any]]) -> set[str]:
    return {fn.__name__ for fn in served}


def every_defined_activity() -> set[str]:
    """Every `@activity.defn` of every role class in `activities/`."""
    found = set()
    for module in (
        activities.billing,
        activities.change_orders,
        activities.contracts,
        activities.crm,
        activities.deal,
        activities.erp,
        activities.invoicing,
        activities.ledger,
        activities.psa,
        activities.sweeps,
    ):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for _, fn in inspect.getmembers(cls, inspect.isfunction):
                if (defn := activity._Definition.from_callable(fn)) and defn.name:
                    found.add(defn.name)
    return found


def test_each_activity_runs_on_exactly_one_queue_and_systems_on_their_own(
    role_activities: Activities,
) -> None:
    served = {q: names(fns) for q, fns in activities_by_queue("q2c", role_activities).items()}

    assert list(served) == ["q2c", "q2c-tryton", "q2c-stripe", "q2c-salesforce"]
    everywhere = [name for queue in served.values() for name in queue]
    assert sorted(everywhere) == sorted(every_defined_activity())  # each once, none forgotten
    assert served["q2c"] == {
        "record_contract",
        "record_audit",
        "record_exception",
        "resolve_exception",
        "link_reference",
        "deal_policy",
        "plan_deal",
        "adjust_draft",
        "set_draft_status",
        "sweep_crm",
        "sweep_billing",
        "change_rules",
        "remove_contract_version",
        "record_correction",
        "enqueue_change_order",
        "start_change_order",
        "run_is_open",
    }
    assert {
        "upsert_customer",
        "create_project",
        "post_erp_invoice",
        "draft_invoice",
        "preview_change_order",
        "apply_psa_terms",
        "correct_erp_invoice",
    } <= served["q2c-tryton"]
    assert {
        "provision_billing_customer",
        "finalize_billing_invoice",
        "update_billing_plan",
        "correct_billing_invoice",
    } <= served["q2c-stripe"]
    assert {"fetch_deal", "write_back_deal", "write_invoice_status"} <= served["q2c-salesforce"]


def test_limits_come_from_settings_and_a_tryton_on_sqlite_gets_one_writer() -> None:
    sqlite = queue_limits(Settings())
    assert sqlite["q2c-tryton"].max_concurrent_activities == 1
    assert sqlite["q2c-stripe"].max_concurrent_activities == 10
    assert sqlite["q2c-stripe"].max_task_queue_activities_per_second == 25.0

    postgres = queue_limits(
        Settings(task_queue="acme", tryton_database_uri="postgresql://postgres@127.0.0.1:5432/")
    )
    assert postgres["acme-tryton"].max_concurrent_activities == 8

    chosen = queue_limits(
        Settings(tryton_max_concurrent_activities=3, salesforce_activities_per_second=20.0)
    )
    assert chosen["q2c-tryton"].max_concurrent_activities == 3
    assert chosen["q2c-salesforce"].max_task_queue_activities_per_second == 20.0


def test_queues_named_are_checked() -> None:
    settings = Settings()
    assert select_queues(settings, None) == ["q2c", "q2c-tryton", "q2c-stripe", "q2c-salesforce"]
    assert select_queues(settings, ["q2c", " q2c-tryton", "q2c"]) == ["q2c", "q2c-tryton"]
    with pytest.raises(UnknownQueue, match=r"unknown task queue 'q2c-hubspot': this deployment"):
        select_queues(settings, ["q2c", "q2c-hubspot"])


async def pollers(client: Client, queue: str) -> list[float]:
    """The activity pollers on `queue`, each with the queue rate it asked the server for."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return [p.rate_per_second for p in response.pollers]


async def wait_for_pollers(client: Client, queue: str) -> list[float]:
    async with asyncio.timeout(POLLER_WAIT_S):
        while True:
            found = await pollers(client, queue)
            if found:
                return found
            await asyncio.sleep(0.1)


async def test_one_process_polls_every_queue_or_only_those_named(
    temporal_client: Client, task_queue: str, role_activities: Activities
) -> None:
    settings = Settings(task_queue=task_queue)
    stripe = f"{task_queue}-stripe"

    async with AsyncExitStack() as running:
        for worker in build_workers(temporal_client, settings, role_activities):
            await running.enter_async_context(worker)
        for queue in (task_queue, f"{task_queue}-tryton", f"{task_queue}-salesforce"):
            assert await wait_for_pollers(temporal_client, queue)
        # Stripe's published rate, asked of the server for the whole queue.
        assert set(await wait_for_pollers(temporal_client, stripe)) == {25.0}

    named = Settings(task_queue=f"{task_queue}-named")
    async with AsyncExitStack() as running:
        workers = build_workers(
            temporal_client, named, role_activities, [f"{named.task_queue}-tryton"]
        )
        for worker in workers:
            await running.enter_async_context(worker)
        assert await wait_for_pollers(temporal_client, f"{named.task_queue}-tryton")
        assert await pollers(temporal_client, named.task_queue) == []
