"""Opportunity-to-project: a closed-won deal becomes a customer, a project, a billing account.

One run per CRM opportunity (`opportunity-to-project:<crm>:<opportunity id>`). The run fetches
the deal, derives what the deal does not carry from configuration, validates it (waiting for a
correction when it is bad), upserts the customer in the ERP, asks finance when the deal is
risky, creates the project in the PSA, provisions billing and writes the outcome back to the
CRM. A step that fails for good after others succeeded is compensated in reverse.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

LIFECYCLE = "opportunity-to-project"


def workflow_id(crm: str, opportunity_id: str) -> str:
    """The business key: one lifecycle per CRM deal, whoever or whatever starts it."""
    return f"{LIFECYCLE}:{crm}:{opportunity_id}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OpportunityToProjectInput(_Message):
    opportunity_id: str = Field(min_length=1, max_length=64)
    crm: str = "salesforce"
    #: What started the run (a webhook event id, "cli:<user>"): kept in the audit trail.
    trigger: str | None = None


class Step(StrEnum):
    FETCH_DEAL = "fetch_deal"
    VALIDATE = "validate"
    AWAITING_CORRECTION = "awaiting_correction"
    UPSERT_CUSTOMER = "upsert_customer"
    AWAITING_APPROVAL = "awaiting_approval"
    CREATE_PROJECT = "create_project"
    PROVISION_BILLING = "provision_billing"
    WRITE_BACK = "write_back"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalDecision(_Message):
    """Finance's decision: the argument of the `decide` signal and of the `decide` update."""

    decision: Decision
    approver: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


class ApprovalAck(_Message):
    """What an approver gets back from the update: the decision is recorded."""

    decision: Decision
    approver: str
    step: Step


class DataCorrected(_Message):
    """Sent after someone fixed the deal in the CRM: fetch and validate again."""

    corrected_by: str | None = None
    note: str | None = None


class DecisionRecord(_Message):
    decision: Decision
    approver: str
    reason: str
    at: datetime
    via: str  # "signal" or "update"
    accepted: bool
    #: Why an accepted=False decision was ignored (an approver not on the finance list).
    ignored_because: str | None = None


class PendingApproval(_Message):
    reasons: list[str]
    requested_at: datetime
    remind_at: datetime
    expires_at: datetime
    reminders_sent: int = 0


class DealStatus(_Message):
    """The `status` query: where the run is and what it has made so far."""

    workflow_id: str
    opportunity_id: str
    crm: str
    step: Step
    customer_name: str | None = None
    legal_entity: str | None = None
    currency: str | None = None
    #: system-role -> id there: "erp_customer", "psa_project", "billing_customer".
    ids: dict[str, str] = Field(default_factory=dict)
    validation_issues: list[str] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    last_error: str | None = None


class OpportunityToProjectResult(_Message):
    status: Step  # COMPLETED or REJECTED (a failed run raises)
    ids: dict[str, str] = Field(default_factory=dict)
    message: str


# Message names, shared with the CLI and the service.
DECIDE = "decide"  # signal and update
DATA_CORRECTED = "data_corrected"  # signal
STATUS = "status"  # query
