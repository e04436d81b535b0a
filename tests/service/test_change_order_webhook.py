"""`POST /webhooks/salesforce` with a change-order approval, in-process, against the session's
Temporal dev server and a real SQLite store: the same intake as a Closed Won (signature,
duplicates, 4xx for bad bodies), starting the change order's run instead.

Hostile bodies (deep nesting, not UTF-8, oversize, type-confused fields) are fed to this
event over a real socket by `test_hostile_input` and `test_fuzz_webhooks` (endpoint
`salesforce-change-order`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from settings import Settings
from tests.fixtures.ports import free_port
from tests.fixtures.service import running_service
from tests.service.test_salesforce_webhook import (
    URL,
    assert_never_started,
    deliver,
    encode,
    runs_of,
    runs_on,
    signed,
)
from workflows import search_attributes as attrs


def new_change_order_id() -> str:
    return "a0C" + uuid.uuid4().hex[:15].upper()


def approved(change_order_id: str, **changes: Any) -> dict[str, Any]:
    """An event as the stand-in's org posts it (see `standins.salesforce`)."""
    event: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "eventType": "change_order.approved",
        "occurredAt": "2026-11-30T10:00:00.123456Z",
        "organizationId": "00D000000000001AAA",
        "sobject": {
            "Id": change_order_id,
            "Name": "CO-001 rate increase and QA",
            "Opportunity__c": "006000000000001AAA",
            "Status__c": "Approved",
            "Amount_Delta__c": 7200,
            "CurrencyIsoCode": "EUR",
            "Effective_Date__c": "2026-12-01",
            "Approved_At__c": "2026-11-30T09:59:58Z",
            "LastModifiedDate": "2026-11-30T09:59:58.000+0000",
        },
    }
    event.update(changes)
    return event


def expected_id(change_order_id: str) -> str:
    return f"change-order:salesforce:{change_order_id}"


async def test_an_approval_starts_the_change_orders_run(
    service: httpx.AsyncClient,
    service_settings: Settings,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
) -> None:
    co = new_change_order_id()
    workflow_id = expected_id(co)
    started_runs.append(workflow_id)
    event = approved(co)

    answer = await deliver(service, event, webhook_secret)

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["workflow_id"] == workflow_id
    assert body["duplicate"] is False
    assert body["run_url"] == service_settings.run_link(workflow_id)
    assert answer.headers["location"] == body["run_url"]

    handle = temporal_client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    assert description.run_id == body["run_id"]
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.workflow_type == "ChangeOrderWorkflow"
    assert description.task_queue == task_queue
    found = description.typed_search_attributes
    assert found.get(attrs.CORRELATION_ID) == co
    assert found.get(attrs.LIFECYCLE) == "change-order"

    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert json.loads(payload.data) == {
        "change_order_id": co,
        "crm": "salesforce",
        "trigger": f"salesforce-event:{event['eventId']}",
    }
    assert await runs_of(temporal_client, workflow_id, 1) == 1


