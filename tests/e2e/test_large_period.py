"""A period of 20,000 time entries: drafted, approved, billed, marked billed and paid without a
payload or history limit error; the worker runs as its own process so its memory is its own.

Wall time and the worker's peak memory are written to `.q2c/benchmarks/large_period.json`
(measured, never asserted: speed is the benchmark's business, not a test's)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from canonical import BillingPeriod, TimeEntry
from connectors.salesforce import SalesforceClient
from connectors.tryton import TrytonPsa
from devstack.demo import CLEAN
from devstack.salesforce_seed import close_won, seed_deal
from settings import Settings
from tests.e2e.conftest import APPROVER, Downstream, WorkerProcesses
from tests.fixtures.service import running_service
from tests.fixtures.stripe import StripeStandin
from workflows.opportunity_to_project import (
    OpportunityToProjectInput,
    OpportunityToProjectResult,
    OpportunityToProjectWorkflow,
)
from workflows.opportunity_to_project import workflow_id as deal_workflow_id
from workflows.time_to_invoice import (
    DECIDE,
    STATUS,
    ApprovalDecision,
    Decision,
    DecisionAck,
    InvoiceStatus,
    InvoiceStep,
    TimeToInvoiceInput,
    TimeToInvoiceResult,
    TimeToInvoiceWorkflow,
    workflow_id,
)

pytestmark = pytest.mark.usefixtures("e2e_worker")  # provisions the deal first

ENTRIES = 20_000
HOURS = Decimal("1.25")
#: Temporal warns above 256 KB per payload and refuses above 2 MB.
PAYLOAD_WARN_BYTES = 256 * 1024
REPORT = Path(__file__).resolve().parents[2] / ".q2c" / "benchmarks" / "large_period.json"
STEP_WAIT_S = 300


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def wait_for_step(handle, step: InvoiceStep) -> InvoiceStatus:
    async with asyncio.timeout(STEP_WAIT_S):
        while True:
            status: InvoiceStatus = await handle.query(STATUS, result_type=InvoiceStatus)
            if status.step == step:
                return status
            assert status.step != InvoiceStep.FAILED, status.last_error
            await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_twenty_thousand_entries_are_invoiced_and_paid(
    temporal_env: WorkflowEnvironment,
    e2e_settings: Settings,
    workers: WorkerProcesses,
    crm: SalesforceClient,
    downstream: Downstream,
    stripe_standin: StripeStandin,
) -> None:
    client = temporal_env.client
    key = f"big-{uuid.uuid4().hex[:8]}"
    period = BillingPeriod.of(datetime.now(UTC).date())
    # Won on the 1st: the rates it sold apply to the whole month's time.
    spec = replace(CLEAN, key=key, account_name=f"Initech UK {key[-4:]}", close_date=period.start)
    deal = await seed_deal(crm, spec)
    await close_won(crm, deal.opportunity_id)
    provisioned: OpportunityToProjectResult = await client.execute_workflow(
        OpportunityToProjectWorkflow.run,
        OpportunityToProjectInput(opportunity_id=deal.opportunity_id),
        id=deal_workflow_id("salesforce", deal.opportunity_id),
        task_queue=e2e_settings.task_queue,
    )
    project_id = provisioned.ids["psa_project"]
    psa = TrytonPsa(downstream.tryton)
    project = await psa.get_project(int(project_id))
    development = next(t for t in project.tasks if t.name == "Development")
    employees = await psa.list_employees("NW-UK")
    days = (datetime.now(UTC).date() - period.start).days + 1
    entries = [
        TimeEntry(
            id=f"{key}-{n}",
            project_id=project_id,
            task_id=str(development.id),
            employee=employees[n % len(employees)].name,
            role=development.role or "Developer",
            work_date=period.start + timedelta(days=n % days),
            hours=HOURS,
            approved=True,
        )
        for n in range(ENTRIES)
    ]
    booking_started = time.monotonic()
    await psa.create_timesheet_lines(entries, idempotency_key=key)
    booking_s = time.monotonic() - booking_started

    worker = workers.start()
    started = time.monotonic()
    handle = await client.start_workflow(
        TimeToInvoiceWorkflow.run,
        TimeToInvoiceInput(project_id=project_id, period=period.key, trigger="test"),
        id=workflow_id(project_id, period.key),
        task_queue=workers.env["Q2C_TASK_QUEUE"],
    )
    status = await wait_for_step(handle, InvoiceStep.AWAITING_APPROVAL)
    drafted_s = time.monotonic() - started
    assert status.draft is not None and status.draft.time_entries == ENTRIES
    net = ENTRIES * HOURS * Decimal(160)
    assert status.draft.subtotal == net and len(status.draft.lines) == 1

    await handle.execute_update(
        DECIDE,
        ApprovalDecision(decision=Decision.APPROVE, approver=APPROVER, reason="ok"),
        result_type=DecisionAck,
    )
    status = await wait_for_step(handle, InvoiceStep.AWAITING_PAYMENT)
    assert await psa.count_unbilled(int(project_id), period.start, period.end) == 0
    assert status.billing_invoice_id is not None
    await downstream.stripe.pay_invoice(status.billing_invoice_id, idempotency_key=f"pay-{key}")
    delivery = await asyncio.to_thread(
        stripe_standin.wait_for_event, "invoice.paid", status.billing_invoice_id
    )
    async with running_service(e2e_settings) as service:
        answer = await service.post(
            "/webhooks/stripe",
            content=delivery.body,
            headers={
                "content-type": "application/json",
                "stripe-signature": delivery.signature or "",
            },
        )
        assert answer.status_code == 200
    result: TimeToInvoiceResult = await handle.result()
    total_s = time.monotonic() - started
    peak = peak_rss_mib(worker.pid)

    assert result.status == InvoiceStep.PAID and result.total == net * Decimal("1.20")
    history = await handle.fetch_history()
    largest = max(len(event.SerializeToString()) for event in history.events)
    assert largest < PAYLOAD_WARN_BYTES, f"an event of {largest} bytes in history"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "entries": ENTRIES,
                "booking_s": round(booking_s, 1),
                "start_to_awaiting_approval_s": round(drafted_s, 1),
                "start_to_paid_s": round(total_s, 1),
                "worker_peak_rss_mib": round(peak, 1),
                "history_events": len(history.events),
                "largest_event_bytes": largest,
            },
            indent=2,
        )
    )
