"""Time-to-invoice: a project's billing period becomes a paid invoice, with finance in control.

One run per project and period (`time-to-invoice:<psa project id>:<YYYY-MM>`), started by the
billing schedule, by a milestone-completed event, or from the CLI. The run pulls the period's
approved, unbilled time from the PSA and rates it (page by page, outside the workflow's
history), holds the draft for finance (approve, reject, adjust), then creates and finalizes
the invoice in billing, posts the matching receivable in the ERP, marks the time billed in
the PSA, reports to the CRM and follows the invoice until it is paid.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from canonical import DraftView

LIFECYCLE = "time-to-invoice"


def workflow_id(project_id: str, period: str) -> str:
    """The business key: one invoice run per project and billing period."""
    return f"{LIFECYCLE}:{project_id}:{period}"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeToInvoiceInput(_Message):
    project_id: str = Field(min_length=1, max_length=64)  # the PSA's project id
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")  # "2026-11"
    trigger: str | None = None


class InvoiceStep(StrEnum):
    LOAD_CONTRACT = "load_contract"
    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    BILLING_INVOICE = "billing_invoice"
    ERP_POSTING = "erp_posting"
    MARK_BILLED = "mark_billed"
    CRM_UPDATE = "crm_update"
    AWAITING_PAYMENT = "awaiting_payment"
    RECORD_PAYMENT = "record_payment"
    COMPENSATING = "compensating"
    PAID = "paid"
    NOTHING_TO_INVOICE = "nothing_to_invoice"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


class InvoiceDecisionKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class InvoiceDecision(_Message):
    """Finance's decision on the draft: the `decide` signal and update."""

    decision: InvoiceDecisionKind
    approver: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)


class PaymentEvent(_Message):
    """What billing told q2c about the invoice (from its webhook): the `payment` signal."""

    event_id: str
    kind: str  # "paid" or "payment_failed"
    billing_invoice_id: str
    amount: Decimal | None = None  # in the invoice's currency, for "paid"
    occurred_at: datetime
    reason: str | None = None  # why a payment failed


class InvoiceRecord(_Message):
    """A decision or adjustment as the run recorded it."""

    what: str  # "approve", "reject", "adjust"
    approver: str
    reason: str
    at: datetime
    via: str  # "signal" or "update"
    accepted: bool
    ignored_because: str | None = None


class InvoiceStatus(_Message):
    """The `status` query."""

    workflow_id: str
    project_id: str
    period: str
    step: InvoiceStep
    customer_name: str | None = None
    draft: DraftView | None = None
    pending_since: datetime | None = None
    billing_invoice_id: str | None = None
    invoice_number: str | None = None
    erp_invoice_id: str | None = None
    due_date: date | None = None
    records: list[InvoiceRecord] = Field(default_factory=list)
    payments: list[PaymentEvent] = Field(default_factory=list)
    last_error: str | None = None


class DecisionAck(_Message):
    what: str
    approver: str
    step: InvoiceStep
    total: Decimal | None = None


class TimeToInvoiceResult(_Message):
    status: InvoiceStep  # PAID, NOTHING_TO_INVOICE, REJECTED or EXPIRED (failures raise)
    invoice_number: str | None = None
    total: Decimal | None = None
    currency: str | None = None
    message: str


# Message names, shared with the CLI and the service.
DECIDE = "decide"  # signal and update
ADJUST = "adjust"  # signal and update
PAYMENT = "payment"  # signal (from billing's webhooks)
STATUS = "status"  # query
#: Billing invoice metadata naming the run, so a payment webhook finds its run.
BILLING_METADATA_KEY = "q2c_workflow_id"
