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
    def preprocess_values(cls, mode: str, values: dict[str, Any]) -> dict[str, Any]:
        values = super().preprocess_values(mode, values)  # type: ignore[misc]
        if "status" in values and "q2c_done_on" not in values:
            if values["status"] == cls._q2c_done_status():
                if mode == "create":
                    values["q2c_done_on"] = Pool().get("ir.date").today()
            else:
                values["q2c_done_on"] = None
        return values

    @classmethod
    def write(cls, *args: Any) -> None:
        # Works entering Done get today's date; those already Done keep theirs.
        done = cls._q2c_done_status()
        today = Pool().get("ir.date").today()
        actions = iter(args)
        to_date: list[Any] = []
        for records, values in zip(actions, actions, strict=True):
            if values.get("status") == done:
                to_date.extend(r for r in records if r.status.id != done or not r.q2c_done_on)
        super().write(*args)  # type: ignore[misc]
        if to_date:
            super().write(to_date, {"q2c_done_on": today})  # type: ignore[misc]
