"""`timesheet.line.q2c_link_invoice_lines`: mark time billed by an invoice q2c posted."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from trytond.exceptions import UserError
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import without_check_access

#: Invoice states whose lines may no longer lose the time they bill.
_FINAL_STATES = ("posted", "paid")


class Line(metaclass=PoolMeta):  # type: ignore[metaclass]  # Tryton merges it into the model
    __name__ = "timesheet.line"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()  # type: ignore[misc]
        cls.__rpc__["q2c_link_invoice_lines"] = RPC(readonly=False)

    @classmethod
    def q2c_link_invoice_lines(cls, links: list[list[int | None]]) -> None:
        """Point each timesheet line at an invoice line, or at none (`[line, None]`).

        Idempotent: a line already linked as asked is left alone. Refused, for the whole
        call: a line billed on another invoice line, an unlink from a posted or paid
        invoice, an invoice line that is not a customer invoice's line of the same company
        as the time, or from a cancelled invoice.
        """
        pool = Pool()
        access = pool.get("ir.model.access")
        invoice_line_model = pool.get("account.invoice.line")
        access.check(cls.__name__, "write")
        access.check("account.invoice.line", "read")

        wanted: dict[int, int | None] = {}
        for pair in links:
            line_id, target = pair
            if line_id is None:
                raise UserError("q2c: a timesheet line id is missing")
            wanted[int(line_id)] = int(target) if target is not None else None
        # `search` applies the user's record rules (companies) where `browse` would not.
        lines = cls.search([("id", "in", list(wanted))])
        missing = set(wanted) - {line.id for line in lines}
        if missing:
            raise UserError(f"q2c: no timesheet lines {sorted(missing)}")
        target_ids = {t for t in wanted.values() if t is not None}
        targets = {il.id: il for il in invoice_line_model.search([("id", "in", list(target_ids))])}
        unknown = target_ids - set(targets)
        if unknown:
            raise UserError(f"q2c: no invoice lines {sorted(unknown)}")

        changes: dict[int | None, list[Any]] = defaultdict(list)
        for line in lines:
            target = wanted[line.id]
            current = line.invoice_line
            if (current.id if current else None) == target:
                continue
            if target is None:
                if current.invoice and current.invoice.state in _FINAL_STATES:
                    raise UserError(
                        f"q2c: timesheet line {line.id} is billed on invoice "
                        f"{current.invoice.rec_name} ({current.invoice.state})"
                    )
            else:
                if current is not None:
                    raise UserError(
                        f"q2c: timesheet line {line.id} is already billed on invoice line "
                        f"{current.id}"
                    )
                cls._q2c_check_target(line, targets[target])
            changes[target].append(line)
        if not changes:
            return
        args: list[Any] = []
        for target, records in changes.items():
            args.extend([records, {"invoice_line": target}])
        # The field is read-only to clients; the checks above stand in for the button
        # that would otherwise be the only writer.
        with without_check_access():
            cls.write(*args)

    @classmethod
    def _q2c_check_target(cls, line: Any, invoice_line: Any) -> None:
        invoice = invoice_line.invoice
        if invoice_line.type != "line" or invoice is None or invoice.type != "out":
            raise UserError(
                f"q2c: invoice line {invoice_line.id} is not a line of a customer invoice"
            )
        if invoice.state == "cancelled":
            raise UserError(f"q2c: invoice {invoice.rec_name} is cancelled")
        if invoice.company != line.company:
            raise UserError(
                f"q2c: timesheet line {line.id} and invoice line {invoice_line.id} "
                "belong to different companies"
            )
