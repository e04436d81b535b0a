"""Over real HTTP: a deal won, or a change order approved, in the Salesforce stand-in starts
its run through the service.

Both run as processes (fixture `service_with_salesforce`); the stand-in signs and posts its
Closed Won and change-order webhooks to the service, which starts the run on the session's
Temporal dev server.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from devstack.salesforce_seed import approve_change_order, seed_change_order, seed_deal
from tests.fixtures.deals import change_order, mixed_deal
from tests.service.conftest import ServiceWithSalesforce
from workflows import search_attributes as attrs

DELIVERY_WAIT_S = 15.0


async def won_deal(stack: ServiceWithSalesforce, started_runs: list[str]) -> str:
    """An account and an opportunity in negotiation, then moved to Closed Won (a PATCH)."""
    tag = uuid.uuid4().hex[:8]
    async with stack.salesforce() as sf:
        account = await sf.create("Account", {"Name": f"Initech {tag}", "CurrencyIsoCode": "EUR"})
        opp = await sf.create(
            "Opportunity",
            {
                "Name": f"Initech rollout {tag}",
                "AccountId": account,
                "StageName": "Negotiation/Review",
                "CloseDate": "2025-06-30",
                "CurrencyIsoCode": "EUR",
            },
        )
        started_runs.append(f"opportunity-to-project:salesforce:{opp}")
        await sf.update("Opportunity", opp, {"StageName": "Closed Won"})
    return opp


async def approved_change_order(stack: ServiceWithSalesforce, started_runs: list[str]) -> str:
    """An open deal with a Draft change order, which is then approved (a PATCH)."""
    async with stack.salesforce() as sf:
        deal = await seed_deal(sf, mixed_deal())
        seeded = await seed_change_order(sf, deal, change_order())
        started_runs.append(f"change-order:salesforce:{seeded.change_order_id}")
        await approve_change_order(sf, seeded.change_order_id)
    return seeded.change_order_id


async def wait_for_run(client: Client, workflow_id: str) -> WorkflowExecutionDescription:
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while True:
        try:
            return await client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def wait_for_log(stack: ServiceWithSalesforce, needle: str, count: int) -> list[str]:
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while True:
        lines = stack.log_lines(needle)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def test_a_deal_won_in_salesforce_starts_its_run(
    service_with_salesforce: ServiceWithSalesforce,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    stack = service_with_salesforce
    opp = await won_deal(stack, started_runs)
    workflow_id = f"opportunity-to-project:salesforce:{opp}"

    description = await wait_for_run(temporal_client, workflow_id)

    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.workflow_type == "OpportunityToProjectWorkflow"
    assert description.task_queue == stack.task_queue
    assert description.typed_search_attributes.get(attrs.CORRELATION_ID) == opp
    [accepted] = await wait_for_log(stack, f"correlation_id={opp} outcome=started", 1)
    assert "status=202" in accepted and f"run_id={description.run_id}" in accepted


async def test_a_replayed_webhook_starts_nothing_new(
    service_with_salesforce: ServiceWithSalesforce,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    stack = service_with_salesforce
    opp = await won_deal(stack, started_runs)
    workflow_id = f"opportunity-to-project:salesforce:{opp}"
    first = await wait_for_run(temporal_client, workflow_id)

    event = stack.replay_webhook(opp)
    stack.replay_webhook(opp)

    duplicates = await wait_for_log(stack, f"event_id={event['eventId']}", 3)
    assert [("outcome=duplicate" in line, "status=202" in line) for line in duplicates[1:]] == [
        (True, True),
        (True, True),
    ]
    runs = [w async for w in temporal_client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    assert [run.run_id for run in runs] == [first.run_id]
    # The log keeps the correlation id but never the secret or the signature.
    log = stack.service_log.read_text()
    assert stack.webhook_secret not in log and "v1=" not in log


async def test_a_change_order_approved_in_salesforce_starts_its_run(
    service_with_salesforce: ServiceWithSalesforce,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    stack = service_with_salesforce
    co = await approved_change_order(stack, started_runs)
    workflow_id = f"change-order:salesforce:{co}"

    description = await wait_for_run(temporal_client, workflow_id)

    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.workflow_type == "ChangeOrderWorkflow"
    assert description.task_queue == stack.task_queue
    assert description.typed_search_attributes.get(attrs.CORRELATION_ID) == co
    [accepted] = await wait_for_log(stack, f"correlation_id={co} outcome=started", 1)
    assert "status=202" in accepted and f"run_id={description.run_id}" in accepted

    # The stand-in replays the change order's last event: the same event id, nothing new.
    event = stack.replay_webhook(co)
    duplicates = await wait_for_log(stack, f"event_id={event['eventId']}", 2)
    assert ["outcome=duplicate" in line and "status=202" in line for line in duplicates] == [
        False,
        True,
    ]
    runs = [w async for w in temporal_client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    assert [run.run_id for run in runs] == [description.run_id]
