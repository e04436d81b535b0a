"""The lifecycle kit: what every lifecycle workflow does the same way.

- `Lifecycle.call`: a typed activity call on its system's task queue. A permanent refusal
  fails the step (`StepFailed`); a transient fault is retried, shown (`waiting_on`, the
  `Q2cWaitingOn` search attribute, a "system_unavailable" exception that resolves itself when
  the system is back) and, past the system's outage deadline, handed to a person
  (`operator` signal or update: retry the step, or compensate).
- `Saga`: compensations registered before the irreversible step they undo, run newest first
  on any exit that fails, cancellation included (`Lifecycle.guarded`).
- Bookkeeping (audit, cross-references, exceptions) as local activities: a store hiccup is
  logged, never a reason to undo business work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    RetryState,
)

from workflows.approvals import (
    OPERATOR,
    Message,
    OperatorAck,
    OperatorAction,
    OperatorDecision,
)

with workflow.unsafe.imports_passed_through():
    from activities.ledger import (
        LedgerActivities,
        LinkReferenceInput,
        RecordAuditInput,
        RecordExceptionInput,
        ResolveExceptionInput,
    )
    from canonical import OutagePolicy
    from workflows import presets
    from workflows import search_attributes as sa
    from workflows.queues import SystemQueue, activity_queue

SelfT = TypeVar("SelfT")
ArgT = TypeVar("ArgT")
R = TypeVar("R")

#: The step a run shows while it waits for an operator; every lifecycle's `Step` has it.
AWAITING_OPERATOR = "awaiting_operator"
COMPENSATING = "compensating"


class StepFailed(Exception):
    """A step failed for good; carries which step and the reason a person should read."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    """The innermost message: what the system actually said."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def defect(message: str) -> ApplicationError:
    """A broken invariant in workflow code: fail the run, don't retry its task forever."""
    return ApplicationError(message, type="WorkflowDefect", non_retryable=True)


# -- the saga --------------------------------------------------------------------------------

Undo = Callable[[], Awaitable[None]]


class NothingToUndo(Exception):
    """Raised by an undo that finds nothing of its run's to undo (the step never made it,
    or found what an earlier run made): the saga skips it and says why."""


class SagaOutcome(Message):
    undone: list[str] = []
    #: "name: why" for compensations that failed: a person must finish them.
    not_undone: list[str] = []
    #: "name: why" for compensations with nothing to undo.
    skipped: list[str] = []


