"""`project.work` as q2c needs it: a number set by q2c, and the day a work was set Done.

Tryton numbers works from a sequence and declares the number read-only, so two projects
created at once race on the sequence ("The number on work must be unique"), and nothing
stops two creates of the same project. q2c numbers its projects and their tasks from its
own key instead: no sequence is used, and the unique number makes Tryton refuse the
second create of one project, which q2c then finds. As with a party's code, the number
can be given at creation only; works created without one still take the sequence's.

Tryton records no date for a status change (only the last `write_date`, which any edit
moves), yet a milestone or a fee on completion is billed in the period its task was
done. `q2c_done_on` is set when a work enters the Done status, kept while it stays Done
(later edits do not move it), and cleared when it is reopened.
"""

from __future__ import annotations

from typing import Any

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import without_check_access


class Work(metaclass=PoolMeta):  # type: ignore[metaclass]  # Tryton merges it into the model
    __name__ = "project.work"

    q2c_done_on = fields.Date("Done On", readonly=True, help="The day the work was set Done.")

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()  # type: ignore[misc]
        cls.number.readonly = False
        cls.number.states = {
            **cls.number.states,
            "readonly": Eval("id", -1) >= 0,
        }

    @classmethod
    def _q2c_done_status(cls) -> int:
        model_data = Pool().get("ir.model.data")
        return int(model_data.get_id("project", "work_done_status"))

    @classmethod
    def create(cls, vlist: list[dict[str, Any]]) -> list[Any]:
        works = super().create(vlist)  # type: ignore[misc]
        done = cls._q2c_done_status()
        cls._q2c_set_done_on([w for w in works if w.status.id == done], [])
        return works  # type: ignore[no-any-return]

    @classmethod
    def write(cls, *args: Any) -> None:
        # Works entering Done get today's date, those already Done keep theirs, and those
        # leaving Done lose it.
        done = cls._q2c_done_status()
        actions = iter(args)
        entering: list[Any] = []
        leaving: list[Any] = []
        for records, values in zip(actions, actions, strict=True):
            if "status" not in values:
                continue
            if values["status"] == done:
                entering.extend(r for r in records if not r.q2c_done_on)
            else:
                leaving.extend(r for r in records if r.q2c_done_on)
        super().write(*args)  # type: ignore[misc]
        cls._q2c_set_done_on(entering, leaving)

    @classmethod
    def _q2c_set_done_on(cls, entering: list[Any], leaving: list[Any]) -> None:
        args: list[Any] = []
        if entering:
            args.extend([entering, {"q2c_done_on": Pool().get("ir.date").today()}])
        if leaving:
            args.extend([leaving, {"q2c_done_on": None}])
        if args:
            # The field is read-only to clients: only this module sets it.
            with without_check_access():
                super().write(*args)  # type: ignore[misc]
