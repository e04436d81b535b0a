"""A SOQL subset: what an integration such as q2c writes, checked the way Salesforce checks it.

    SELECT f1, f2, Parent.Field | COUNT()
    FROM Object
    [WHERE cond]      cond: f op literal | f [NOT] IN (literals) | f LIKE 'pat%'
                            | cond AND cond | cond OR cond | NOT cond | (cond)
    [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

Keywords and names are case-insensitive, string comparisons too (as in Salesforce), ids
compare in their 18-character form. Syntax errors are MALFORMED_QUERY, unknown names
INVALID_FIELD / INVALID_TYPE, literals of the wrong type INVALID_QUERY_FILTER_OPERATOR.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

from standins.salesforce.schema import (
    SOBJECTS,
    Field,
    SalesforceError,
    SObject,
    format_datetime,
    normalize_id,
)

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
MAX_PARENT_LEVELS = 5
_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "like",
        "order",
        "by",
        "asc",
        "desc",
        "nulls",
        "first",
        "last",
        "limit",
        "offset",
        "true",
        "false",
        "null",
        "count",
    }
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "'": "'",
    '"': '"',
    "\\": "\\",
    "%": "\\%",
    "_": "\\_",
}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int

    def keyword(self, *words: str) -> bool:
        return self.kind == "name" and self.text.lower() in words


@dataclass(frozen=True)
class Literal:
    kind: str  # string number date datetime boolean null
    value: Any


@dataclass
class FieldPath:
    text: str
    pos: int
    # Resolved: the reference fields walked from the queried object, then the field read.
    via: list[Field] = field(default_factory=list)
    target: Field | None = None


@dataclass
class Comparison:
    path: FieldPath
    op: str  # = != < <= > >= like in notin
    value: Literal | list[Literal]


@dataclass
class Logical:
    op: str  # and or
    items: list[Condition]


@dataclass
class Negation:
    item: Condition


Condition = Comparison | Logical | Negation


@dataclass
class OrderItem:
    path: FieldPath
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    sobject: SObject
    fields: list[FieldPath]
    count_only: bool
    where: Condition | None
    order: list[OrderItem]
    limit: int | None
    offset: int


def parse(text: str) -> Query:
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    # -- token helpers

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.malformed(None)
        self.i += 1
        return tok

    def at(self, char: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.text == char

    def accept(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.keyword(*words):
            self.i += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            raise self.malformed(self.peek(), expecting=word.upper())

    def expect_punct(self, char: str) -> None:
        tok = self.next()
        if tok.text != char:
            raise self.malformed(tok, expecting=char)

    def malformed(self, tok: Token | None, *, expecting: str | None = None) -> SalesforceError:
        pos = len(self.text) if tok is None else tok.pos
        found = "<EOF>" if tok is None else tok.text
        detail = (
            f"expecting '{expecting}', found '{found}'"
            if expecting
            else f"unexpected token: '{found}'"
        )
        return SalesforceError(
            400,
            "MALFORMED_QUERY",
            f"\n{self.text}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{detail}",
        )

    # -- grammar

    def query(self) -> Query:
        self.expect("select")
        fields: list[FieldPath] = []
        count_only = False
        if self.accept("count"):
            self.expect_punct("(")
            self.expect_punct(")")
            count_only = True
        else:
            fields.append(self.field_path())
            while self.at(","):
                self.i += 1
                fields.append(self.field_path())
        self.expect("from")
        obj_tok = self.next()
        if obj_tok.kind != "name" or obj_tok.text.lower() in _KEYWORDS:
            raise self.malformed(obj_tok)
        obj = _resolve_object(obj_tok.text)
        where = None
        if self.accept("where"):
            where = self.condition()
        order: list[OrderItem] = []
        if self.accept("order"):
            self.expect("by")
            order.append(self.order_item())
            while self.at(","):
                self.i += 1
                order.append(self.order_item())
        limit = self.integer() if self.accept("limit") else None
        offset = self.integer() if self.accept("offset") else 0
        tok = self.peek()
        if tok is not None:
            raise self.malformed(tok)
        query = Query(obj, fields, count_only, where, order, limit, offset)
        _resolve(query, self.text)
        return query

    def integer(self) -> int:
        tok = self.next()
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.malformed(tok)
        return int(tok.text)

    def field_path(self) -> FieldPath:
        tok = self.next()
        if tok.kind != "name" or tok.text.lower() in _KEYWORDS:
            raise self.malformed(tok)
        return FieldPath(tok.text, tok.pos)

    def order_item(self) -> OrderItem:
        path = self.field_path()
        descending = False
        if self.accept("desc"):
            descending = True
        else:
            self.accept("asc")
        nulls_last = descending
        if self.accept("nulls"):
            if self.accept("last"):
                nulls_last = True
            elif self.accept("first"):
                nulls_last = False
            else:
                raise self.malformed(self.peek(), expecting="FIRST or LAST")
        return OrderItem(path, descending, nulls_last)

    def condition(self) -> Condition:
        items = [self.conjunction()]
        while self.accept("or"):
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Logical("or", items)

    def conjunction(self) -> Condition:
        items = [self.unary()]
        while self.accept("and"):
            items.append(self.unary())
        return items[0] if len(items) == 1 else Logical("and", items)

    def unary(self) -> Condition:
        if self.accept("not"):
            return Negation(self.unary())
        if self.at("("):
            self.i += 1
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        path = self.field_path()
        tok = self.next()
        if tok.kind == "op":
            op = "!=" if tok.text == "<>" else tok.text
            return Comparison(path, op, self.literal())
        if tok.keyword("like"):
            return Comparison(path, "like", self.literal())
        negated = False
        if tok.keyword("not"):
            negated = True
            tok = self.next()
        if tok.keyword("in"):
            self.expect_punct("(")
            values = [self.literal()]
            while self.at(","):
                self.i += 1
                values.append(self.literal())
            self.expect_punct(")")
            return Comparison(path, "notin" if negated else "in", values)
        raise self.malformed(tok)

    def literal(self) -> Literal:
        tok = self.next()
        if tok.kind == "string":
            return Literal("string", _unescape(tok.text[1:-1]))
        if tok.kind == "number":
            return Literal("number", Decimal(tok.text))
        if tok.kind == "date":
            return Literal("date", tok.text)
        if tok.kind == "datetime":
            return Literal("datetime", _normalize_datetime(tok.text))
        if tok.keyword("true", "false"):
            return Literal("boolean", tok.text.lower() == "true")
        if tok.keyword("null"):
            return Literal("null", None)
        raise self.malformed(tok)


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise SalesforceError(
                400,
                "MALFORMED_QUERY",
                f"\n{text}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n"
                f"unexpected token: '{text[pos]}'",
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _unescape(raw: str) -> str:
    out = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            out.append(_ESCAPES.get(raw[i + 1], raw[i + 1]))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _normalize_datetime(text: str) -> str:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return format_datetime(moment.astimezone(UTC))


# ---------------------------------------------------------------- name resolution


def _resolve_object(name: str) -> SObject:
    for obj in SOBJECTS.values():
        if obj.name.lower() == name.lower():
            return obj
    raise SalesforceError(
        400,
        "INVALID_TYPE",
        f"\n{name}\n^\nERROR at Row:1:Column:1\nsObject type '{name}' is not supported. "
        "If you are attempting to use a custom object, be sure to append the '__c' after the "
        "entity name. Please reference your WSDL or the describe call for the appropriate names.",
    )


def _resolve(query: Query, text: str) -> None:
    paths = list(query.fields) + [o.path for o in query.order]
    paths += [c.path for c in _comparisons(query.where)]
    for path in paths:
        _resolve_path(query.sobject, path, text)
    for comparison in _comparisons(query.where):
        _check_literal(comparison, text)


def _comparisons(cond: Condition | None) -> list[Comparison]:
    if cond is None:
        return []
    if isinstance(cond, Comparison):
        return [cond]
    if isinstance(cond, Negation):
        return _comparisons(cond.item)
    return [c for item in cond.items for c in _comparisons(item)]


def _resolve_path(obj: SObject, path: FieldPath, text: str) -> None:
    *relationships, name = path.text.split(".")
    if len(relationships) > MAX_PARENT_LEVELS:
        raise _invalid_field(text, path, "relationships can be followed five levels up at most")
    current = obj
    for rel in relationships:
        via = current.relationship(rel)
        if via is None or via.reference_to is None:
            raise _invalid_field(
                text,
                path,
                f"Didn't understand relationship '{rel}' in field path. If you are "
                "attempting to use a custom relationship, be sure to append the '__r' after the "
                "custom relationship name. Please reference your WSDL or the describe call for "
                "the appropriate names.",
            )
        path.via.append(via)
        current = SOBJECTS[via.reference_to]
    target = current.field(name)
    if target is None:
        raise _invalid_field(
            text,
            path,
            f"No such column '{name}' on entity '{current.name}'. If you are attempting to use "
            "a custom field, be sure to append the '__c' after the custom field name. Please "
            "reference your WSDL or the describe call for the appropriate names.",
        )
    path.target = target


def _invalid_field(text: str, path: FieldPath, reason: str) -> SalesforceError:
    return SalesforceError(
        400,
        "INVALID_FIELD",
        f"\n{text}\n{' ' * path.pos}^\nERROR at Row:1:Column:{path.pos + 1}\n{reason}",
    )


_NUMERIC = ("double", "currency", "percent")
_TEXTUAL = ("string", "textarea", "url", "email", "picklist", "multipicklist")


def _check_literal(comparison: Comparison, text: str) -> None:
    field = comparison.path.target
    assert field is not None
    literals = comparison.value if isinstance(comparison.value, list) else [comparison.value]
    for literal in literals:
        if literal.kind == "null":
            continue
        expected: str | None = None
        if field.type in _NUMERIC and literal.kind != "number":
            expected = "double and should not be enclosed in quotes"
        elif field.type == "boolean" and literal.kind != "boolean":
            expected = "boolean and should not be enclosed in quotes"
        elif field.type == "date" and literal.kind != "date":
            expected = "date and should not be enclosed in quotes"
        elif field.type == "datetime" and literal.kind != "datetime":
            expected = "dateTime and should not be enclosed in quotes"
        elif field.type in (*_TEXTUAL, "id", "reference") and literal.kind != "string":
            expected = "string and should be enclosed in quotes"
        elif (
            field.type in ("id", "reference")
            and literal.value
            and comparison.op != "like"
            and normalize_id(literal.value) is None
        ):
            raise SalesforceError(
                400,
                "INVALID_QUERY_FILTER_OPERATOR",
                f"\n{text}\n^\nERROR at Row:1:Column:{comparison.path.pos + 1}\n"
                f"invalid ID field: {literal.value}",
            )
        if comparison.op == "like" and field.type not in (*_TEXTUAL, "id", "reference"):
            expected = "string: LIKE applies to text fields only"
        if expected is not None:
            raise SalesforceError(
                400,
                "INVALID_QUERY_FILTER_OPERATOR",
                f"\n{text}\n^\nERROR at Row:1:Column:{comparison.path.pos + 1}\n"
                f"value of filter criterion for field '{field.name}' must be of type {expected}",
            )


# ---------------------------------------------------------------- evaluation

Lookup = Callable[[str], dict[str, Any] | None]


def run(query: Query, records: list[dict[str, Any]], lookup: Lookup) -> list[dict[str, Any]]:
    """Filter, sort and slice `records`; the caller projects with `project`."""
    rows = [r for r in records if query.where is None or _holds(query.where, r, lookup)]
    if query.order:
        rows.sort(key=cmp_to_key(lambda a, b: _compare_rows(query.order, a, b, lookup)))
    rows = rows[query.offset :]
    if query.limit is not None:
        rows = rows[: query.limit]
    return rows


def project(
    query: Query, record: dict[str, Any], lookup: Lookup, url: Callable[[str, str], str]
) -> dict[str, Any]:
    """The record as the query selected it; parents nest under their relationship name."""
    out: dict[str, Any] = {
        "attributes": {"type": query.sobject.name, "url": url(query.sobject.name, record["Id"])}
    }
    for path in query.fields:
        assert path.target is not None
        node, source = out, record
        for via in path.via:
            assert via.relationship is not None and via.reference_to is not None
            parent_id = source.get(via.name)
            parent = lookup(parent_id) if parent_id else None
            if parent is None:
                node[via.relationship] = None
                break
            nested = node.get(via.relationship) or {
                "attributes": {"type": via.reference_to, "url": url(via.reference_to, parent["Id"])}
            }
            node[via.relationship] = nested
            node, source = nested, parent
        else:
            node[path.target.name] = source.get(path.target.name)
    return out


def _value(path: FieldPath, record: dict[str, Any], lookup: Lookup) -> Any:
    assert path.target is not None
    source: dict[str, Any] | None = record
    for via in path.via:
        parent_id = source.get(via.name) if source else None
        source = lookup(parent_id) if parent_id else None
    return None if source is None else source.get(path.target.name)


def _holds(cond: Condition, record: dict[str, Any], lookup: Lookup) -> bool:
    if isinstance(cond, Logical):
        results = (_holds(item, record, lookup) for item in cond.items)
        return all(results) if cond.op == "and" else any(results)
    if isinstance(cond, Negation):
        return not _holds(cond.item, record, lookup)
    assert cond.path.target is not None
    field = cond.path.target
    actual = _value(cond.path, record, lookup)
    if cond.op in ("in", "notin"):
        assert isinstance(cond.value, list)
        found = any(_equal(field, actual, lit) for lit in cond.value)
        return found if cond.op == "in" else not found
    assert isinstance(cond.value, Literal)
    literal = cond.value
    if cond.op == "=":
        return _equal(field, actual, literal)
    if cond.op == "!=":
        return not _equal(field, actual, literal)
    if actual is None or literal.value is None:
        return False
    if cond.op == "like":
        return _like(str(actual), str(literal.value))
    order = _cmp(_key(field, actual), _key(field, literal.value))
    return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[cond.op]


def _equal(field: Field, actual: Any, literal: Literal) -> bool:
    if literal.value is None or actual is None:
        return literal.value is None and actual is None
    return bool(_key(field, actual) == _key(field, literal.value))


def _key(field: Field, value: Any) -> Any:
    if field.type in _NUMERIC:
        return Decimal(str(value))
    if field.type in ("id", "reference"):
        return normalize_id(str(value)) or str(value)
    if isinstance(value, str):
        return value.lower()
    return value


def _like(actual: str, pattern: str) -> bool:
    regex = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
        i += 1
    return re.fullmatch(regex, actual, re.IGNORECASE | re.DOTALL) is not None


def _cmp(a: Any, b: Any) -> int:
    return -1 if a < b else 1 if a > b else 0


def _compare_rows(
    order: list[OrderItem], a: dict[str, Any], b: dict[str, Any], lookup: Lookup
) -> int:
    for item in order:
        assert item.path.target is not None
        va, vb = _value(item.path, a, lookup), _value(item.path, b, lookup)
        if va is None and vb is None:
            continue
        if va is None or vb is None:
            a_first = (va is None) != item.nulls_last
            return -1 if a_first else 1
        result = _cmp(_key(item.path.target, va), _key(item.path.target, vb))
        if result:
            return -result if item.descending else result
    return 0
