"""Which system of record owns which field, and how a record survives a sync.

Ownership is a table, not code paths: changing who wins for a field is a one-line edit here,
and every sync (CRM -> ERP customer, PSA -> billing time, billing -> CRM status) reads it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel

from canonical.errors import UnknownOwnership

__all__ = [
    "ENTITY_OWNERS",
    "FIELD_OWNERS",
    "Entity",
    "System",
    "owner_of",
    "survive",
]


class System(StrEnum):
    CRM = "crm"
    PSA = "psa"
    BILLING = "billing"
    ERP = "erp"


class Entity(StrEnum):
    ACCOUNT = "account"
    CONTACT = "contact"
    CUSTOMER = "customer"
    OPPORTUNITY = "opportunity"
    CONTRACT_TERMS = "contract_terms"
    RATE_CARD = "rate_card"
    MILESTONE = "milestone"
    CHANGE_ORDER = "change_order"
    PROJECT = "project"
    TASK = "task"
    TIME_ENTRY = "time_entry"
    EXPENSE = "expense"
    INVOICE = "invoice"
    PAYMENT = "payment"


# The system of record for an entity as a whole; a field not listed in FIELD_OWNERS follows it.
ENTITY_OWNERS: dict[Entity, System] = {
    Entity.ACCOUNT: System.CRM,
    Entity.CONTACT: System.CRM,
    Entity.CUSTOMER: System.ERP,  # the customer financial master
    Entity.OPPORTUNITY: System.CRM,
    Entity.CONTRACT_TERMS: System.CRM,
    Entity.RATE_CARD: System.CRM,
    Entity.MILESTONE: System.CRM,
    Entity.CHANGE_ORDER: System.CRM,
    Entity.PROJECT: System.PSA,
    Entity.TASK: System.PSA,
    Entity.TIME_ENTRY: System.PSA,
    Entity.EXPENSE: System.PSA,
    Entity.INVOICE: System.BILLING,
    Entity.PAYMENT: System.BILLING,
}

# Fields whose owner differs from their entity's: who people talk to lives in the CRM, what
# finance relies on lives in the ERP, delivery facts in the PSA, billing facts in billing.
FIELD_OWNERS: dict[tuple[Entity, str], System] = {
    (Entity.CUSTOMER, "name"): System.CRM,
    (Entity.CUSTOMER, "addresses"): System.CRM,
    (Entity.CUSTOMER, "contacts"): System.CRM,
    (Entity.CUSTOMER, "legal_entity"): System.ERP,
    (Entity.CUSTOMER, "tax_id"): System.ERP,
    (Entity.CUSTOMER, "currency"): System.ERP,
    (Entity.CUSTOMER, "payment_terms"): System.ERP,
    (Entity.PROJECT, "tasks"): System.PSA,
    (Entity.PROJECT, "budget"): System.PSA,
    (Entity.PROJECT, "milestones"): System.PSA,  # completion is a delivery fact
    (Entity.PROJECT, "rate_card"): System.CRM,  # prices are commercial terms
    (Entity.PROJECT, "billing_type"): System.CRM,
    (Entity.PROJECT, "po_number"): System.CRM,
    (Entity.PROJECT, "customer_id"): System.ERP,
    (Entity.PROJECT, "legal_entity_code"): System.ERP,
    (Entity.MILESTONE, "status"): System.PSA,
    (Entity.MILESTONE, "completed_on"): System.PSA,
    (Entity.TIME_ENTRY, "billed"): System.BILLING,
    (Entity.EXPENSE, "billed"): System.BILLING,
    (Entity.INVOICE, "status"): System.BILLING,
    (Entity.INVOICE, "number"): System.BILLING,
    (Entity.INVOICE, "customer_id"): System.ERP,
    (Entity.INVOICE, "legal_entity_code"): System.ERP,
}

# Each system owns its own key in an external_ids map, so these maps merge instead of winning.
_MERGED_FIELDS = frozenset({"external_ids"})

M = TypeVar("M", bound=BaseModel)


def _entity(entity: Entity | str) -> Entity:
    try:
        return Entity(entity)
    except ValueError:
        raise UnknownOwnership(str(entity)) from None


def owner_of(entity: Entity | str, field: str) -> System:
    """The system of record for ``entity.field``."""
    key = _entity(entity)
    owner = FIELD_OWNERS.get((key, field))
    if owner is not None:
        return owner
    if key not in ENTITY_OWNERS:
        raise UnknownOwnership(key, field)
    return ENTITY_OWNERS[key]


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | dict) and not value)


def survive(entity: Entity | str, current: M, incoming: M, source: System | str) -> M:
    """Merge ``incoming`` (as reported by ``source``) into ``current`` field by field.

    A field takes the incoming value when ``source`` owns it, or when ``current`` has
    nothing there yet (a fact from a non-owner beats no fact); otherwise the current value
    survives. ``external_ids`` maps are merged. The result is validated like any record.
    """
    if type(current) is not type(incoming):
        raise TypeError(f"cannot merge a {type(incoming).__name__} into a {type(current).__name__}")
    system = System(source)
    merged: dict[str, Any] = {}
    for name in type(current).model_fields:
        ours, theirs = getattr(current, name), getattr(incoming, name)
        if name in _MERGED_FIELDS and isinstance(ours, dict) and isinstance(theirs, dict):
            merged[name] = {**ours, **theirs}
        elif owner_of(entity, name) == system or (_missing(ours) and not _missing(theirs)):
            merged[name] = theirs
        else:
            merged[name] = ours
    return type(current).model_validate(merged)
