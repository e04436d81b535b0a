"""Revenue deferred by account_invoice_defer, recognized month by month up to a day q2c names.

account_invoice_defer defers an invoice line's revenue when the invoice is posted (a
draft deferral), moves it to the deferred revenue account when the deferral runs, and
then books one recognition move per accounting period of the span, all of them at once,
future months included, each prorated by days. q2c recognizes revenue as finance closes
months: `q2c_recognize` runs the company's deferrals and books the periods that start on
or before `up_to` only (a later call books the next months; a period already booked is
never booked twice). A span of whole months is recognized in equal monthly amounts (a
3,000 fee over January to March is 1,000 a month, not 1,033.33 for January); the last
month takes the rounding remainder, as the module does. Other spans keep the module's
daily proration.

q2c's own invoices are posted with their taxes as q2c rated them (`Invoice`).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

_UP_TO = "q2c_recognize_up_to"
_TAXES_RATED = "q2c_taxes_rated"


def _whole_months(start: dt.date, end: dt.date) -> int | None:
    """The number of months from `start` to `end` when they are whole months, else None."""
    if start.day != 1 or (end + dt.timedelta(days=1)).day != 1:
        return None
    return (end.year - start.year) * 12 + end.month - start.month + 1


class InvoiceDeferred(metaclass=PoolMeta):  # type: ignore[metaclass]  # merged into the model
    __name__ = "account.invoice.deferred"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()  # type: ignore[misc]
        cls.__rpc__["q2c_recognize"] = RPC(readonly=False)

    @classmethod
    def q2c_recognize(cls, company_id: int, up_to: dt.date) -> None:
        """Run the company's deferrals started by `up_to`, and book their months up to it.

        Idempotent: a running deferral gets only the months it lacks, and one whose last
        month is booked is closed.
        """
        pool = Pool()
        pool.get("ir.model.access").check(cls.__name__, "write")
        # As the module's own button and wizard: the checks are the access check above.
        with Transaction().set_context(**{_UP_TO: up_to}), without_check_access():
            drafts = cls.search(
                [
                    ("company", "=", company_id),
                    ("state", "=", "draft"),
                    ("start_date", "<=", up_to),
                ]
            )
            if drafts:
                cls.run(drafts)
            running = cls.search([("company", "=", company_id), ("state", "=", "running")])
            if running:
                cls.create_moves(running)
                cls.close_try(running)

    @classmethod
    def create_moves(cls, deferrals: list[Any], _exclude: Any = None) -> None:
        up_to = Transaction().context.get(_UP_TO)
        if up_to is None:
            super().create_moves(deferrals, _exclude=_exclude)  # type: ignore[misc]
            return
        pool = Pool()
        period_model = pool.get("account.period")
        move_model = pool.get("account.move")
        exclude = set(_exclude or [])
        moves = []
        for deferral in deferrals:
            periods = period_model.search(
                [
                    ("company", "=", deferral.company.id),
                    ("type", "=", "standard"),
                    ("start_date", "<=", min(deferral.end_date, up_to)),
                    ("end_date", ">=", deferral.start_date),
                ]
            )
            booked = {m.period for m in deferral.moves if m not in exclude}
            for period in sorted(set(periods) - booked, key=lambda p: p.start_date):
                moves.append(deferral.get_move(period))
        move_model.save(moves)
        # The last month takes what rounding left, as the module's own create_moves does.
        with move_model.bulk_save() as save:
            for deferral in deferrals:
                if deferral.moves:
                    last_move = deferral.moves[-1]
                    if last_move.period.end_date >= deferral.end_date:
                        remainder = deferral.amount_remainder
                        if remainder:
                            for line in last_move.lines:
                                if line.debit:
                                    line.debit -= remainder
                                else:
                                    line.credit -= remainder
                            last_move.lines = last_move.lines
                            save.push(last_move)
        move_model.post(moves)

    def get_move(self, period: Any = None) -> Any:
        move = super().get_move(period)  # type: ignore[misc]
        deferral: Any = self  # the fields live on the model this class is merged into
        months = _whole_months(deferral.start_date, deferral.end_date)
        if period is None or months is None:
            return move
        amount: Decimal = abs(deferral.company.currency.round(deferral.amount / months))
        for line in move.lines:
            if line.debit:
                line.debit = amount
            else:
                line.credit = amount
        return move


class Invoice(metaclass=PoolMeta):  # type: ignore[metaclass]  # merged into the model
    __name__ = "account.invoice"

    @classmethod
    def _check_taxes(cls, invoices: list[Any]) -> None:
        """Skipped when q2c posts its own invoice (context `q2c_taxes_rated`).

        q2c chooses each line's tax itself (the customer's country and tax regime), and a
        deferred line carries the fee product only so that account_invoice_defer defers
        it: the product's default taxes are not the line's, and the warning "does not
        have the default taxes" would refuse the posting.
        """
        if Transaction().context.get(_TAXES_RATED):
            return
        super()._check_taxes(invoices)  # type: ignore[misc]
