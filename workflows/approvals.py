"""People in a run: finance's decision (approve, reject; and for a draft invoice, adjust), and
an operator's decision after a system's outage deadline (retry, compensate).

Written once for every lifecycle: the messages, the decision records, the wait with reminders
and expiry (`ApprovalGate`), and the signal/update/validator trio (`AwaitsApproval`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError


class DecidingPolicy(Protocol):
    """Who may decide, and how long they have (a deal's `DecidingPolicy`, a change
    order's `ChangePolicy`)."""

    @property
    def remind_after(self) -> timedelta: ...

    @property
    def expire_after(self) -> timedelta: ...

    def may_decide(self, approver: str) -> bool: ...


class Message(BaseModel):
    """A workflow message (input, signal, update, query, result). `extra="ignore"`: during a
    rolling deploy an older worker accepts a message from a newer sender with an added field."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalDecision(Message):
    """Finance's decision: the argument of a run's `decide` signal and of its `decide` update."""

    decision: Decision
    approver: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


class DecisionRecord(Message):
    """A decision (or an adjustment) as the run recorded it, refused ones included."""

    what: str  # "approve", "reject", "adjust"
    approver: str
    reason: str
    at: datetime
    via: str  # "signal" or "update"
    accepted: bool
    #: Why an accepted=False decision was ignored (an approver not on the finance list).
    ignored_because: str | None = None
    #: What the record is about, when a lifecycle names it: an adjustment's id, so a repeat
    #: of the same adjustment is seen as one.
    ref: str | None = None


class ApprovalAck(Message):
    """What an approver gets back from the `decide` update: the decision is recorded."""

    what: str
    approver: str
    step: str


class PendingApproval(Message):
    reasons: list[str]
    requested_at: datetime
    remind_at: datetime
    expires_at: datetime
    reminders_sent: int = 0


#: The signal and update that carry an `ApprovalDecision`.
DECIDE = "decide"


class ApprovalGate:
    """One approval: what is pending, who decided, every decision received; and the wait.

    The workflow owns one (`self._approval = ApprovalGate()`), calls `open` then `wait` where
    it needs finance, and its `AwaitsApproval` handlers feed `decide`. Work that must finish before
    the decision counts (an adjustment being applied) holds it back through `busy`.
    """

    def __init__(self) -> None:
        self.policy: DecidingPolicy | None = None
        self.pending: PendingApproval | None = None
        self.decision: DecisionRecord | None = None
        self.records: list[DecisionRecord] = []
        self.ref: str | None = None
        self.busy = 0

    def refusal(self, approver: str, step: str) -> str | None:
        if self.pending is None or self.decision is not None:
            return f"no approval is pending (step {step})"
        if self.policy is None or not self.policy.may_decide(approver):
            return f"{approver} is not on the finance approvers list"
        return None

    def record(
        self,
        what: str,
        approver: str,
        reason: str,
        via: str,
        step: str,
        *,
        ref: str | None = None,
        ignored_because: str | None = None,
    ) -> DecisionRecord:
        """Record what a person sent; `accepted` says whether it counts. `ignored_because`
        refuses it for a reason of the lifecycle's own (a repeat of an applied adjustment)."""
        problem = ignored_because or self.refusal(approver, step)
        record = DecisionRecord(
            what=what,
            approver=approver,
            reason=reason,
            at=workflow.now(),
            via=via,
            accepted=problem is None,
            ignored_because=problem,
            ref=ref,
        )
        self.records.append(record)
        if problem is not None:
            workflow.logger.warning("%s from %s ignored: %s", what, approver, problem)
        return record

    def refuse(self, record: DecisionRecord, because: str) -> None:
        """An accepted record that could not be applied after all (an invalid adjustment)."""
        self.records[self.records.index(record)] = record.model_copy(
            update={"accepted": False, "ignored_because": because}
        )

    def decide(self, decision: ApprovalDecision, via: str, step: str) -> DecisionRecord:
        record = self.record(
            decision.decision.value, decision.approver, decision.reason, via, step, ref=self.ref
        )
        if record.accepted:
            self.decision = record
        return record

    def open(
        self, policy: DecidingPolicy, reasons: list[str], *, ref: str | None = None
    ) -> PendingApproval:
        """From now on decisions count (before the run tells anyone it waits). `ref` names
        what is being decided (a change order's preview digest): each decision records it."""
        now = workflow.now()
        self.policy = policy
        self.ref = ref
        self.pending = PendingApproval(
            reasons=reasons,
            requested_at=now,
            remind_at=now + policy.remind_after,
            expires_at=now + policy.expire_after,
        )
        return self.pending

    async def wait(
        self, remind: Callable[[PendingApproval], Awaitable[None]]
    ) -> DecisionRecord | None:
        """Wait for an accepted decision; `remind` every `remind_after`; None at `expire_after`."""
        if self.pending is None or self.policy is None:
            raise ApplicationError("approval awaited before it was opened", non_retryable=True)
        policy = self.policy
        while True:
            pending = self.pending
            now = workflow.now()
            if self._settled() or now >= pending.expires_at:
                break
            wake = min(pending.remind_at, pending.expires_at)
            try:
                await workflow.wait_condition(self._settled, timeout=max(wake - now, timedelta(0)))
            except TimeoutError:
                if workflow.now() >= pending.expires_at:
                    break
                self.pending = pending.model_copy(
                    update={
                        "reminders_sent": pending.reminders_sent + 1,
                        "remind_at": pending.remind_at + policy.remind_after,
                    }
                )
                await remind(self.pending)
        self.pending = None
        return self.decision

    def _settled(self) -> bool:
        return self.decision is not None and not self.busy


class AwaitsApproval:
    """Mixin: the `decide` signal (recorded; ignored when refused) and update (refused by its
    validator, so the sender hears why). The workflow sets `_approval` and `_step`."""

    _approval: ApprovalGate
    _step: StrEnum

    @workflow.signal(name=DECIDE)
    def decide_by_signal(self, decision: ApprovalDecision) -> None:
        """Finance tools and webhooks: recorded, and ignored when the approver may not decide."""
        self._approval.decide(decision, "signal", self._step.value)

    @workflow.update(name=DECIDE)
    def decide_by_update(self, decision: ApprovalDecision) -> ApprovalAck:
        """The CLI: the approver gets an immediate answer, refusals included."""
        record = self._approval.decide(decision, "update", self._step.value)
        return ApprovalAck(what=record.what, approver=record.approver, step=self._step.value)

    @decide_by_update.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if (problem := self._approval.refusal(decision.approver, self._step.value)) is not None:
            raise ValueError(problem)


# -- operators, after an outage deadline ----------------------------------------------------


class OperatorAction(StrEnum):
    """What a person decides for a run that has waited out a system's outage deadline."""

    RETRY = "retry"  # try the step again
    COMPENSATE = "compensate"  # give up: undo what the run created, report the failure


class OperatorDecision(Message):
    """The argument of a run's `operator` signal and update (`q2c retry` / `q2c compensate`)."""

    action: OperatorAction
    operator: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


class OperatorAck(Message):
    """What the `operator` update answers: the decision was taken for this step."""

    action: OperatorAction
    operator: str
    step: str
    system: str


#: The signal and update that carry an `OperatorDecision`.
OPERATOR = "operator"
