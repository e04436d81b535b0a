"""The PSA role: projects, their tasks and rates."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.invoicing import stored_invoice
from activities.ports import PsaPort
from canonical import Project, RatedPeriod
from store import Store

#: Time entries marked (or unmarked) per PSA request; each batch is heartbeated.
MARK_BATCH = 1000


class CreateProjectInput(ActivityModel):
    project: Project
    erp_customer_id: str
    idempotency_key: str


class CreateProjectResult(ActivityModel):
    project_id: str
    task_ids: dict[str, str]
    #: False when the idempotency key found the project (an earlier run made it).
    created: bool


class CloseProjectInput(ActivityModel):
    project_id: str
    reason: str


class TimeBillingInput(ActivityModel):
    draft_id: str


class PsaActivities:
    def __init__(self, psa: PsaPort, store: Store) -> None:
        self.psa = psa
        self.store = store

    @activity.defn
    @translate_connector_errors
    async def create_project(self, request: CreateProjectInput) -> CreateProjectResult:
        ref = await self.psa.create_project(
            request.project,
            party_id=int(request.erp_customer_id),
            idempotency_key=request.idempotency_key,
        )
        return CreateProjectResult(
            project_id=str(ref.project_id),
            task_ids={name: str(task_id) for name, task_id in ref.task_ids.items()},
            created=ref.created,
        )

    @activity.defn
    @translate_connector_errors
    async def close_project(self, request: CloseProjectInput) -> None:
        """Compensation: closing twice, or a project already gone, is fine."""
        activity.logger.info("closing project %s: %s", request.project_id, request.reason)
        await self.psa.close_project(int(request.project_id))

    async def _billed_ids(self, draft_id: str) -> tuple[list[int], list[int], list[int]]:
        """The draft's time entries and expenses, and its ERP invoice lines."""
        row, _ = await stored_invoice(self.store, draft_id)
        rated = RatedPeriod.model_validate(row.rated["period"])
        return (
            [int(e) for e in rated.billed_time_entry_ids],
            [int(e) for e in rated.billed_expense_ids],
            [int(i) for i in row.erp_line_ids],
        )

    @activity.defn
    @translate_connector_errors
    async def mark_time_billed(self, request: TimeBillingInput) -> int:
        """Link each billed time entry and expense to the ERP invoice: the PSA then counts
        them invoiced (the name is older than expenses; histories keep it)."""
        entries, expenses, line_ids = await self._billed_ids(request.draft_id)
        if not line_ids:
            raise ApplicationError(
                f"draft {request.draft_id} has no ERP invoice lines to link time to",
                type="NotPosted",
                non_retryable=True,
            )
        for start in range(0, len(entries), MARK_BATCH):
            batch = entries[start : start + MARK_BATCH]
            await self.psa.mark_time_billed(dict.fromkeys(batch, line_ids[0]))
            activity.heartbeat(start + len(batch))
        if expenses:
            await self.psa.mark_expenses_billed(dict.fromkeys(expenses, line_ids[0]))
        return len(entries)

    @activity.defn
    @translate_connector_errors
    async def unmark_time_billed(self, request: TimeBillingInput) -> int:
        """Compensation: the time and expenses return to unbilled, to be invoiced again."""
        entries, expenses, _ = await self._billed_ids(request.draft_id)
        for start in range(0, len(entries), MARK_BATCH):
            await self.psa.unmark_time_billed(entries[start : start + MARK_BATCH])
            activity.heartbeat(start)
        if expenses:
            await self.psa.unmark_expenses_billed(expenses)
        return len(entries)
