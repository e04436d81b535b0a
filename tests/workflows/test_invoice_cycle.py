"""The billing calendar: a cycle starts one invoice run per project, once per period, and the
schedule that starts cycles exists with its cron."""

from __future__ import annotations

import uuid

from temporalio.client import Client

from settings import Settings
from tests.workflows.invoice_fakes import FakeInvoicing
from workflows.invoice_cycle import InvoiceCycleInput, InvoiceCycleResult, InvoiceCycleWorkflow
from workflows.starters import ensure_billing_schedules, schedule_id


async def test_cycle_starts_one_run_per_project_once(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(projects=[f"c{uuid.uuid4().hex[:6]}", f"c{uuid.uuid4().hex[:6]}"])
    async with systems.worker(temporal_client, task_queue):
        first: InvoiceCycleResult = await temporal_client.execute_workflow(
            InvoiceCycleWorkflow.run,
            InvoiceCycleInput(period="2026-10"),
            id=f"cycle-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        again: InvoiceCycleResult = await temporal_client.execute_workflow(
            InvoiceCycleWorkflow.run,
            InvoiceCycleInput(period="2026-10"),
            id=f"cycle-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        expected = [f"time-to-invoice:{p}:2026-10" for p in systems.projects]
        assert first.started == expected and first.already_started == []
        assert again.started == [] and again.already_started == expected
        for wid in expected:
            description = await temporal_client.get_workflow_handle(wid).describe()
            assert description.parent_id is not None
            await temporal_client.get_workflow_handle(wid).terminate("test over")


async def test_cycle_invoices_the_period_that_just_ended(
    temporal_client: Client, task_queue: str
) -> None:
    systems = FakeInvoicing(projects=[])
    async with systems.worker(temporal_client, task_queue):
        result: InvoiceCycleResult = await temporal_client.execute_workflow(
            InvoiceCycleWorkflow.run,
            InvoiceCycleInput(),
            id=f"cycle-{uuid.uuid4()}",
            task_queue=task_queue,
        )
    from datetime import UTC, datetime

    from canonical import BillingPeriod

    assert result.period == BillingPeriod.of(datetime.now(UTC).date()).previous().key


async def test_billing_schedules_are_created_and_updated(temporal_client: Client) -> None:
    calendar = f"test{uuid.uuid4().hex[:6]}"
    settings = Settings(task_queue="q2c-test", billing_calendars={calendar: "0 6 1 * *"})
    assert await ensure_billing_schedules(temporal_client, settings) == [schedule_id(calendar)]
    changed = Settings(task_queue="q2c-test", billing_calendars={calendar: "0 7 15 * *"})
    await ensure_billing_schedules(temporal_client, changed)  # again: an update, not an error
    handle = temporal_client.get_schedule_handle(schedule_id(calendar))
    description = await handle.describe()
    # The server keeps a cron as calendar specs: 07:00 on the 15th.
    [spec] = description.schedule.spec.calendars
    assert (spec.hour[0].start, spec.day_of_month[0].start) == (7, 15)
    assert description.schedule.state.note == f"q2c billing calendar {calendar!r}: 0 7 15 * * (UTC)"
    await handle.delete()
