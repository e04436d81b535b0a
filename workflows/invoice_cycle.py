"""The billing calendar: on schedule, one time-to-invoice run per project for the period just
ended. Started by a Temporal Schedule (`q2c schedules`); each run it starts has its business
key, so a period is never invoiced twice however often the cycle runs."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import Field
from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.invoicing import InvoicingActivities, ProjectsInput
    from canonical import BillingPeriod
    from workflows._lifecycle import AWAITING_OPERATOR, COMPENSATING, Lifecycle
    from workflows.approvals import Message
    from workflows.queues import SystemQueue
    from workflows.time_to_invoice import (
        TimeToInvoiceInput,
        TimeToInvoiceWorkflow,
    )
    from workflows.time_to_invoice import workflow_id as invoice_workflow_id

LIFECYCLE = "invoice-cycle"


class CycleStep(StrEnum):
    LIST_PROJECTS = "list_projects"
    START_RUNS = "start_runs"
    DONE = "done"
    AWAITING_OPERATOR = AWAITING_OPERATOR  # the PSA stayed down past its outage deadline
    COMPENSATING = COMPENSATING  # never: a cycle only starts runs, it has nothing to undo


class InvoiceCycleInput(Message):
    calendar: str = "monthly"
    #: Invoice this period instead of the one that just ended ("2026-11").
    period: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")


class InvoiceCycleResult(Message):
    period: str
    started: list[str]
    already_started: list[str]


@workflow.defn
class InvoiceCycleWorkflow(Lifecycle):
    """The projects come from the PSA's queue through the kit's call: an outage of the PSA is
    waited out (shown, recorded, handed to an operator past its deadline), not a lost cycle."""

    LIFECYCLE = LIFECYCLE
    FAILURE_TYPE = "InvoiceCycleFailed"

    @workflow.init
    def __init__(self, request: InvoiceCycleInput) -> None:
        self._init_lifecycle()
        self._step = CycleStep.LIST_PROJECTS
        self._correlation_id: str | None = None

    @workflow.run
    async def run(self, request: InvoiceCycleInput) -> InvoiceCycleResult:
        period = request.period or BillingPeriod.of(workflow.now().date()).previous().key
        self._correlation_id = f"{LIFECYCLE}:{request.calendar}:{period}"
        projects = await self.call(
            CycleStep.LIST_PROJECTS,
            InvoicingActivities.list_invoiceable_projects,
            ProjectsInput(calendar=request.calendar),
            system=SystemQueue.TRYTON,
        )
        self._set_step(CycleStep.START_RUNS)
        started: list[str] = []
        already: list[str] = []
        for project_id in projects:
            wid = invoice_workflow_id(project_id, period)
            try:
                await workflow.start_child_workflow(
                    TimeToInvoiceWorkflow.run,
                    TimeToInvoiceInput(
                        project_id=project_id, period=period, trigger=f"schedule:{request.calendar}"
                    ),
                    id=wid,
                    # The invoice runs outlive the cycle: they wait for finance and payment.
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    execution_timeout=timedelta(days=400),
                )
                started.append(wid)
            except WorkflowAlreadyStartedError:
                already.append(wid)
        self._set_step(CycleStep.DONE)
        return InvoiceCycleResult(period=period, started=started, already_started=already)
