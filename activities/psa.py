"""The PSA role: projects, their tasks and rates."""

from __future__ import annotations

from temporalio import activity

from activities._base import ActivityModel
from activities.errors import translate_connector_errors
from activities.ports import PsaPort
from canonical import Project


class CreateProjectInput(ActivityModel):
    project: Project
    erp_customer_id: str
    idempotency_key: str


class CreateProjectResult(ActivityModel):
    project_id: str
    task_ids: dict[str, str]


class CloseProjectInput(ActivityModel):
    project_id: str
    reason: str


class PsaActivities:
    def __init__(self, psa: PsaPort) -> None:
        self.psa = psa

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
        )

    @activity.defn
    @translate_connector_errors
    async def close_project(self, request: CloseProjectInput) -> None:
        """Compensation: closing twice, or a project already gone, is fine."""
        activity.logger.info("closing project %s: %s", request.project_id, request.reason)
        await self.psa.close_project(int(request.project_id))
