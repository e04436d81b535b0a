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
