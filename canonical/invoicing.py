"""What finance sees of a draft invoice and what it may change on it.

Small by design: a draft's lines are grouped by task and role, so a period of 20,000 time
entries still fits in a workflow payload; the entries themselves stay in q2c's store.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import Field

from canonical._base import CanonicalModel

__all__ = [
    "AdjustmentKind",
    "AdjustmentLine",
    "DraftLine",
    "DraftView",
    "InvoiceAdjustment",
]


class AdjustmentKind(StrEnum):
    WRITE_OFF = "write_off"
    DISCOUNT = "discount"


class AdjustmentLine(CanonicalModel):
    kind: AdjustmentKind
    description: str = Field(min_length=1, max_length=200)
    #: What the customer is not charged, as a positive amount in the draft's currency.
    amount: Decimal = Field(gt=0)


class InvoiceAdjustment(CanonicalModel):
    """Write-off or discount lines added to the draft by finance: the `adjust` signal/update.

    `adjustment_id` makes a delivery safe to repeat: the CLI makes one per command, and a run
    applies each id once however often it arrives (signal, update, or both). Without an id
    (a message from before ids existed) the run falls back to the adjustment's content.
    """

    adjustment_id: str | None = Field(default=None, min_length=1, max_length=64)
    approver: str = Field(min_length=3, max_length=254)
    reason: str = Field(min_length=1, max_length=1000)
    lines: list[AdjustmentLine] = Field(min_length=1)


#: Sources listed per draft line (the count is always complete; the draft in the store
#: holds every one).
SOURCES_LISTED = 10


class DraftLine(CanonicalModel):
    description: str
    quantity: Decimal
    unit_price: Decimal
    net: Decimal
    tax: Decimal
    total: Decimal
    #: Where the line comes from: the contract version it was rated under, and the time
    #: entries, fee, instalment, milestone or expenses that produced it (the first few).
    contract_version: int | None = None
    sources: list[str] = Field(default_factory=list)
    source_count: int = 0


class DraftView(CanonicalModel):
    """The draft invoice as finance reviews it (small: lines are grouped by task and role)."""

    draft_id: str
    currency: str
    lines: list[DraftLine]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    hours: Decimal
    overage: Decimal
    time_entries: int
    rejected_entries: int
    adjustments: list[InvoiceAdjustment] = Field(default_factory=list)
    #: Numbers of the invoices already issued for this project and period: when not empty,
    #: this draft is a supplementary invoice billing only time those did not bill.
    supplementary_to: list[str] = Field(default_factory=list)

    @property
    def supplementary(self) -> bool:
        return bool(self.supplementary_to)
