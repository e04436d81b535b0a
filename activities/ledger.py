"""The ledger role: q2c's own record of what every run did (cross-references, audit, exceptions).

Each method is idempotent, so Temporal may run it again after a worker dies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from store import CrossReferenceConflict, Store


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecordAuditInput(_Input):
    idempotency_key: str
    workflow_id: str
    step: str
    action: str
    system: str | None = None
    outcome: str = "ok"
    correlation_id: str | None = None
    lifecycle: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class RecordExceptionInput(_Input):
    dedupe_key: str
    kind: str
    message: str
    workflow_id: str | None = None
    correlation_id: str | None = None
    lifecycle: str | None = None
    step: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class RecordExceptionResult(_Input):
    exception_id: int


class ResolveExceptionInput(_Input):
    dedupe_key: str
    resolution: str


class LinkReferenceInput(_Input):
    entity: str
    canonical_id: str
    system: str
    external_id: str


class LedgerActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn
    async def record_audit(self, entry: RecordAuditInput) -> None:
        info = activity.info()
        await self.store.append_audit(
            idempotency_key=entry.idempotency_key,
            workflow_id=entry.workflow_id,
            run_id=info.workflow_run_id,
            step=entry.step,
            action=entry.action,
            system=entry.system,
            outcome=entry.outcome,
            correlation_id=entry.correlation_id,
            lifecycle=entry.lifecycle,
            detail=entry.detail,
        )

    @activity.defn
    async def record_exception(self, record: RecordExceptionInput) -> RecordExceptionResult:
        row = await self.store.record_exception(**record.model_dump())
        if row.id is None:
            raise ApplicationError("the store returned an exception without an id")
        return RecordExceptionResult(exception_id=row.id)

    @activity.defn
    async def resolve_exception(self, request: ResolveExceptionInput) -> None:
        await self.store.resolve_exception_by_key(request.dedupe_key, request.resolution)

    @activity.defn
    async def link_reference(self, ref: LinkReferenceInput) -> None:
        try:
            await self.store.link(ref.entity, ref.canonical_id, ref.system, ref.external_id)
        except CrossReferenceConflict as exc:
            raise ApplicationError(
                str(exc), type="CrossReferenceConflict", non_retryable=True
            ) from exc
