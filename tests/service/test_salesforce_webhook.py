"""`POST /webhooks/salesforce` in-process, against the session's Temporal dev server and a
real SQLite store: what starts a run, what starts nothing, and what the sender is told."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings
from tests.fixtures.ports import free_port
from tests.fixtures.service import running_service
from workflows import search_attributes as attrs

URL = "/webhooks/salesforce"
VISIBILITY_WAIT_S = 5.0


def new_opportunity_id() -> str:
    return "006" + uuid.uuid4().hex[:15].upper()


def closed_won(opportunity_id: str, **changes: Any) -> dict[str, Any]:
    """An event as the stand-in's org posts it (see `standins.salesforce`)."""
    event: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "eventType": "opportunity.closed_won",
        "occurredAt": "2025-01-31T12:00:00.123456Z",
        "organizationId": "00D000000000001AAA",
        "sobject": {
            "Id": opportunity_id,
            "Name": "Globex rollout",
            "AccountId": "001000000000001AAA",
            "StageName": "Closed Won",
            "Amount": 19675.99,
            "CurrencyIsoCode": "EUR",
            "CloseDate": "2025-06-30",
            "LastModifiedDate": "2025-01-31T12:00:00.000+0000",
        },
    }
    event.update(changes)
    return event


def signed(body: bytes, secret: str, *, at: float | None = None) -> dict[str, str]:
    timestamp = int(at if at is not None else time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Salesforce-Signature": f"t={timestamp},v1={digest.hexdigest()}",
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


async def deliver(
    http: httpx.AsyncClient, event: dict[str, Any], secret: str, **kw: Any
) -> httpx.Response:
    body = encode(event)
    return await http.post(URL, content=body, headers=signed(body, secret, **kw))


async def runs_of(client: Client, workflow_id: str, expected: int) -> int:
    """How many runs visibility lists for `workflow_id`, waiting briefly for `expected`."""
    deadline = time.monotonic() + VISIBILITY_WAIT_S
    while True:
        found = [w async for w in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
        if len(found) == expected or time.monotonic() > deadline:
            return len(found)
        await asyncio.sleep(0.1)


async def runs_on(client: Client, task_queue: str) -> int:
    return len([w async for w in client.list_workflows(f'TaskQueue = "{task_queue}"')])


async def assert_never_started(client: Client, workflow_id: str) -> None:
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(workflow_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


def expected_id(opportunity_id: str) -> str:
    return f"opportunity-to-project:salesforce:{opportunity_id}"


async def test_closed_won_starts_one_run_with_the_business_key(
    service: httpx.AsyncClient,
    service_settings: Settings,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    workflow_id = expected_id(opp)
    started_runs.append(workflow_id)
    event = closed_won(opp)

    began = time.perf_counter()
    answer = await deliver(service, event, webhook_secret)
    elapsed = time.perf_counter() - began

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["workflow_id"] == workflow_id
    assert body["duplicate"] is False
    assert body["run_url"] == service_settings.run_link(workflow_id)
    assert answer.headers["location"] == body["run_url"]
    # It only starts the run: the sender is answered long before any of the work is done.
    assert elapsed < 2.0

    handle = temporal_client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    assert description.run_id == body["run_id"]
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.workflow_type == "OpportunityToProjectWorkflow"
    assert description.task_queue == task_queue
    found = description.typed_search_attributes
    assert found.get(attrs.CORRELATION_ID) == opp
    assert found.get(attrs.LIFECYCLE) == "opportunity-to-project"
    assert found.get(attrs.STEP) == "fetch_deal"

    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert json.loads(payload.data) == {
        "opportunity_id": opp,
        "crm": "salesforce",
        "trigger": f"salesforce-event:{event['eventId']}",
    }
    assert await runs_of(temporal_client, workflow_id, 1) == 1


async def test_a_redelivery_starts_nothing_even_after_the_run_ended(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    workflow_id = expected_id(opp)
    started_runs.append(workflow_id)
    event = closed_won(opp)

    first = (await deliver(service, event, webhook_secret)).json()
    again = await deliver(service, event, webhook_secret)
    assert again.status_code == 202
    assert again.json() == {**first, "duplicate": True}
    assert await runs_of(temporal_client, workflow_id, 1) == 1

    # The run is over; a late replay of the same event must not start the deal again.
    await temporal_client.get_workflow_handle(workflow_id).terminate(reason="test: run over")
    late = await deliver(service, event, webhook_secret)
    assert late.status_code == 202
    assert late.json() == {**first, "duplicate": True}
    assert await runs_of(temporal_client, workflow_id, 1) == 1

    # The deal won again later is a new event: a new run under the same business key.
    later = closed_won(opp)
    later["sobject"]["LastModifiedDate"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    rewon = await deliver(service, later, webhook_secret)
    assert rewon.status_code == 202
    assert rewon.json()["workflow_id"] == workflow_id
    assert rewon.json()["run_id"] != first["run_id"]
    assert rewon.json()["duplicate"] is False
    assert await runs_of(temporal_client, workflow_id, 2) == 2


async def test_an_event_older_than_the_deals_run_lands_on_that_run(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    """A Closed Won event delivered late (its webhook was lost, then replayed), after the
    deal's run started (by the CRM sweep, by hand): the run has read that change already."""
    opp = new_opportunity_id()
    workflow_id = expected_id(opp)
    started_runs.append(workflow_id)
    first = (await deliver(service, closed_won(opp), webhook_secret)).json()
    await temporal_client.get_workflow_handle(workflow_id).terminate(reason="test: run over")

    # Another event id for the same change: not a duplicate by id, yet the same Closed Won.
    late = await deliver(service, closed_won(opp), webhook_secret)

    assert late.status_code == 202
    assert (late.json()["workflow_id"], late.json()["run_id"]) == (workflow_id, first["run_id"])
    assert await runs_of(temporal_client, workflow_id, 1) == 1


async def test_ten_concurrent_deliveries_of_one_event_make_one_run(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    workflow_id = expected_id(opp)
    started_runs.append(workflow_id)
    event = closed_won(opp)

    answers = await asyncio.gather(*(deliver(service, event, webhook_secret) for _ in range(10)))

    assert [a.status_code for a in answers] == [202] * 10
    bodies = [a.json() for a in answers]
    assert {b["workflow_id"] for b in bodies} == {workflow_id}
    assert len({b["run_id"] for b in bodies}) == 1
    assert sum(not b["duplicate"] for b in bodies) == 1
    assert await runs_of(temporal_client, workflow_id, 1) == 1
    description = await temporal_client.get_workflow_handle(workflow_id).describe()
    assert description.run_id == bodies[0]["run_id"]


async def test_a_bad_signature_is_refused_and_starts_nothing(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    started_runs.append(expected_id(opp))
    body = encode(closed_won(opp))

    other_secret = await service.post(URL, content=body, headers=signed(body, "not-the-secret"))
    tampered = await service.post(
        URL, content=body.replace(b"19675.99", b"1.00"), headers=signed(body, webhook_secret)
    )
    unsigned = await service.post(URL, content=body, headers={"Content-Type": "application/json"})

    for answer in (other_secret, tampered, unsigned):
        assert answer.status_code == 401, answer.text
        assert set(answer.json()) == {"error"}
        assert webhook_secret not in answer.text
    assert "signature does not match" in other_secret.json()["error"]
    assert "missing X-Salesforce-Signature" in unsigned.json()["error"]
    await assert_never_started(temporal_client, expected_id(opp))
    assert await runs_on(temporal_client, task_queue) == 0


async def test_a_stale_signature_is_refused(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    started_runs.append(expected_id(opp))

    replayed = await deliver(service, closed_won(opp), webhook_secret, at=time.time() - 6 * 60)

    assert replayed.status_code == 401
    assert replayed.json()["error"].startswith("stale signature")
    await assert_never_started(temporal_client, expected_id(opp))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e["sobject"].pop("Id"), "sobject.Id"),
        (lambda e: e["sobject"].update(Id="006'OR'1'='1'--AAA"), "sobject.Id"),
        (lambda e: e["sobject"].pop("CloseDate"), "sobject.CloseDate"),
        (lambda e: e.pop("eventId"), "eventId"),
        (lambda e: e.update(occurredAt="yesterday"), "occurredAt"),
    ],
)
async def test_an_invalid_event_is_refused_naming_the_field(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    change: Any,
    field: str,
) -> None:
    opp = new_opportunity_id()
    event = closed_won(opp)
    change(event)

    answer = await deliver(service, event, webhook_secret)

    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert field.rsplit(".", 1)[-1] in answer.json()["error"]
    await assert_never_started(temporal_client, expected_id(opp))
    assert await runs_on(temporal_client, task_queue) == 0


async def test_a_body_that_is_not_json_is_refused(
    service: httpx.AsyncClient, webhook_secret: str
) -> None:
    body = b"<sObject>Closed Won</sObject>"
    answer = await service.post(URL, content=body, headers=signed(body, webhook_secret))
    assert answer.status_code == 400
    assert "not JSON" in answer.json()["error"]


async def test_events_that_are_not_a_closed_won_are_ignored(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
) -> None:
    lost = closed_won(new_opportunity_id(), eventType="opportunity.closed_lost")
    not_won = closed_won(new_opportunity_id())
    not_won["sobject"]["StageName"] = "Negotiation/Review"

    for event in (lost, not_won):
        answer = await deliver(service, event, webhook_secret)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"ignored"}
        await assert_never_started(temporal_client, expected_id(event["sobject"]["Id"]))
    assert "opportunity.closed_lost" in (await deliver(service, lost, webhook_secret)).text
    assert await runs_on(temporal_client, task_queue) == 0


async def test_temporal_down_answers_503_and_the_retry_starts_the_run(
    service_settings: Settings,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    opp = new_opportunity_id()
    workflow_id = expected_id(opp)
    started_runs.append(workflow_id)
    event = closed_won(opp)
    nowhere = service_settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})

    async with running_service(nowhere) as down:
        answer = await deliver(down, event, webhook_secret)
        health = await down.get("/health")

    assert answer.status_code == 503
    assert answer.headers["retry-after"].isdigit()
    assert "Temporal unavailable" in answer.json()["error"]
    assert health.status_code == 503
    assert health.json()["checks"]["store"] == "ok"
    await assert_never_started(temporal_client, workflow_id)

    # The sender retries once Temporal is back: the event was not recorded, so it starts now.
    async with running_service(service_settings) as up:
        retried = await deliver(up, event, webhook_secret)
        assert (await up.get("/health")).json() == {
            "status": "ok",
            "checks": {"store": "ok", "temporal": "ok"},
        }
    assert retried.status_code == 202
    assert retried.json()["duplicate"] is False
    assert await runs_of(temporal_client, workflow_id, 1) == 1


async def test_without_a_configured_secret_nothing_is_accepted(
    service_settings: Settings, temporal_client: Client, task_queue: str
) -> None:
    unset = service_settings.model_copy(update={"salesforce_webhook_secret": SecretStr("")})
    async with running_service(unset) as http:
        answer = await deliver(http, closed_won(new_opportunity_id()), "")
    assert answer.status_code == 503
    assert answer.json() == {"error": "webhook secret not configured"}
    assert await runs_on(temporal_client, task_queue) == 0
