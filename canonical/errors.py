"""Domain errors raised by canonical business rules.

They subclass ``ValueError`` on purpose: raised inside a pydantic validator they become a
validation error that names the field, and raised elsewhere they stay ordinary, catchable
value errors that carry the facts needed to explain them.
"""

from __future__ import annotations

from datetime import date

from pydantic import ValidationError

__all__ = [
    "CurrencyMismatch",
    "InvalidTransition",
    "NoRate",
    "UnknownOwnership",
    "explain",
    "field_path",
]


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies met where one currency is required."""

    def __init__(self, expected: str, got: str, *, where: str | None = None) -> None:
        self.expected = expected
        self.got = got
        self.where = where
        place = f" in {where}" if where else ""
        super().__init__(f"currency mismatch{place}: {expected} vs {got}; amounts are never mixed")


class NoRate(ValueError):
    """A rate card has no entry for a role on a date, so the time cannot be priced."""

    def __init__(self, role: str, on: date) -> None:
        self.role = role
        self.on = on
        super().__init__(f"no rate for role {role!r} effective on {on.isoformat()}")


class InvalidTransition(ValueError):
    """A status change that the lifecycle does not allow (e.g. a paid invoice back to draft)."""

    def __init__(self, entity: str, current: str, target: str) -> None:
        self.entity = entity
        # str() so a StrEnum status reads as its value, not as its enum repr
        self.current = str(current)
        self.target = str(target)
        super().__init__(f"{entity} cannot go from {self.current!r} to {self.target!r}")


class UnknownOwnership(KeyError):
    """No system of record is declared for an entity or field; ownership must be explicit."""

    def __init__(self, entity: str, field: str | None = None) -> None:
        self.entity = entity
        self.field = field
        what = f"{entity}.{field}" if field else entity
        super().__init__(f"no owning system declared for {what}")

    def __str__(self) -> str:
        return str(self.args[0])


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("lines", 2, "unit_price")`` as ``lines[2].unit_price``, the way people write it."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def explain(exc: ValidationError) -> list[str]:
    """One ``field: reason`` line per problem, for exceptions shown to people and audit logs."""
    lines = []
    for err in exc.errors(include_url=False):
        where = field_path(tuple(err["loc"])) or exc.title
        lines.append(f"{where}: {err['msg']}")
    return lines
