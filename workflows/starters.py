"""Starting lifecycle runs from outside a workflow: the service's webhooks and the CLI.

Both start a run the same way, so a deal started by hand and the same deal's webhook land on
one run: the business-key workflow id, the same conflict and reuse policies, the same search
attributes. This module is client-side code; it never runs inside a workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from settings import Settings
from workflows import search_attributes as attrs
from workflows.invoice_cycle import InvoiceCycleInput
from workflows.opportunity_to_project import (
    DATA_CORRECTED,
    LIFECYCLE,
    DataCorrected,
    OpportunityToProjectInput,
    Step,
    workflow_id,
)
from workflows.time_to_invoice import LIFECYCLE as INVOICE_LIFECYCLE
from workflows.time_to_invoice import InvoiceStep, TimeToInvoiceInput
from workflows.time_to_invoice import workflow_id as invoice_workflow_id

#: The type names the worker registers: starters start runs by name, they never run one.
OPPORTUNITY_TO_PROJECT = "OpportunityToProjectWorkflow"
INVOICE_CYCLE = "InvoiceCycleWorkflow"
TIME_TO_INVOICE = "TimeToInvoiceWorkflow"

_CRM_NAMES = {"salesforce": "Salesforce"}


@dataclass(frozen=True)
class StartedRun:
    workflow_id: str
    run_id: str | None
    #: False when a run with this workflow id was already running and the start attached to it.
    started: bool


async def start_opportunity_run(
    client: Client,
    settings: Settings,
    opportunity_id: str,
    *,
    crm: str,
    trigger: str,
    summary: str | None = None,
    rpc_timeout: timedelta | None = None,
    refetch: bool = False,
) -> StartedRun:
    """Start the deal's opportunity-to-project run, or attach to the one already running.

    With `refetch` (a fresh change in the CRM), a run already waiting for corrected data is
    told to fetch the deal again: signal-with-start delivers `data_corrected` to the running
    run, or to the new one before its first step (where it changes nothing).
    The caller checks the opportunity id's format first: it becomes part of the workflow id.
    """
    handle = await client.start_workflow(
        OPPORTUNITY_TO_PROJECT,
        OpportunityToProjectInput(opportunity_id=opportunity_id, crm=crm, trigger=trigger),
        id=workflow_id(crm, opportunity_id),
        task_queue=settings.task_queue,
        # Starts racing each other (redelivered webhooks, a person and a webhook) attach to the
        # one running run...
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # ...and a deal that is won again later gets a new run that updates what exists.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.CORRELATION_ID, opportunity_id),
                SearchAttributePair(attrs.LIFECYCLE, LIFECYCLE),
                SearchAttributePair(attrs.STEP, Step.FETCH_DEAL.value),
            ]
        ),
        static_summary=summary or f"{_CRM_NAMES.get(crm, crm)} opportunity {opportunity_id}",
        rpc_timeout=rpc_timeout,
        start_signal=DATA_CORRECTED if refetch else None,
        start_signal_args=[DataCorrected(corrected_by=crm, note=trigger)] if refetch else [],
    )
    return StartedRun(workflow_id=handle.id, run_id=handle.result_run_id, started=_started(handle))


async def start_invoice_run(
    client: Client,
    settings: Settings,
    project_id: str,
    period: str,
    *,
    trigger: str,
    rpc_timeout: timedelta | None = None,
) -> StartedRun:
    """Start the project's time-to-invoice run for a period, or attach to the one running.

    A period whose run was rejected, expired or failed may be run again: the PSA then offers
    only what is still unbilled, so nothing is invoiced twice. The caller checks the project
    id and the period first: both become part of the workflow id.
    """
    handle = await client.start_workflow(
        TIME_TO_INVOICE,
        TimeToInvoiceInput(project_id=project_id, period=period, trigger=trigger),
        id=invoice_workflow_id(project_id, period),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(attrs.LIFECYCLE, INVOICE_LIFECYCLE),
                SearchAttributePair(attrs.STEP, InvoiceStep.LOAD_CONTRACT.value),
            ]
        ),
        static_summary=f"Invoice project {project_id} for {period}",
        rpc_timeout=rpc_timeout,
    )
    return StartedRun(workflow_id=handle.id, run_id=handle.result_run_id, started=_started(handle))


def _started(handle: object) -> bool:
    """Whether the server started a new run (`StartWorkflowExecutionResponse.started`).

    The SDK keeps the response only on a private attribute; `tests/cli` proves that a second
    start still reads False here, so an SDK upgrade that moves it cannot pass unnoticed.
    """
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


def schedule_id(calendar: str) -> str:
    return f"q2c-billing-{calendar}"


async def ensure_billing_schedules(client: Client, settings: Settings) -> list[str]:
    """One Temporal Schedule per billing calendar; creating them again updates them."""
    ids = []
    for calendar, cron in settings.billing_calendars.items():
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                INVOICE_CYCLE,
                InvoiceCycleInput(calendar=calendar),
                id=f"invoice-cycle-{calendar}",
                task_queue=settings.task_queue,
            ),
            spec=ScheduleSpec(cron_expressions=[cron]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(note=f"q2c billing calendar {calendar!r}: {cron} (UTC)"),
        )
        sid = schedule_id(calendar)
        try:
            await client.create_schedule(sid, schedule)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(sid).update(
                lambda _, schedule=schedule: ScheduleUpdate(schedule=schedule)  # type: ignore[misc]
            )
        ids.append(sid)
    return ids
