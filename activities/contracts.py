"""The contract as provisioned: q2c's record of what was sold, kept in its store.

Version 1 is recorded when the deal's project exists (the PSA's task ids are known then);
each later version comes from a change order. Recording is idempotent: a version is written
once, and a retried or concurrent recording finds the first.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from activities._base import ActivityModel
from canonical import Contract, ContractVersion
from store import ContractVersionRow, Store


class RecordContractInput(ActivityModel):
    contract: ContractVersion
    #: The PSA's project id, and its task ids by task name (from `create_project`).
    project_id: str
    task_ids: dict[str, str]


class RecordedContract(ActivityModel):
    contract_id: str
    version: int
    #: False: this version was recorded before (a retry, a rerun or a twin); kept as it was.
    created: bool


class LoadContractVersionsInput(ActivityModel):
    project_id: str  # the PSA's


class ContractActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn
    async def record_contract(self, request: RecordContractInput) -> RecordedContract:
        version = with_task_ids(request.contract, request.task_ids)
        row, created = await self.store.add_contract_version(
            ContractVersionRow(
                contract_id=version.contract_id,
                version=version.version,
                project_id=request.project_id,
                effective_from=version.effective_from,
                source=version.source,
                body=version.model_dump(mode="json"),
            )
        )
        return RecordedContract(contract_id=row.contract_id, version=row.version, created=created)


def with_task_ids(version: ContractVersion, task_ids: Mapping[str, str]) -> ContractVersion:
    """The version with each line's PSA task id, found by the task's name."""
    lines = [
        line.model_copy(update={"task_id": task_ids.get(line.task, line.task_id)})
        for line in version.lines
    ]
    return version.model_copy(update={"lines": lines})


async def stored_contract(store: Store, project_id: str) -> Contract | None:
    """Every recorded version of the PSA project's contract; None before it was recorded
    (a project provisioned before q2c kept contracts)."""
    rows = await store.contract_versions(project_id=project_id)
    if not rows:
        return None
    return Contract(versions=[ContractVersion.model_validate(r.body) for r in rows])
