"""The PSA's milestone-completed event starts (or finds) the invoice run of its period."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus

from connectors.signing import sign
from settings import Settings
from tests.fixtures.service import running_service

SECRET = "psa-test-secret"


@pytest.fixture
async def psa_service(service_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = service_settings.model_copy(update={"psa_webhook_secret": SecretStr(SECRET)})
    async with running_service(settings) as http:
        yield http


def event(project: str, *, completed_on: str = "2026-10-30", **extra: str) -> bytes:
    body = {
        "eventId": f"evt-{uuid.uuid4()}",
        "projectId": project,
        "milestoneId": "m-design-signoff",
        "completedOn": completed_on,
        **extra,
    }
    return json.dumps(body).encode()


async def post(
    http: httpx.AsyncClient, body: bytes, signature: str | None = None
) -> httpx.Response:
    return await http.post(
        "/events/psa/milestone-completed",
        content=body,
        headers={
            "content-type": "application/json",
            "x-q2c-signature": signature if signature is not None else sign(body, SECRET),
        },
    )


async def test_milestone_starts_the_invoice_run_of_its_period_once(
    psa_service: httpx.AsyncClient, temporal_client: Client, started_runs: list[str]
) -> None:
    project = str(uuid.uuid4().int % 10**9)
    body = event(project)
    answers = await asyncio.gather(*(post(psa_service, body) for _ in range(5)))
    expected = f"time-to-invoice:{project}:2026-10"
    started_runs.append(expected)
    assert {a.status_code for a in answers} == {202}
    assert {a.json()["workflow_id"] for a in answers} == {expected}
    assert len({a.json()["run_id"] for a in answers}) == 1
    description = await temporal_client.get_workflow_handle(expected).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    again = await post(psa_service, body)
    assert again.status_code == 202 and again.json()["duplicate"] is True


async def test_bad_or_stale_signature_is_refused(psa_service: httpx.AsyncClient) -> None:
    body = event("17")
    forged = await post(psa_service, body, signature=sign(body, "not-the-secret"))
    assert forged.status_code == 401 and "signature" in forged.json()["error"]
    stale = await post(psa_service, body, signature=sign(body, SECRET, at=time.time() - 3600))
    assert stale.status_code == 401 and "stale" in stale.json()["error"]


async def test_a_bad_body_names_the_field(psa_service: httpx.AsyncClient) -> None:
    answer = await post(psa_service, event("not-a-project-id"))
    assert answer.status_code == 400 and answer.json()["field"] == "projectId"
    answer = await post(psa_service, event("17", completed_on="yesterday"))
    assert answer.status_code == 400 and answer.json()["field"] == "completedOn"
