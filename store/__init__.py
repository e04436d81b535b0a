"""q2c's own database: cross-reference ids, the audit trail, exceptions, drafts, contracts."""

from store.models import (
    AuditEntry,
    ContractVersionRow,
    CrossReference,
    ExceptionRecord,
    InboundEvent,
    InvoiceDraft,
    SweepCheckpoint,
)
from store.repository import CrossReferenceConflict, Store, StoreNotMigrated, create_engine

__all__ = [
    "AuditEntry",
    "ContractVersionRow",
    "CrossReference",
    "CrossReferenceConflict",
    "ExceptionRecord",
    "InboundEvent",
    "InvoiceDraft",
    "Store",
    "StoreNotMigrated",
    "SweepCheckpoint",
    "create_engine",
]
