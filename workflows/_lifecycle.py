"""What every lifecycle workflow does the same way: run a step's activity and name the step
when it fails for good, keep the step in a search attribute, audit, raise exceptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities, RecordAuditInput, RecordExceptionInput
    from workflows import presets
    from workflows import search_attributes as sa


class StepFailed(Exception):
    """A step failed for good; carries which step and the reason a person should read."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class LifecycleSteps:
    """Mixin for lifecycle workflows; they set `LIFECYCLE`, `_step` and `_correlation_id`."""

    LIFECYCLE: ClassVar[str]
    _step: StrEnum
    _last_error: str | None
    _correlation_id: str | None

    def _set_step(self, step: StrEnum) -> None:
        self._step = step
        workflow.upsert_search_attributes([sa.STEP.value_set(step.value)])

    def _key(self, step: str) -> str:
        """Idempotency key of a mutating step: the same for every attempt of this run."""
        return f"{workflow.info().workflow_id}:{step}"

    async def _call(
        self,
        step: str,
        activity: Callable[..., Awaitable[Any]],
        arg: Any,
        options: presets.CallOptions = presets.SYSTEM_CALL,
    ) -> Any:
        """Run a step's activity; a failure for good becomes `StepFailed` naming the step."""
        try:
            return await workflow.execute_activity_method(activity, arg, **options)
        except ActivityError as exc:
            self._last_error = f"{step}: {reason_of(exc)}"
            raise StepFailed(step, reason_of(exc)) from exc

    async def _audit(
        self,
        step: str,
        action: str,
        *,
        system: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        info = workflow.info()
        await self._call(
            str(self._step),
            LedgerActivities.record_audit,
            RecordAuditInput(
                idempotency_key=f"{info.workflow_id}:{info.run_id}:{step}:{action}",
                workflow_id=info.workflow_id,
                step=str(step),
                action=action,
                system=system,
                correlation_id=self._correlation_id,
                lifecycle=self.LIFECYCLE,
                detail=detail or {},
            ),
            presets.LOCAL_CALL,
        )

    async def _record_exception(
        self,
        key: str,
        *,
        kind: str,
        message: str,
        step: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        info = workflow.info()
        await workflow.execute_activity_method(
            LedgerActivities.record_exception,
            RecordExceptionInput(
                dedupe_key=f"{info.workflow_id}:{info.run_id}:{key}",
                kind=kind,
                message=message,
                workflow_id=info.workflow_id,
                correlation_id=self._correlation_id,
                lifecycle=self.LIFECYCLE,
                step=str(step),
                detail=detail or {},
            ),
            **presets.LOCAL_CALL,
        )


def reason_of(exc: BaseException) -> str:
    """The innermost message: what the system actually said."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)
