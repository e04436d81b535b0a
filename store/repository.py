"""`Store`: the one way q2c reads and writes its own database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from store.models import (
    AuditEntry,
    ContractVersionRow,
    CrossReference,
    ExceptionRecord,
    InboundEvent,
    InvoiceDraft,
    SweepCheckpoint,
    utcnow,
)

#: Draft statuses of an issued invoice: its entries are billed, whatever the PSA says yet.
ISSUED_STATUSES = ("billed", "paid", "uncollectible")
OPEN_STATUSES = ("draft", "adjusted")

RowT = TypeVar(
    "RowT", CrossReference, AuditEntry, ExceptionRecord, InboundEvent, ContractVersionRow
)


async def _nothing() -> None:
    return None


class StoreNotMigrated(RuntimeError):
    """The store's schema is missing or older than this code's: `q2c store migrate`."""


class CrossReferenceConflict(ValueError):
    """A canonical record is already linked to another id in that system (or vice versa)."""


#: How long a SQLite write waits for another process's write before "database is locked".
#: Writes are short, but a loaded machine stretches them well past SQLite's 5 s default.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `sqlite+aiosqlite://...` or `postgresql+asyncpg://...`."""
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite://"):
        url = "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    engine = create_async_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        # WAL lets the worker and the service read while the other writes.
        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # The wait comes first: switching a new file to WAL takes a lock of its own.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(create_engine(url))

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (`q2c store migrate`)."""
        from store.migrate import upgrade

        await upgrade(self.engine)

    async def require_migrated(self) -> None:
        """Refuse to run on a schema `q2c store migrate` has not brought up to date."""
        from store.migrate import require_current

        await require_current(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    # Cross-reference ids -------------------------------------------------------------

    async def link(
        self, entity: str, canonical_id: str, system: str, external_id: str
    ) -> CrossReference:
        """Record that `canonical_id` is `external_id` in `system`; repeating it is harmless."""
        row = await self._insert_unless_found(
            CrossReference(
                entity=entity, canonical_id=canonical_id, system=system, external_id=external_id
            ),
            lambda: self._reference(entity, canonical_id, system),
            conflict=lambda: CrossReferenceConflict(
                f"{system} {entity} {external_id!r} is already linked to another record"
            ),
        )
        if row.external_id != external_id:
            raise CrossReferenceConflict(
                f"{entity} {canonical_id!r} is already {row.external_id!r} in {system},"
                f" not {external_id!r}"
            )
        return row

    async def external_id(self, entity: str, canonical_id: str, system: str) -> str | None:
        ref = await self._reference(entity, canonical_id, system)
        return ref.external_id if ref else None

    async def canonical_id(self, entity: str, system: str, external_id: str) -> str | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(CrossReference).where(
                    CrossReference.entity == entity,
                    CrossReference.system == system,
                    CrossReference.external_id == external_id,
                )
            )
            ref = result.first()
            return ref.canonical_id if ref else None

    async def references(self, entity: str, canonical_id: str) -> dict[str, str]:
        """Every system's id for one canonical record, keyed by system."""
        async with self._sessions() as session:
            result = await session.exec(
                select(CrossReference).where(
                    CrossReference.entity == entity, CrossReference.canonical_id == canonical_id
                )
            )
            return {ref.system: ref.external_id for ref in result.all()}

    async def external_ids(self, entity: str, system: str) -> list[str]:
        """Every id `system` has for records of `entity` that q2c linked."""
        async with self._sessions() as session:
            result = await session.exec(
                select(CrossReference.external_id).where(
                    CrossReference.entity == entity, CrossReference.system == system
                )
            )
            return list(result.all())

    async def _reference(
        self, entity: str, canonical_id: str, system: str
    ) -> CrossReference | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(CrossReference).where(
                    CrossReference.entity == entity,
                    CrossReference.canonical_id == canonical_id,
                    CrossReference.system == system,
                )
            )
            return result.first()

    # Audit trail ---------------------------------------------------------------------

    async def append_audit(
        self,
        *,
        workflow_id: str,
        step: str,
        action: str,
        system: str | None = None,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
        run_id: str | None = None,
        correlation_id: str | None = None,
        lifecycle: str | None = None,
        idempotency_key: str | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry; with an `idempotency_key` a repeat returns the first entry."""
        row = AuditEntry(
            at=at or utcnow(),
            idempotency_key=idempotency_key,
            workflow_id=workflow_id,
            run_id=run_id,
            correlation_id=correlation_id,
            lifecycle=lifecycle,
            step=step,
            system=system,
            action=action,
            outcome=outcome,
            detail=detail or {},
        )
        if idempotency_key is None:
            return await self._insert_unless_found(row, _nothing)
        return await self._insert_unless_found(row, lambda: self._audit_by_key(idempotency_key))

    async def audit_trail(
        self, *, workflow_id: str | None = None, correlation_id: str | None = None
    ) -> Sequence[AuditEntry]:
        query = select(AuditEntry).order_by(col(AuditEntry.at), col(AuditEntry.id))
        if workflow_id is not None:
            query = query.where(AuditEntry.workflow_id == workflow_id)
        if correlation_id is not None:
            query = query.where(AuditEntry.correlation_id == correlation_id)
        async with self._sessions() as session:
            return (await session.exec(query)).all()

    async def _audit_by_key(self, key: str) -> AuditEntry | None:
        async with self._sessions() as session:
            result = await session.exec(select(AuditEntry).where(AuditEntry.idempotency_key == key))
            return result.first()

    # Exceptions ----------------------------------------------------------------------

    async def record_exception(
        self,
        *,
        dedupe_key: str,
        kind: str,
        message: str,
        workflow_id: str | None = None,
        correlation_id: str | None = None,
        lifecycle: str | None = None,
        step: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> ExceptionRecord:
        """Open an exception for a person; the same `dedupe_key` twice keeps one."""
        row = ExceptionRecord(
            dedupe_key=dedupe_key,
            kind=kind,
            message=message,
            workflow_id=workflow_id,
            correlation_id=correlation_id,
            lifecycle=lifecycle,
            step=step,
            detail=detail or {},
        )
        return await self._insert_unless_found(row, lambda: self._exception_by_key(dedupe_key))

    async def exceptions(
        self,
        *,
        status: str | None = "open",
        workflow_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Sequence[ExceptionRecord]:
        query = select(ExceptionRecord).order_by(col(ExceptionRecord.raised_at))
        if status is not None:
            query = query.where(ExceptionRecord.status == status)
        if workflow_id is not None:
            query = query.where(ExceptionRecord.workflow_id == workflow_id)
        if correlation_id is not None:
            query = query.where(ExceptionRecord.correlation_id == correlation_id)
        async with self._sessions() as session:
            return (await session.exec(query)).all()

    async def resolve_exception(self, exception_id: int, resolution: str) -> ExceptionRecord:
        async with self._sessions() as session:
            row = await session.get(ExceptionRecord, exception_id)
            if row is None:
                raise LookupError(f"no exception with id {exception_id}")
            if row.status != "resolved":
                row.status = "resolved"
                row.resolved_at = utcnow()
                row.resolution = resolution
                session.add(row)
                await session.commit()
                await session.refresh(row)
            return row

    async def resolve_exception_by_key(
        self, dedupe_key: str, resolution: str
    ) -> ExceptionRecord | None:
        """Resolve the exception a run opened under `dedupe_key` (a system that came back);
        resolving twice, or a key never recorded, changes nothing."""
        found = await self._exception_by_key(dedupe_key)
        if found is None or found.id is None:
            return None
        return await self.resolve_exception(found.id, resolution)

    async def _exception_by_key(self, key: str) -> ExceptionRecord | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(ExceptionRecord).where(ExceptionRecord.dedupe_key == key)
            )
            return result.first()

    # Inbound webhook events --------------------------------------------------------

    async def record_inbound_event(
        self,
        *,
        source: str,
        event_id: str,
        workflow_id: str,
        run_id: str | None = None,
        correlation_id: str | None = None,
        received_at: datetime | None = None,
    ) -> tuple[InboundEvent, bool]:
        """Record an accepted delivery; `(row, True)` the first time, `(first row, False)` after.

        Concurrent deliveries of one event may race here: the loser gets the winner's row.
        """
        row = InboundEvent(
            source=source,
            event_id=event_id,
            workflow_id=workflow_id,
            run_id=run_id,
            correlation_id=correlation_id,
            received_at=received_at or utcnow(),
        )
        stored = await self._insert_unless_found(row, lambda: self.inbound_event(source, event_id))
        return stored, stored is row

    async def inbound_event(self, source: str, event_id: str) -> InboundEvent | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(InboundEvent).where(
                    InboundEvent.source == source, InboundEvent.event_id == event_id
                )
            )
            return result.first()

    async def _insert_unless_found(
        self,
        row: RowT,
        find: Callable[[], Awaitable[RowT | None]],
        *,
        conflict: Callable[[], Exception] | None = None,
    ) -> RowT:
        """Insert `row` unless `find` gives its twin; a racing writer's twin wins too.

        A unique constraint that `find` does not cover raises `conflict()`.
        """
        if (found := await find()) is not None:
            return found
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                if (found := await find()) is not None:
                    return found
                if conflict is not None:
                    raise conflict() from None
                raise
            await session.refresh(row)
            return row

    # Invoice drafts ------------------------------------------------------------------

    async def save_draft(self, draft: InvoiceDraft) -> InvoiceDraft:
        """Write the draft whole: a retried drafting activity replaces what it wrote before."""
        async with self._sessions() as session:
            existing = await session.get(InvoiceDraft, draft.id)
            if existing is not None:
                await session.delete(existing)
                await session.flush()
            session.add(draft)
            await session.commit()
            await session.refresh(draft)
            return draft

    async def draft(self, draft_id: str) -> InvoiceDraft | None:
        async with self._sessions() as session:
            return await session.get(InvoiceDraft, draft_id)

    async def billed_drafts(
        self, project_id: str, *, period: str | None = None
    ) -> Sequence[InvoiceDraft]:
        """The project's drafts that became invoices (billed, then perhaps paid or written
        off), oldest first; a voided one is not among them. Each holds its time entries
        until it is voided: a later draft must not bill them again, even while the PSA does
        not yet show them billed."""
        query = select(InvoiceDraft).where(
            InvoiceDraft.project_id == project_id,
            col(InvoiceDraft.status).in_(ISSUED_STATUSES),
        )
        if period is not None:
            query = query.where(InvoiceDraft.period == period)
        async with self._sessions() as session:
            result = await session.exec(query.order_by(col(InvoiceDraft.created_at)))
            return result.all()

    async def open_drafts(self, project_id: str) -> Sequence[InvoiceDraft]:
        """The project's drafts not (yet) issued or voided, oldest first: those awaiting
        finance, and those of runs that ended without an invoice."""
        query = select(InvoiceDraft).where(
            InvoiceDraft.project_id == project_id,
            col(InvoiceDraft.status).in_(OPEN_STATUSES),
        )
        async with self._sessions() as session:
            result = await session.exec(query.order_by(col(InvoiceDraft.created_at)))
            return result.all()

    async def update_draft(self, draft_id: str, **changes: Any) -> InvoiceDraft:
        async with self._sessions() as session:
            row = await session.get(InvoiceDraft, draft_id)
            if row is None:
                raise LookupError(f"no invoice draft {draft_id!r}")
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            session.add(row)
            await session.commit()
            await session.refresh(row)
            return row

    # Contracts as provisioned ---------------------------------------------------------

    async def add_contract_version(
        self, row: ContractVersionRow
    ) -> tuple[ContractVersionRow, bool]:
        """Keep a version; `(row, True)` the first time, `(the first row, False)` after.

        A version is written once: a retried provisioning, or a twin racing it, finds the
        first and changes nothing, so what was provisioned is never rewritten.
        """
        stored = await self._insert_unless_found(
            row, lambda: self._contract_version(row.contract_id, row.version)
        )
        return stored, stored is row

    async def _contract_version(self, contract_id: str, version: int) -> ContractVersionRow | None:
        async with self._sessions() as session:
            result = await session.exec(
                select(ContractVersionRow).where(
                    ContractVersionRow.contract_id == contract_id,
                    ContractVersionRow.version == version,
                )
            )
            return result.first()

    async def remove_contract_version(self, contract_id: str, version: int, *, source: str) -> bool:
        """Take back the newest version, only when `source` made it (a change order's undo);
        False when there was none to take back. An older version is never removed: one made
        after it stands on it."""
        async with self._sessions() as session:
            result = await session.exec(
                select(ContractVersionRow)
                .where(ContractVersionRow.contract_id == contract_id)
                .order_by(col(ContractVersionRow.version).desc())
            )
            newest = result.first()
            if newest is None or newest.version != version or newest.source != source:
                return False
            await session.delete(newest)
            await session.commit()
            return True

    async def contract_versions(
        self, *, contract_id: str | None = None, project_id: str | None = None
    ) -> Sequence[ContractVersionRow]:
        """Every version of the contract named by its id or its PSA project, oldest first."""
        if (contract_id is None) == (project_id is None):
            raise ValueError("name the contract by contract_id or by project_id")
        query = select(ContractVersionRow)
        if contract_id is not None:
            query = query.where(ContractVersionRow.contract_id == contract_id)
        else:
            query = query.where(ContractVersionRow.project_id == project_id)
        async with self._sessions() as session:
            result = await session.exec(query.order_by(col(ContractVersionRow.version)))
            return result.all()

    # Sweep checkpoints ---------------------------------------------------------------

    async def sweep_checkpoint(self, name: str) -> datetime | None:
        """How far the sweep `name` has looked; None before its first run."""
        async with self._sessions() as session:
            row = await session.get(SweepCheckpoint, name)
            return None if row is None else row.position

    async def advance_sweep_checkpoint(self, name: str, position: datetime) -> datetime:
        """Move the checkpoint to `position`, never back; the checkpoint as it now stands.

        Sweeps overlap (a retried activity, two workers): the one that saw less never undoes
        the progress of the one that saw more. One conditional UPDATE decides, so it holds
        on SQLite (which has no row locks) as on PostgreSQL.
        """
        table = cast(sa.Table, sa.inspect(SweepCheckpoint).local_table)
        forward = (
            sa.update(table)
            .where(table.c.name == name, table.c.position < position)
            .values(position=position, updated_at=utcnow())
        )
        for _ in range(3):  # a racing first insert makes the next round an update
            async with self.engine.begin() as conn:
                moved = await conn.execute(forward)
                if moved.rowcount:
                    return position
                current: datetime | None = (
                    await conn.execute(sa.select(table.c.position).where(table.c.name == name))
                ).scalar_one_or_none()
            if current is not None:
                if current >= position:
                    return current
                continue  # inserted between our UPDATE and SELECT: update it now
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        sa.insert(table).values(name=name, position=position, updated_at=utcnow())
                    )
                return position
            except IntegrityError:
                continue
        raise RuntimeError(f"could not advance sweep checkpoint {name!r}")

    async def ping(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return True
