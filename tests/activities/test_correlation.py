"""Activities run with the run's correlation id: it reaches every outbound request and log."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import httpx
import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.correlation import CorrelationInterceptor, CorrelationLogFilter, correlation_for
from connectors.correlation import HEADER, correlation_id
from connectors.salesforce import SalesforceClient
from connectors.tryton import TrytonClient
from tests.fixtures.stripe import StripeStandin


class Seen(BaseModel):
    correlation: str | None
    salesforce_header: str | None
    tryton_header: str | None
    logged: str | None


class Probe:
    """Calls two connectors over mock transports and remembers what they sent."""

    def __init__(self) -> None:
        self.headers: dict[str, str | None] = {}
        self.records: list[logging.LogRecord] = []

    def transport(self, system: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.headers[system] = request.headers.get(HEADER)
            if system == "salesforce":
                return httpx.Response(
                    200, json={"access_token": "t", "instance_url": "http://sf.test"}
                )
            method = json.loads(request.content)["method"]
            results = {"common.db.login": [1, "session"], "model.res.user.get_preferences": {}}
            return httpx.Response(200, json={"id": 1, "result": results.get(method, "8.2.1")})

        return httpx.MockTransport(handle)

    @activity.defn(name="probe_correlation")
    async def probe(self, _: str) -> Seen:
        salesforce = SalesforceClient(
            "http://sf.test",
            "id",
            "secret",
            transport=self.transport("salesforce"),
        )
        async with salesforce:
            await salesforce._authenticate()
        tryton = TrytonClient(
            "http://tryton.test",
            "q2c",
            "admin",
            "pw",
            transport=self.transport("tryton"),
        )
        async with tryton:
            await tryton.call("common.server.version", [])
        handler = _Collect(self.records)
        handler.addFilter(CorrelationLogFilter())
        logger = logging.getLogger("q2c.test.correlation")
        logger.addHandler(handler)
        try:
            logger.warning("probing")
        finally:
            logger.removeHandler(handler)
        return Seen(
            correlation=correlation_id.get(),
            salesforce_header=self.headers.get("salesforce"),
            tryton_header=self.headers.get("tryton"),
            logged=getattr(self.records[-1], "correlation_id", None),
        )


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@workflow.defn(sandboxed=False)
class CorrelationProbeWorkflow:
    @workflow.run
    async def run(self, _: str) -> Seen:
        seen: Seen = await workflow.execute_activity(
            "probe_correlation",
            "x",
            result_type=Seen,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return seen


@pytest.mark.parametrize(
    ("workflow_id", "expected"),
    [
        ("opportunity-to-project:salesforce:006A0000000001AAA", "006A0000000001AAA"),
        ("time-to-invoice:42:2026-11", "time-to-invoice:42:2026-11"),
    ],
)
async def test_connectors_and_logs_carry_the_runs_correlation_id(
    temporal_client: Client, task_queue: str, workflow_id: str, expected: str
) -> None:
    probe = Probe()
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[CorrelationProbeWorkflow],
        activities=[probe.probe],
        interceptors=[CorrelationInterceptor()],
    ):
        # A unique id per test run: the session's server keeps every run.
        seen: Seen = await temporal_client.execute_workflow(
            CorrelationProbeWorkflow.run,
            "x",
            id=f"{workflow_id}#{task_queue}",
            task_queue=task_queue,
        )
    assert seen.correlation == f"{expected}#{task_queue}"
    assert seen.salesforce_header == seen.correlation
    assert seen.tryton_header == seen.correlation
    assert seen.logged == seen.correlation
    assert correlation_id.get() is None  # nothing leaks out of the activity


def test_correlation_of_a_deal_run_is_its_opportunity() -> None:
    assert correlation_for("opportunity-to-project:salesforce:006X") == "006X"
    assert correlation_for("invoice-cycle-monthly-2026") == "invoice-cycle-monthly-2026"


async def test_stripe_calls_still_work_with_it(stripe_standin: StripeStandin) -> None:
    """stripe-python takes the header as a request option; the call must go through."""
    from canonical import Customer, LegalEntity, PaymentTerms
    from canonical.party import Address
    from connectors.stripe import StripeBilling

    customer = Customer(
        id="salesforce:001CORRELATION",
        name="Correlated Ltd",
        legal_entity=LegalEntity(code="NW-UK", name="Northwind Ltd", country="GB", currency="GBP"),
        addresses=[Address(street="1 High St", city="Leeds", country="GB")],
        currency="GBP",
        payment_terms=PaymentTerms(net_days=30),
    )
    token = correlation_id.set("006CORRELATION")
    try:
        async with StripeBilling(stripe_standin.api_key, base_url=stripe_standin.url) as stripe:
            created = await stripe.create_customer(customer, idempotency_key="corr-1")
            assert (await stripe.get_customer(created)).name == "Correlated Ltd"
    finally:
        correlation_id.reset(token)
