"""q2c's own database: cross-reference ids, the audit trail, exceptions."""

from store.models import (
    AuditEntry,
    CrossReference,
    ExceptionRecord,
    InboundEvent,
    InvoiceDraft,
    SweepCheckpoint,
)
from store.repository import CrossReferenceConflict, Store, StoreNotMigrated, create_engine

__all__ = [
    "AuditEntry",
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