async def test_a_redelivery_starts_nothing_new_and_a_new_approval_a_new_run(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    co = new_change_order_id()
    workflow_id = expected_id(co)
    started_runs.append(workflow_id)
    event = approved(co)

    first = (await deliver(service, event, webhook_secret)).json()
    again = await deliver(service, event, webhook_secret)
    assert again.status_code == 202
    assert again.json() == {**first, "duplicate": True}
    assert await runs_of(temporal_client, workflow_id, 1) == 1

    # The run is over; a late replay of the same event must not apply the change order again.
    await temporal_client.get_workflow_handle(workflow_id).terminate(reason="test: run over")
    late = await deliver(service, event, webhook_secret)
    assert late.status_code == 202
    assert late.json() == {**first, "duplicate": True}
    assert await runs_of(temporal_client, workflow_id, 1) == 1

    # Edited and approved again in the CRM: a new event, a new run under the same id.
    reapproved = await deliver(service, approved(co), webhook_secret)
    assert reapproved.status_code == 202
    assert reapproved.json()["workflow_id"] == workflow_id
    assert reapproved.json()["run_id"] != first["run_id"]
    assert reapproved.json()["duplicate"] is False
    assert await runs_of(temporal_client, workflow_id, 2) == 2


async def test_concurrent_deliveries_of_one_approval_make_one_run(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    co = new_change_order_id()
    workflow_id = expected_id(co)
    started_runs.append(workflow_id)
    event = approved(co)

    answers = await asyncio.gather(*(deliver(service, event, webhook_secret) for _ in range(5)))

    assert [a.status_code for a in answers] == [202] * 5
    bodies = [a.json() for a in answers]
    assert {(b["workflow_id"], b["run_id"]) for b in bodies} == {(workflow_id, bodies[0]["run_id"])}
    assert sum(not b["duplicate"] for b in bodies) == 1
    assert await runs_of(temporal_client, workflow_id, 1) == 1


async def test_a_bad_or_stale_signature_is_refused_and_starts_nothing(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    started_runs: list[str],
) -> None:
    co = new_change_order_id()
    started_runs.append(expected_id(co))
    body = encode(approved(co))

    other_secret = await service.post(URL, content=body, headers=signed(body, "not-the-secret"))
    tampered = await service.post(
        URL, content=body.replace(b"7200", b"72000"), headers=signed(body, webhook_secret)
    )
    unsigned = await service.post(URL, content=body, headers={"Content-Type": "application/json"})
    stale = await service.post(
        URL, content=body, headers=signed(body, webhook_secret, at=time.time() - 6 * 60)
    )

    for answer in (other_secret, tampered, unsigned, stale):
        assert answer.status_code == 401, answer.text
        assert set(answer.json()) == {"error"}
        assert webhook_secret not in answer.text
    assert "signature does not match" in other_secret.json()["error"]
    assert "missing X-Salesforce-Signature" in unsigned.json()["error"]
    assert stale.json()["error"].startswith("stale signature")
    await assert_never_started(temporal_client, expected_id(co))
    assert await runs_on(temporal_client, task_queue) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e["sobject"].pop("Id"), "sobject.Id"),
        # The id becomes part of the workflow id: nothing but 15 or 18 letters and digits.
        (lambda e: e["sobject"].update(Id="a0C:salesforce:X1"), "sobject.Id"),
        (lambda e: e["sobject"].update(Id="a0C'OR'1'='1'--AAA"), "sobject.Id"),
        (lambda e: e["sobject"].update(Id=42), "sobject.Id"),
        (lambda e: e["sobject"].pop("Status__c"), "sobject.Status__c"),
        (lambda e: e["sobject"].update(Name="x" * 81), "sobject.Name"),
        (
            lambda e: e["sobject"].update(Effective_Date__c="next month"),
            "sobject.Effective_Date__c",
        ),
        (lambda e: e.pop("sobject"), "sobject"),
        (lambda e: e.pop("eventId"), "eventId"),
        (lambda e: e.update(eventId="e" * 256), "eventId"),
        (lambda e: e.update(occurredAt="yesterday"), "occurredAt"),
    ],
)
async def test_an_invalid_approval_is_refused_naming_the_field(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
    change: Any,
    field: str,
) -> None:
    co = new_change_order_id()
    event = approved(co)
    change(event)

    answer = await deliver(service, event, webhook_secret)

    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert field.rsplit(".", 1)[-1] in answer.json()["error"]
    await assert_never_started(temporal_client, expected_id(co))
    assert await runs_on(temporal_client, task_queue) == 0


async def test_hostile_bodies_are_4xx_and_start_nothing(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
) -> None:
    valid = encode(approved(new_change_order_id()))
    hostile = {
        "deep nesting": valid[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        "not UTF-8": valid.replace(b"CO-001", b"CO-\xff\xfe", 1),
        "duplicate key": b'{"eventType": "change_order.approved", ' + valid[1:],
    }
    for case, body in hostile.items():
        answer = await service.post(URL, content=body, headers=signed(body, webhook_secret))
        assert answer.status_code == 400, (case, answer.text)
    oversize = valid + b" " * (300 * 1024)
    too_big = await service.post(URL, content=oversize, headers=signed(oversize, webhook_secret))
    assert too_big.status_code == 413, too_big.text
    assert await runs_on(temporal_client, task_queue) == 0


async def test_a_change_order_no_longer_approved_is_ignored(
    service: httpx.AsyncClient,
    webhook_secret: str,
    temporal_client: Client,
    task_queue: str,
) -> None:
    event = approved(new_change_order_id())
    event["sobject"]["Status__c"] = "Draft"

    answer = await deliver(service, event, webhook_secret)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ignored": "status is 'Draft', not 'Approved'"}
    await assert_never_started(temporal_client, expected_id(event["sobject"]["Id"]))
    assert await runs_on(temporal_client, task_queue) == 0


async def test_temporal_down_answers_503_and_the_retry_starts_the_run(
    service_settings: Settings,
    webhook_secret: str,
    temporal_client: Client,
    started_runs: list[str],
) -> None:
    co = new_change_order_id()
    workflow_id = expected_id(co)
    started_runs.append(workflow_id)
    event = approved(co)
    nowhere = service_settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})

    async with running_service(nowhere) as down:
        answer = await deliver(down, event, webhook_secret)

    assert answer.status_code == 503
    assert answer.headers["retry-after"].isdigit()
    assert "Temporal unavailable" in answer.json()["error"]
    await assert_never_started(temporal_client, workflow_id)

    async with running_service(service_settings) as up:
        retried = await deliver(up, event, webhook_secret)
    assert retried.status_code == 202
    assert retried.json()["duplicate"] is False
    assert await runs_of(temporal_client, workflow_id, 1) == 1
