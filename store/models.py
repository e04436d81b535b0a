"""The store's tables: cross-reference ids, the audit trail, exceptions, drafts, contracts.

Workflows never touch these; activities and the service do, through `store.Store`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class AwareDateTime(sa.types.TypeDecorator[datetime]):
    """Stores UTC, gives back timezone-aware UTC (SQLite forgets the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _at(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=AwareDateTime, nullable=False, **kwargs)


class CrossReference(SQLModel, table=True):
    """One canonical record's id in one system: `customer c-42` is `tryton 17`."""

    __tablename__ = "cross_reference"
    __table_args__ = (
        sa.UniqueConstraint("entity", "canonical_id", "system", name="uq_xref_canonical"),
        sa.UniqueConstraint("entity", "system", "external_id", name="uq_xref_external"),
    )

    id: int | None = Field(default=None, primary_key=True)
    entity: str = Field(max_length=64)
    canonical_id: str = Field(max_length=255, index=True)
    system: str = Field(max_length=64)
    external_id: str = Field(max_length=255)
    created_at: datetime = _at()


class AuditEntry(SQLModel, table=True):
    """What a run did to which system, and when; rows are only ever added."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _at(index=True)
    #: Set by the caller from the workflow, so a retried activity appends once.
    idempotency_key: str | None = Field(default=None, max_length=255, unique=True)
    workflow_id: str = Field(max_length=255, index=True)
    run_id: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=255, index=True)
    lifecycle: str | None = Field(default=None, max_length=64)
    step: str = Field(max_length=64)
    system: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=64)
    outcome: str = Field(default="ok", max_length=32)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)


class ExceptionRecord(SQLModel, table=True):
    """Something a person must look at: bad data, a refused step, an unpaid invoice."""

    __tablename__ = "exception_record"

    id: int | None = Field(default=None, primary_key=True)
    raised_at: datetime = _at(index=True)
    #: Recording the same exception twice (a retried activity) keeps one row.
    dedupe_key: str = Field(max_length=255, unique=True)
    workflow_id: str | None = Field(default=None, max_length=255, index=True)
    correlation_id: str | None = Field(default=None, max_length=255, index=True)
    lifecycle: str | None = Field(default=None, max_length=64)
    step: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=64)
    message: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    status: str = Field(default="open", max_length=16, index=True)
    resolved_at: datetime | None = Field(default=None, sa_type=AwareDateTime, nullable=True)
    resolution: str | None = None


class InboundEvent(SQLModel, table=True):
    """A webhook delivery q2c accepted, and the run it started.

    Senders deliver at least once (retries and replays carry the same event id), so
    `(source, event_id)` is unique: a second delivery finds this row and starts nothing.
    """

    __tablename__ = "inbound_event"
    __table_args__ = (sa.UniqueConstraint("source", "event_id", name="uq_inbound_event"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=64)
    event_id: str = Field(max_length=255)
    workflow_id: str = Field(max_length=255, index=True)
    run_id: str | None = Field(default=None, max_length=64)
    correlation_id: str | None = Field(default=None, max_length=255, index=True)
    received_at: datetime = _at()


class InvoiceDraft(SQLModel, table=True):
    """A time-to-invoice run's draft: the rated period with every entry it bills.

    Kept here, not in the run's history: a period of 20,000 time entries is megabytes, and
    a workflow payload may not exceed 2 MB. The run holds the id and a small summary.
    """

    __tablename__ = "invoice_draft"

    id: str = Field(primary_key=True, max_length=255)  # "<workflow id>/<run id>"
    workflow_id: str = Field(max_length=255, index=True)
    project_id: str = Field(max_length=64, index=True)
    period: str = Field(max_length=7)
    #: "period" (a month's time, fees, milestones and expenses) or "upfront" (the share of
    #: fixed fees invoiced at provisioning).
    kind: str = Field(default="period", max_length=16)
    status: str = Field(default="draft", max_length=16)
    currency: str = Field(max_length=3)
    #: `canonical.RatedPeriod` as JSON: lines, the entry ids billed, rejections, overage.
    rated: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    #: Finance's adjustments (`InvoiceAdjustment` as JSON), in the order they came.
    adjustments: list[Any] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    billing_invoice_id: str | None = Field(default=None, max_length=255)
    invoice_number: str | None = Field(default=None, max_length=255)
    erp_invoice_id: str | None = Field(default=None, max_length=64)
    erp_line_ids: list[Any] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    created_at: datetime = _at()
    updated_at: datetime = _at()


class SweepCheckpoint(SQLModel, table=True):
    """How far a catch-up sweep has looked: the newest change time it has seen.

    The next sweep asks for changes at or after it (`>=`), so changes sharing that instant
    are seen twice rather than missed; starting or signalling them again is harmless.
    """

    __tablename__ = "sweep_checkpoint"

    name: str = Field(primary_key=True, max_length=64)  # "crm:salesforce", "billing:stripe"
    position: datetime = Field(sa_type=AwareDateTime, nullable=False)
    updated_at: datetime = _at()


class ContractVersionRow(SQLModel, table=True):
    """One version of a contract as provisioned (`canonical.ContractVersion` as JSON).

    Rows are only ever added: version 1 at provisioning, each later one by a change order.
    `(contract_id, version)` is unique, so a retried or concurrent write of a version keeps
    the first.
    """

    __tablename__ = "contract_version"
    __table_args__ = (sa.UniqueConstraint("contract_id", "version", name="uq_contract_version"),)

    id: int | None = Field(default=None, primary_key=True)
    contract_id: str = Field(max_length=255, index=True)  # the canonical project id
    version: int
    #: The PSA's id of the project it is delivered as (what invoicing is run for).
    project_id: str = Field(max_length=64, index=True)
    effective_from: date
    source: str = Field(max_length=255)  # "opportunity:<id>", "change-order:<id>"
    body: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    created_at: datetime = _at()
