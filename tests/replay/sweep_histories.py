"""Histories of the catch-up sweeps for the replay test: one run of each, its activity faked
(a sweep's workflow only runs its activity; what the activity finds is not the point)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from workflows.sweeps import (
    SWEEP_BILLING,
    SWEEP_CRM,
    BillingSweepWorkflow,
    CrmSweepWorkflow,
    SweepInput,
    SweepResult,
)

CHECKPOINT = datetime(2026, 11, 30, 23, 55, tzinfo=UTC)


@activity.defn(name=SWEEP_CRM)
async def sweep_crm(request: SweepInput) -> SweepResult:
    return SweepResult(
        sweep=request.sweep,
        found=2,
        delivered=["opportunity-to-project:salesforce:0065g00000000A1AAA"],
        delivered_count=1,
        already_handled=1,
        checkpoint=CHECKPOINT,
    )


@activity.defn(name=SWEEP_BILLING)
async def sweep_billing(request: SweepInput) -> SweepResult:
    return SweepResult(
        sweep=request.sweep,
        found=1,
        delivered=["time-to-invoice:1:2026-11"],
        delivered_count=1,
        checkpoint=CHECKPOINT,
    )


async def record_sweep_histories(client: Client, label: str) -> list[tuple[str, str]]:
    """(file name, history JSON) of a CRM sweep and a billing sweep that each found work."""
    task_queue = f"record-{uuid.uuid4()}"
    recorded = []
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CrmSweepWorkflow, BillingSweepWorkflow],
        activities=[sweep_crm, sweep_billing],
    ):
        for name, workflow, sweep in (
            ("crm", CrmSweepWorkflow.run, "crm"),
            ("billing", BillingSweepWorkflow.run, "billing"),
        ):
            handle = await client.start_workflow(
                workflow,
                SweepInput(sweep=sweep),
                id=f"sweep-{name}-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            await handle.result()
            history = await handle.fetch_history()
            recorded.append((f"sweeps.{label}.{name}.json", history.to_json()))
    return recorded
