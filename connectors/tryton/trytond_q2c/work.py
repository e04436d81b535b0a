"""`project.work.number` set by q2c when it creates a project.

Tryton numbers works from a sequence and declares the number read-only, so two projects
created at once race on the sequence ("The number on work must be unique"), and nothing
stops two creates of the same project. q2c numbers its projects and their tasks from its
own key instead: no sequence is used, and the unique number makes Tryton refuse the
second create of one project, which q2c then finds. As with a party's code, the number
can be given at creation only; works created without one still take the sequence's.
"""

from __future__ import annotations

from trytond.pool import PoolMeta
from trytond.pyson import Eval


class Work(metaclass=PoolMeta):  # type: ignore[metaclass]  # Tryton merges it into the model
    __name__ = "project.work"

    @classmethod
    def __setup__(cls) -> None:
        super().__setup__()  # type: ignore[misc]
        cls.number.readonly = False
        cls.number.states = {
            **cls.number.states,
            "readonly": Eval("id", -1) >= 0,
        }
