"""Reading untrusted webhook bodies: every hostile corner is an `InvalidJson` naming where,
never a RecursionError, a float, an overflow later on, or a silently dropped duplicate."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from connectors.signing import InvalidSignature, sign, verify_signature
from connectors.webhook_json import MAX_DEPTH, InvalidJson, parse

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_plain_event_parses_with_exact_fractions() -> None:
    value = parse(b'{"a": [1, 2.50, "\\u00e9t\\u00e9"], "b": {"c": null, "d": true}}')
    assert value == {"a": [1, Decimal("2.50"), "été"], "b": {"c": None, "d": True}}
    assert isinstance(value["a"][1], Decimal)


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper", None),
        (b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "nests deeper", None),
        (b'{"a": "\xff"}', "not UTF-8", None),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8", None),
        (b'{"id": 1, "data": {"id": 2, "id": 3}}', "duplicate key", "data.id"),
        (b'{"created": NaN}', "NaN is not a JSON number", "created"),
        (b'{"x": [1, -Infinity]}', "-Infinity is not a JSON number", "x[1]"),
        (b'{"created": 9223372036854775808}', "out of range", "created"),
        (b'{"created": ' + b"9" * 5000 + b"}", "out of range", "created"),
        (b'{"amount": 1e400}', "out of range", "amount"),
        (b'{"name": "a\\u0000b"}', "NUL", "name"),
        (b'{"name": "\\ud800"}', "unpaired surrogate", "name"),
        (b'{"\\udfff": 1}', "unpaired surrogate", "\\udfff"),
        (b"{", "not JSON", None),
        (b"", "not JSON", None),
    ],
)
def test_hostile_bodies_are_refused_naming_where(
    body: bytes, message: str, field: str | None
) -> None:
    with pytest.raises(InvalidJson) as refused:
        parse(body)
    assert message in str(refused.value)
    assert refused.value.field == field


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine() -> None:
    assert parse(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse(b'{"a": "' + b"[" * 1000 + b'"}') == {"a": "[" * 1000}
    assert parse(b'{"a": "\\"[[[["}') == {"a": '"[[[['}


def test_a_long_key_is_cut_in_the_field_named() -> None:
    with pytest.raises(InvalidJson) as refused:
        parse(b'{"' + b"k" * 10_000 + b'": NaN}')
    assert refused.value.field is not None and len(refused.value.field) <= 120


@pytest.mark.parametrize(
    "header",
    [
        "t=1764504000,v1=" + "é" * 64,  # hmac.compare_digest refuses non-ASCII str: TypeError
        "t=" + "9" * 400 + ",v1=" + "0" * 64,  # float(int) overflows
        "t=١٧٦٤٥٠٤٠٠٠,v1=" + "0" * 64,  # Unicode digits int() would accept
        "t=-1764504000,v1=" + "0" * 64,
    ],
)
def test_malformed_signature_headers_are_invalid_not_errors(header: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(b"{}", header, "secret", header_name="X-Sig", now=NOW)


def test_the_signed_timestamp_text_is_what_is_verified() -> None:
    header = sign(b"{}", "secret", at=NOW.timestamp())
    verify_signature(b"{}", header, "secret", header_name="X-Sig", now=NOW)
    padded = header.replace("t=", "t=00", 1)  # same number, other signed text
    with pytest.raises(InvalidSignature):
        verify_signature(b"{}", padded, "secret", header_name="X-Sig", now=NOW)
