"""`project.disbursement` as q2c's expense: its category, and the q2c invoice that billed it.

An expense is a disbursement paid for the customer (trytond-project-disbursement). That
module knows no category nor who spent it: q2c adds the expense product (Travel,
Lodging...; its name is the category) and reads the payee as the employee. q2c bills
expenses on its own invoice: `q2c_link_invoice_lines` points a disbursement at the
invoice line that billed it, and a linked disbursement has nothing left for Tryton's own
project invoicing to bill (`amount_to_invoice`), as a timesheet line with an invoice line.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from trytond.exceptions import UserError
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import without_check_access

_FINAL_STATES = ("posted", "paid")


class Disbursement(metaclass=PoolMeta):  # type: ignore[metaclass]  # merged into the model
    __name__ = "project.disbursement"

    q2c_product = fields.Many2One(
        "product.product",
        "Expense Category",
        domain=[("type", "=", "service")],
        states={"readonly": Eval("state") != "draft"},
        help="The expense product: its name is the expense's category.",
    )
    q2c_invoice_line = fields.Many2One(
        "account.invoice.line", "q2c Invoice Line", readonly=True, ondelete="RESTRICT"
    )

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()  # type: ignore[misc]
        cls.__rpc__["q2c_link_invoice_lines"] = RPC(readonly=False)

    @property
    def amount_to_invoice(self) -> Decimal:
        if self.q2c_invoice_line:
            return Decimal(0)
        return super().amount_to_invoice  # type: ignore[misc,no-any-return]

    @classmethod
    def q2c_link_invoice_lines(cls, links: list[list[int | None]]) -> None:
        """Point each disbursement at a q2c invoice line, or at none (`[id, None]`).

        The same rules as `timesheet.line.q2c_link_invoice_lines`: idempotent; refused for
        a disbursement billed on another line, an unlink from a posted or paid invoice,
        a line that is not a customer invoice's of the same company, a cancelled invoice,
        or a disbursement that is not validated or paid (not approved).
        """
        pool = Pool()
        access = pool.get("ir.model.access")
        invoice_line_model = pool.get("account.invoice.line")
        access.check(cls.__name__, "write")
        access.check("account.invoice.line", "read")
        wanted: dict[int, int | None] = {}
        for pair in links:
            record_id, target = pair
            if record_id is None:
                raise UserError("q2c: a disbursement id is missing")
            wanted[int(record_id)] = int(target) if target is not None else None
        records = cls.search([("id", "in", list(wanted))])
        missing = set(wanted) - {r.id for r in records}
        if missing:
            raise UserError(f"q2c: no disbursements {sorted(missing)}")
        target_ids = {t for t in wanted.values() if t is not None}
        targets = {il.id: il for il in invoice_line_model.search([("id", "in", list(target_ids))])}
        unknown = target_ids - set(targets)
        if unknown:
            raise UserError(f"q2c: no invoice lines {sorted(unknown)}")
        changes: dict[int | None, list[Any]] = defaultdict(list)
        for record in records:
            target = wanted[record.id]
            current = record.q2c_invoice_line
            if (current.id if current else None) == target:
                continue
            if target is None:
                if current.invoice and current.invoice.state in _FINAL_STATES:
                    raise UserError(
                        f"q2c: disbursement {record.id} is billed on invoice "
                        f"{current.invoice.rec_name} ({current.invoice.state})"
                    )
            else:
                if current is not None:
                    raise UserError(
                        f"q2c: disbursement {record.id} is already billed on invoice line "
                        f"{current.id}"
                    )
                cls._q2c_check_target(record, targets[target])
            changes[target].append(record)
        if not changes:
            return
        args: list[Any] = []
        for target, group in changes.items():
            args.extend([group, {"q2c_invoice_line": target}])
        # Disbursements leave draft read-only; these checks stand in for a button.
        with without_check_access():
            cls.write(*args)

    @classmethod
    def _q2c_check_target(cls, record: Any, invoice_line: Any) -> None:
        if record.state not in ("validated", "paid"):
            raise UserError(f"q2c: disbursement {record.id} is not approved ({record.state})")
        invoice = invoice_line.invoice
        if invoice_line.type != "line" or invoice is None or invoice.type != "out":
            raise UserError(
                f"q2c: invoice line {invoice_line.id} is not a line of a customer invoice"
            )
        if invoice.state == "cancelled":
            raise UserError(f"q2c: invoice {invoice.rec_name} is cancelled")
        if invoice.company != record.company:
            raise UserError(
                f"q2c: disbursement {record.id} and invoice line {invoice_line.id} "
                "belong to different companies"
            )
