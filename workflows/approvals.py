"""Finance's decision, the same message for every lifecycle that waits for finance."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalDecision(BaseModel):
    """Finance's decision: the argument of a run's `decide` signal and of its `decide` update."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Decision
    approver: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


class OperatorAction(StrEnum):
    """What a person decides for a run that has waited out a system's outage deadline."""

    RETRY = "retry"  # try the step again
    COMPENSATE = "compensate"  # give up: undo what the run created, report the failure


class OperatorDecision(BaseModel):
    """The argument of a run's `operator` signal and update (`q2c retry` / `q2c compensate`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    action: OperatorAction
    operator: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


#: The signal and update that carry an `OperatorDecision`.
OPERATOR = "operator"
