"""Reading a webhook body someone else wrote: JSON with every hostile corner refused.

`json.loads` alone accepts what no sender of ours means and what q2c cannot carry on:

- bytes that are not UTF-8 (it guesses UTF-16 or UTF-32 too), or an unpaired surrogate
  (`"\\ud800"`), which no database, Temporal payload or log line can encode;
- nesting deep enough to exhaust the interpreter's stack (a `RecursionError`, not a
  `ValueError`), so depth is counted on the text before anything is parsed;
- `NaN`, `Infinity` and numbers too large for any field (a unix time of 10**300 fails
  far downstream, as an overflow, not as bad input);
- duplicate keys, where the last one silently wins and two readers may disagree;
- NUL characters, which PostgreSQL text refuses.

Each refusal is an `InvalidJson` naming, where it can, the field as people write it
(`data.object.amount_paid`). Fractions parse as `Decimal`: money never passes through float.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

from canonical import field_path
from connectors.signing import WebhookError

#: Far deeper than any event we read (a Stripe invoice event nests about 6 levels).
MAX_DEPTH = 32
#: Integers a field may carry: a signed 64-bit range, like Stripe's and the databases'.
MAX_INT = 2**63 - 1
#: Fractions beyond this many digits or this exponent are not amounts anyone sends.
MAX_DECIMAL_DIGITS = 40
MAX_DECIMAL_EXPONENT = 30
#: Longest field path echoed in an answer.
MAX_FIELD = 120

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class InvalidJson(WebhookError):
    """The body is not JSON q2c accepts; `field` names where, when it is known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class _Refused:
    """A value the parser met but q2c refuses; reported with its path after parsing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Pairs(dict[str, Any]):
    """An object whose key `duplicate` appeared more than once."""

    duplicate: str | None = None


def parse(body: bytes | str) -> Any:
    """The JSON value of `body`, or `InvalidJson` saying what is wrong and where."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidJson(f"body is not UTF-8 (byte {exc.start})") from None
    else:
        text = body
    _check_depth(text)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_int,
            parse_float=_decimal,
            parse_constant=_constant,
        )
    except ValueError as exc:
        raise InvalidJson(f"body is not JSON: {exc}") from None
    _check(value, ())
    return value


def _check_depth(text: str) -> None:
    """Refuse nesting beyond `MAX_DEPTH`, counting brackets outside strings."""
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidJson(f"body nests deeper than {MAX_DEPTH} levels")
        elif bracket in "]}":
            depth -= 1


def _object(pairs: list[tuple[str, Any]]) -> _Pairs:
    result = _Pairs()
    for key, value in pairs:
        if key in result and result.duplicate is None:
            result.duplicate = key
        result[key] = value
    return result


def _int(text: str) -> int | _Refused:
    if len(text) > 20 or abs(number := int(text)) > MAX_INT:
        return _Refused("number out of range")
    return number


def _decimal(text: str) -> Decimal | _Refused:
    if len(text) > 2 * MAX_DECIMAL_DIGITS:
        return _Refused("number out of range")
    number = Decimal(text)
    digits = len(number.as_tuple().digits)
    if digits > MAX_DECIMAL_DIGITS or abs(number.adjusted()) > MAX_DECIMAL_EXPONENT:
        return _Refused("number out of range")
    return number


def _constant(text: str) -> _Refused:
    return _Refused(f"{text} is not a JSON number")


def _check(value: Any, path: tuple[str | int, ...]) -> None:
    if isinstance(value, _Refused):
        raise InvalidJson(value.reason, field=_field(path))
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, _Pairs):
        if value.duplicate is not None:
            raise InvalidJson("duplicate key", field=_field((*path, value.duplicate)))
        for key, item in value.items():
            _check_text(key, (*path, key))
            _check(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, (*path, index))


def _check_text(text: str, path: tuple[str | int, ...]) -> None:
    if "\x00" in text:
        raise InvalidJson("contains a NUL character", field=_field(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson("contains an unpaired surrogate", field=_field(path)) from None


def _field(path: tuple[str | int, ...]) -> str:
    """Where, as people write it; a sender's long key is cut (the answer and log echo it)."""
    where = field_path(path) or "body"
    if len(where) > MAX_FIELD:
        where = where[: MAX_FIELD - 1] + "…"
    # A key may hold the very surrogate refused: escape it, or the answer cannot be encoded.
    return where.encode("utf-8", "backslashreplace").decode("utf-8")


def _no_number(value: Any) -> Any:
    """Pydantic reads a number as a unix time for dates; a sender of ours never means that."""
    if isinstance(value, int | float | Decimal):
        raise ValueError("expected an ISO 8601 string, not a number")
    return value


#: A date or time field of an event: ISO 8601 text, never a number taken as a unix time.
IsoDate = Annotated[date, BeforeValidator(_no_number)]
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_no_number)]