class Saga:
    """Typed compensations, registered BEFORE the irreversible step each undoes (the step may
    land even when its call fails or is cancelled), run newest first. Each undo is an
    idempotent activity with the `COMPENSATION` preset, and decides from what the run knows
    whether there is anything of its own to undo (else `NothingToUndo`)."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Undo]] = []

    def add(self, name: str, undo: Undo) -> None:
        self._undo.append((name, undo))

    def clear(self) -> None:
        """The point of no return: what is done from here on is reported, never undone."""
        self._undo.clear()

    def __bool__(self) -> bool:
        return bool(self._undo)

    async def compensate(self) -> SagaOutcome:
        undone: list[str] = []
        not_undone: list[str] = []
        skipped: list[str] = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                await undo()
                undone.append(name)
            except NothingToUndo as nothing:
                skipped.append(f"{name}: {nothing}")
            except (ActivityError, ApplicationError) as exc:
                # A local activity's failure arrives unwrapped, as its ApplicationError: it
                # is one undo not done too, and the undos before it still run.
                not_undone.append(f"{name}: {reason_of(exc)}")
        return SagaOutcome(undone=undone, not_undone=not_undone, skipped=skipped)


def outcome_message(headline: str, outcome: SagaOutcome) -> str:
    """`headline`, then what was undone and what was NOT: the one failure message."""
    message = headline
    if outcome.undone:
        message += f". Undone: {', '.join(outcome.undone)}"
    if outcome.not_undone:
        message += f". NOT undone: {'; '.join(outcome.not_undone)}"
    return message


class Ending(Message):
    """How a run ended badly, for its report: failed at a step, or cancelled."""

    cancelled: bool
    step: str
    reason: str
    outcome: SagaOutcome


# -- outages ---------------------------------------------------------------------------------


class Outage(Message):
    """What a run waits on while a system is down (the `status` query shows it)."""

    system: str
    step: str
    since: datetime
    deadline: datetime
    #: True once the deadline passed and the run waits for `q2c retry|compensate`.
    awaiting_operator: bool = False


class Lifecycle:
    """Mixin for lifecycle workflows. They set `LIFECYCLE`, call `_init_lifecycle()` in their
    `__init__`, keep `_step` (a `StrEnum` with `awaiting_operator` and `compensating`) and
    `_correlation_id`, and set `_outages` from their policy before their first `call`."""

    LIFECYCLE: ClassVar[str]
    #: The `type` of the `ApplicationError` a run fails with after a step failed for good.
    FAILURE_TYPE: ClassVar[str]
    _step: StrEnum
    _correlation_id: str | None

    def _init_lifecycle(self) -> None:
        self.saga = Saga()
        self._last_error: str | None = None
        self._outages = OutagePolicy()
        self._outage: Outage | None = None
        self._outage_episodes = 0
        self._operator: OperatorDecision | None = None

    @property
    def _waiting_on(self) -> str | None:
        return self._outage.system if self._outage else None

    def _set_step(self, step: StrEnum | str) -> None:
        self._step = type(self._step)(step)
        workflow.upsert_search_attributes([sa.STEP.value_set(self._step.value)])

    # -- the run, guarded ----------------------------------------------------------------------

    async def guarded(self, body: Awaitable[R], report: Callable[[Ending], Awaitable[None]]) -> R:
        """Run `body`; on an exit that ends the run (a step failed for good, the run
        cancelled, an `ApplicationError`) run the saga, `report` the ending, and end the run
        the same way: a failed step as a non-retryable `ApplicationError` naming the step,
        cancellation as cancelled. Any other exception is a bug: it fails the workflow
        task, which Temporal retries, so a fixed worker resumes the run with nothing undone.
        Termination runs nothing at all: workflow code never sees it."""
        try:
            return await body
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            if isinstance(exc, StepFailed):
                step, reason = exc.step, exc.reason
            elif cancelled:
                step, reason = self._step.value, "the run was cancelled"
            elif isinstance(exc, ApplicationError):
                step, reason = self._step.value, exc.message
            else:
                raise
            self._last_error = f"{step}: {reason}"
            await self._outage_ended(f"the run ended: {reason}")
            if self.saga:
                self._set_step(COMPENSATING)
            outcome = await self.saga.compensate()
            await report(Ending(cancelled=cancelled, step=step, reason=reason, outcome=outcome))
            if isinstance(exc, StepFailed):
                raise ApplicationError(
                    f"{step}: {reason}", type=self.FAILURE_TYPE, non_retryable=True
                ) from None
            raise

    # -- calls to systems ----------------------------------------------------------------------

    async def call(
        self,
        step: StrEnum | str,
        activity: Callable[[SelfT, ArgT], Awaitable[R]],
        arg: ArgT,
        *,
        system: SystemQueue,
        start_to_close: timedelta | None = None,
        heartbeat: timedelta = presets.SYSTEM_HEARTBEAT,
        notice_after: timedelta | None = None,
    ) -> R:
        """Run `activity` on `system`'s queue. A permanent refusal raises `StepFailed(step)`.
        A transient fault is retried (`TRANSIENT_RETRY`) until the system's outage deadline;
        if the step has no answer after `notice_after`, the run shows that it waits on the
        system and records an exception, which it resolves when the answer comes; past the
        deadline it waits for an operator. Attempts are never cut short by the notice; a step
        that is long by nature (a period's draft) passes a later `notice_after` of its own."""
        step = str(step)
        queue = activity_queue(workflow.info().task_queue, system)
        policy = self._outages
        notice = max(policy.notice_after, notice_after or timedelta(0))
        start_to_close = start_to_close or presets.SYSTEM_ATTEMPT[system.value]
        while True:
            since = workflow.now()
            deadline = since + policy.deadline(system.value)
            handle = workflow.start_activity_method(
                activity,
                arg,
                task_queue=queue,
                start_to_close_timeout=start_to_close,
                schedule_to_close_timeout=deadline - since,
                heartbeat_timeout=heartbeat,
                retry_policy=presets.TRANSIENT_RETRY,
            )
            try:
                try:
                    await workflow.wait_condition(handle.done, timeout=notice)
                except TimeoutError:
                    await self._outage_began(step, system, since, deadline)
                result = await handle
            except ActivityError as exc:
                if isinstance(exc.cause, CancelledError):
                    raise asyncio.CancelledError(reason_of(exc)) from exc
                if exc.retry_state != RetryState.TIMEOUT:
                    self._last_error = f"{step}: {reason_of(exc)}"
                    raise StepFailed(step, reason_of(exc)) from exc
                if self._outage is None:  # a deadline shorter than the notice
                    await self._outage_began(step, system, since, deadline)
                await self._await_operator(step, reason_of(exc))
                continue
            except BaseException:
                handle.cancel()  # the run is cancelled: so is its call
                raise
            if self._outage is not None:
                await self._outage_ended(
                    f"{self._outage.system} answered again at "
                    f"{workflow.now():%Y-%m-%d %H:%M:%S} UTC"
                )
            return result

    async def _outage_began(
        self, step: str, system: SystemQueue, since: datetime, deadline: datetime
    ) -> None:
        """Record the exception, then show the wait: whoever sees `waiting_on` finds it."""
        self._outage_episodes += 1
        try:
            await self.record_exception(
                self._outage_key(),
                kind="system_unavailable",
                message=(
                    f"{self.LIFECYCLE} {self._correlation_id or workflow.info().workflow_id}: "
                    f"{system.value} has not answered {step} since "
                    f"{since:%Y-%m-%d %H:%M:%S} UTC; retrying until "
                    f"{deadline:%Y-%m-%d %H:%M:%S} UTC, then a person decides"
                ),
                step=step,
                detail={"system": system.value, "since": since.isoformat()},
            )
        finally:  # even when the run is cancelled meanwhile: its ending resolves it
            self._outage = Outage(system=system.value, step=step, since=since, deadline=deadline)
            workflow.upsert_search_attributes([sa.WAITING_ON.value_set(system.value)])

    async def _outage_ended(self, resolution: str) -> None:
        outage = self._outage
        if outage is None:
            return
        self._outage = None
        workflow.upsert_search_attributes([sa.WAITING_ON.value_unset()])
        await self.resolve_exception(self._outage_key(), resolution)
        if outage.awaiting_operator:
            await self.resolve_exception(f"{self._outage_key()}:operator", resolution)

    def _outage_key(self) -> str:
        return f"outage:{self._outage_episodes}"

    async def _await_operator(self, step: str, error: str) -> None:
        """The deadline passed: wait for a person. Retry: the step again, with a fresh
        outage window. Compensate: the step fails for good (the saga runs)."""
        outage = self._outage
        if outage is None:
            raise defect("awaiting an operator without an outage")
        self._outage = outage.model_copy(update={"awaiting_operator": True})
        resume = self._step
        self._set_step(AWAITING_OPERATOR)
        await self.record_exception(
            f"{self._outage_key()}:operator",
            kind="operator_needed",
            message=(
                f"{self.LIFECYCLE} {self._correlation_id or workflow.info().workflow_id}: "
                f"{outage.system} still unavailable at {step} after its outage deadline "
                f"({error}); `q2c retry` or `q2c compensate` {workflow.info().workflow_id}"
            ),
            step=step,
            detail={"system": outage.system, "since": outage.since.isoformat(), "error": error},
        )
        self._operator = None
        await workflow.wait_condition(lambda: self._operator is not None)
        decision = self._operator
        if decision is None:
            raise defect("woken without an operator decision")
        self._operator = None
        await self.audit(step, f"operator_{decision.action.value}", detail=decision.model_dump())
        await self._outage_ended(
            f"{decision.operator} decided to {decision.action.value}: {decision.reason}"
        )
        self._set_step(resume)
        if decision.action is OperatorAction.COMPENSATE:
            reason = (
                f"{outage.system} unavailable since {outage.since:%Y-%m-%d %H:%M} UTC; "
                f"{decision.operator} decided to compensate: {decision.reason}"
            )
            self._last_error = f"{step}: {reason}"
            raise StepFailed(step, reason)

    def _operator_refusal(self) -> str | None:
        if self._outage is None or not self._outage.awaiting_operator or self._operator:
            return f"the run is not waiting for an operator (step {self._step.value})"
        return None

    def _take_operator(self, decision: OperatorDecision) -> OperatorAck | None:
        if (problem := self._operator_refusal()) is not None or self._outage is None:
            workflow.logger.warning("operator decision ignored: %s", problem)
            return None
        self._operator = decision
        return OperatorAck(
            action=decision.action,
            operator=decision.operator,
            step=self._outage.step,
            system=self._outage.system,
        )

    @workflow.signal(name=OPERATOR)
    def operator_by_signal(self, decision: OperatorDecision) -> None:
        self._take_operator(decision)

    @workflow.update(name=OPERATOR)
    def operator_by_update(self, decision: OperatorDecision) -> OperatorAck:
        ack = self._take_operator(decision)
        if ack is None:
            raise ApplicationError("the run is not waiting for an operator", non_retryable=True)
        return ack

    @operator_by_update.validator
    def _validate_operator(self, decision: OperatorDecision) -> None:
        if (problem := self._operator_refusal()) is not None:
            raise ValueError(problem)

    async def local(
        self,
        step: StrEnum | str,
        activity: Callable[[SelfT, ArgT], Awaitable[R]],
        arg: ArgT,
    ) -> R:
        """q2c's own rules and settings, as a local activity the step cannot do without."""
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                schedule_to_close_timeout=presets.BOOKKEEPING_FOR,
                **presets.BOOKKEEPING,
            )
        except FailureError as exc:  # a local activity fails as its own error, unwrapped
            if isinstance(exc, CancelledError):
                raise
            self._last_error = f"{step}: {reason_of(exc)}"
            raise StepFailed(str(step), reason_of(exc)) from exc

    # -- compensations -------------------------------------------------------------------------

    async def compensation(
        self,
        activity: Callable[[SelfT, ArgT], Awaitable[R]],
        arg: ArgT,
        *,
        system: SystemQueue,
    ) -> R:
        """Run an undo on its system's queue with the `COMPENSATION` preset."""
        return await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=activity_queue(workflow.info().task_queue, system),
            heartbeat_timeout=presets.SYSTEM_HEARTBEAT,
            **presets.COMPENSATION,
        )

    # -- bookkeeping: local, never a reason to compensate ----------------------------------------

    async def bookkeep(
        self, activity: Callable[[SelfT, ArgT], Awaitable[R]], arg: ArgT
    ) -> R | None:
        """A store write as a local activity, retried for `BOOKKEEPING_FOR`; then logged."""
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                schedule_to_close_timeout=presets.BOOKKEEPING_FOR,
                **presets.BOOKKEEPING,
            )
        except FailureError as exc:  # a local activity fails as its own error, unwrapped
            if isinstance(exc, CancelledError):
                raise
            workflow.logger.error("bookkeeping %s failed: %s", arg, reason_of(exc))
            return None

    async def audit(
        self,
        step: str,
        action: str,
        *,
        system: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        info = workflow.info()
        await self.bookkeep(
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
        )

    def _exception_key(self, key: str) -> str:
        info = workflow.info()
        return f"{info.workflow_id}:{info.run_id}:{key}"

    async def record_exception(
        self,
        key: str,
        *,
        kind: str,
        message: str,
        step: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Open an exception for a person; `key` names it within this run."""
        await self.bookkeep(
            LedgerActivities.record_exception,
            RecordExceptionInput(
                dedupe_key=self._exception_key(key),
                kind=kind,
                message=message,
                workflow_id=workflow.info().workflow_id,
                correlation_id=self._correlation_id,
                lifecycle=self.LIFECYCLE,
                step=str(step),
                detail=detail or {},
            ),
        )

    async def resolve_exception(self, key: str, resolution: str) -> None:
        await self.bookkeep(
            LedgerActivities.resolve_exception,
            ResolveExceptionInput(dedupe_key=self._exception_key(key), resolution=resolution),
        )

    async def link(self, entity: str, canonical_id: str, system: str, external_id: str) -> None:
        await self.bookkeep(
            LedgerActivities.link_reference,
            LinkReferenceInput(
                entity=entity, canonical_id=canonical_id, system=system, external_id=external_id
            ),
        )
