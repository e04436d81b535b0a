"""Shapes of the Tryton records the connector reads, and of what it hands back.

Tryton answers `read` with plain dicts (`many2one` as an id, dotted fields as nested
`"field.": {...}` dicts); these models give them names and types at the edge.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from canonical import BillingType, Expense, InvoiceStatus, Money, TimeEntry

_WIRE = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ProjectRef(BaseModel):
    """What `create_project` made: the project and its tasks (by task name)."""

    model_config = ConfigDict(frozen=True)

    project_id: int
    task_ids: dict[str, int]
    created: bool  # False when the idempotency key found an existing project


class Employee(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    party_id: int
    company_id: int
    legal_entity_code: str


class TaskInfo(BaseModel):
    """A task of a project as Tryton holds it."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    role: str | None
    product: str | None
    rate: Money  # the hourly list price, in the project's currency
    planned_hours: Decimal | None
    state: str  # "open" or "done"
    billing_type: BillingType = BillingType.TIME_AND_MATERIALS
    #: The day the task was set Done (q2c's Tryton module records it); None while open.
    done_on: date | None = None


class ProjectInfo(BaseModel):
    """A project as Tryton holds it: what q2c created, readable back."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    party_id: int | None
    company_id: int
    legal_entity_code: str
    currency: str
    state: str  # "open" or "done"
    budget: Money | None
    #: What was sold, as the ERP keeps it with the project (`q2c-contract-value:`).
    contract_value: Money | None = None
    opportunity_id: str | None
    project_ref: str | None  # the canonical project id q2c created it for
    tasks: list[TaskInfo]


class TimePage(BaseModel):
    """One page of a project's unbilled time; `next_after` is the cursor of the next page
    (None on the last). Pages are ordered by timesheet line id, so a cursor stays valid
    while lines are booked or billed meanwhile."""

    model_config = ConfigDict(frozen=True)

    entries: list[TimeEntry]
    next_after: int | None


class ExpensePage(BaseModel):
    """One page of a project's unbilled expenses (its disbursements), by disbursement id;
    `next_after` as in `TimePage`."""

    model_config = ConfigDict(frozen=True)

    entries: list[Expense]
    next_after: int | None


class ProjectRevenue(BaseModel):
    """A project's invoiced revenue in the ERP: recognized so far, and still deferred."""

    model_config = ConfigDict(frozen=True)

    recognized: Money
    deferred: Money


class ErpInvoice(BaseModel):
    """The customer invoice `create_invoice` made (or found by its key): its lines in the
    order of the canonical invoice's lines, for marking time billed against them."""

    model_config = ConfigDict(frozen=True)

    id: int
    line_ids: list[int]


class ErpInvoiceInfo(BaseModel):
    """A customer invoice as Tryton itself totals it (the canonical `Invoice` recomputes
    totals from lines, so it cannot show a disagreement), with the billing reference."""

    model_config = ConfigDict(frozen=True)

    id: int
    number: str | None
    state: str  # Tryton's: draft, validated, posted, paid, cancelled
    status: InvoiceStatus
    legal_entity_code: str | None
    reference: str | None  # the billing system's invoice number
    idempotency_key: str | None
    invoice_date: date | None
    due_date: date | None
    untaxed: Money
    tax: Money
    total: Money
    amount_to_pay: Money
    line_ids: list[int]


class TaskState(BaseModel):
    """A task's Tryton status (a `project.work.status` id) and progress."""

    model_config = ConfigDict(frozen=True)

    status: int | None = None
    progress: float | None = None


class ProjectTerms(BaseModel):
    """The commercial terms of a running project that a change order touches: only the
    tasks it touches are listed; None is a label the project does not carry."""

    model_config = ConfigDict(frozen=True)

    task_rates: dict[int, Money] = Field(default_factory=dict)
    #: Planned hours per task (None: the task had none).
    task_hours: dict[int, Decimal | None] = Field(default_factory=dict)
    #: How each task's line is billed (a label on the task).
    task_billing: dict[int, BillingType] = Field(default_factory=dict)
    task_states: dict[int, TaskState] = Field(default_factory=dict)
    budget: Money | None = None
    contract_value: Money | None = None


class ProjectTermsChange(BaseModel):
    """What `update_project_terms` changed, with the values before, so that
    `restore_project_terms` can put them back; the same on every retry of one key."""

    model_config = ConfigDict(frozen=True)

    project_id: int
    idempotency_key: str
    before: ProjectTerms
    after: ProjectTerms
    #: Tasks it added, by name.
    added_task_ids: dict[str, int] = Field(default_factory=dict)


class InvoiceCorrection(BaseModel):
    """A posted invoice corrected: a posted credit note for the re-priced lines and a posted
    re-bill of them at the new prices. The corrected invoice itself is never changed."""

    model_config = ConfigDict(frozen=True)

    invoice_id: int
    credit_note: ErpInvoiceInfo
    rebill: ErpInvoiceInfo


class WorkRecord(BaseModel):
    """A `project.work` row (a project or a task)."""

    model_config = _WIRE

    id: int
    name: str
    type: str
    company: int
    parent: int | None = None
    party: int | None = None
    status: int | None = None
    progress: float | None = None
    product: int | None = None
    list_price: Decimal | None = None
    comment: str | None = None
    timesheet_works: list[int] = Field(default_factory=list)
    project_invoice_method: str | None = None
    effort_duration: timedelta | None = None
    q2c_done_on: date | None = None


class TimesheetLineRecord(BaseModel):
    model_config = _WIRE

    id: int
    employee: int
    work: int
    date: date
    duration: timedelta
    description: str | None = None
    invoice_line: int | None = None


class InvoiceLineRecord(BaseModel):
    model_config = _WIRE

    id: int
    type: str
    description: str | None = None
    quantity: float | None = None
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    taxes: list[int] = Field(default_factory=list)
    product: int | None = None


class InvoiceRecord(BaseModel):
    model_config = _WIRE

    id: int
    type: str
    state: str
    number: str | None = None
    party: int
    company: int
    currency: int
    invoice_date: date | None = None
    untaxed_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    comment: str | None = None
    description: str | None = None
    reference: str | None = None
    lines: list[int] = Field(default_factory=list)
    lines_to_pay: list[int] = Field(default_factory=list)
