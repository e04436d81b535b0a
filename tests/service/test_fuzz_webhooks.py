"""Property-based fuzzing of every webhook endpoint over a real socket, the service under
uvicorn as `q2c service` runs it, against the session's Temporal dev server and a SQLite store.

Each test feeds one kind of hostile delivery to each endpoint and checks three things: the
answer is the expected 4xx (never a 5xx), the connection answers at all (httpx raises on a
reset or dropped connection), and nothing was started: the store holds no inbound event and
no exception, and Temporal lists no run on the service's task queue.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors.signing import sign
from tests.fixtures.webhooks import ENDPOINTS, Endpoint, dumps
from tests.service.conftest import ExposedService

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name),
]

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Text fields each event must carry as non-empty text; anything else there is refused.
TEXT_FIELDS = {
    "salesforce": [
        "eventId",
        "eventType",
        "organizationId",
        "occurredAt",
        "sobject.Id",
        "sobject.Name",
        "sobject.StageName",
        "sobject.CloseDate",
    ],
    "salesforce-change-order": [
        "eventId",
        "eventType",
        "organizationId",
        "occurredAt",
        "sobject.Id",
        "sobject.Name",
        "sobject.Status__c",
    ],
    "stripe": ["id", "type", "data.object.id", "data.object.customer", "data.object.currency"],
    "psa": ["eventId", "projectId", "milestoneId", "completedOn"],
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
#: What a sender might put where text is expected, other than non-empty text.
not_text = json_values.filter(lambda v: not isinstance(v, str)) | st.just("")
#: Raw JSON text `json.dumps` does not write: numbers no field can hold, escapes no store takes.
raw_hostile = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e400",
        "-1e-400",
        "9" * 40,
        '"\\u0000"',
        '"\\udc00"',
        '{"\\udc00": 1}',
        '{"k": 1, "k": 2}',
        "[[[[[[]]]]]]",
        "[" * 40 + "]" * 40,
    ]
)
RAW = "\x01raw\x01"
#: What HTTP lets a header carry (httpx refuses control characters before sending).
header_names = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=30,
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=["Cc"]),
    max_size=200,
).map(str.strip)


def keys_of(value: Any) -> list[str]:
    """Every key of a nested event, so random objects use the names parsers look for."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *keys_of(item))]
    return []


def replaced(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    holder = changed
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return changed


def near_events(endpoint: Endpoint) -> st.SearchStrategy[Any]:
    """Objects with the event's own field names and random values, at any depth."""
    names = st.sampled_from(sorted(set(keys_of(endpoint.event()))))
    return st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=8)
        ),
        max_leaves=30,
    )


async def fuzz(service: ExposedService, check: Callable[[httpx.Client], None]) -> None:
    """Run hypothesis's `check` in a thread with a blocking client: the service under test
    is served by this test's event loop, which must stay free to answer."""

    def run() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            check(client)

    await asyncio.to_thread(run)


async def assert_nothing_started(service: ExposedService) -> None:
    assert service.quiet.inbound_events() == []
    assert service.quiet.exceptions() == []
    assert await service.quiet.runs() == []


async def test_unsigned_garbage_is_refused(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """Fault: random bytes, unsigned or under a random signature header.
    Assertion: 401 every time, and nothing recorded or started."""

    @FUZZ
    @given(body=st.binary(max_size=4096), header=st.none() | header_values)
    def check(http: httpx.Client, body: bytes, header: str | None) -> None:
        headers = [] if header is None else [(endpoint.header.encode(), header.encode("latin-1"))]
        answer = http.post(endpoint.path, content=body, headers=headers)
        assert answer.status_code == 401, answer.text

    await fuzz(exposed_service, check)
    await assert_nothing_started(exposed_service)


async def test_signed_garbage_is_refused(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """Fault: correctly signed bodies that are random bytes, nesting up to 5,000 deep, random
    JSON, or objects built of the event's own field names with random values (the parsers
    behind the signature).
    Assertion: 400 (or 200 "ignored" for a well-formed event of another type), never a 5xx
    and never an accepted event: nothing recorded or started."""
    secret = exposed_service.secret(endpoint)
    bodies = (
        st.binary(max_size=4096)
        | st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth)
        | json_values.map(lambda v: json.dumps(v).encode())
        | near_events(endpoint).map(lambda v: json.dumps(v).encode())
    )

    @FUZZ
    @given(body=bodies)
    def check(http: httpx.Client, body: bytes) -> None:
        answer = http.post(endpoint.path, content=body, headers=endpoint.signed(body, secret))
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200:
            assert "ignored" in answer.json()
        else:
            assert answer.json()["error"]

    await fuzz(exposed_service, check)
    await assert_nothing_started(exposed_service)


async def test_tampered_valid_events_are_refused(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """Fault: a valid, correctly signed event whose bytes are changed after signing (bytes
    flipped, cut or inserted), or whose signature is re-dated to the past or future.
    Assertion: 401 every time, and nothing recorded or started."""
    secret = exposed_service.secret(endpoint)
    original = dumps(endpoint.event())  # one event: hypothesis replays draws against it

    @FUZZ
    @given(
        data=st.data(),
        shift=st.sampled_from([0, -3600, -400, 400, 86400]),
    )
    def check(http: httpx.Client, data: st.DataObject, shift: int) -> None:
        body = original
        signature = sign(body, secret, at=time.time() + shift)
        if shift == 0:  # the signature is fresh: the body must change
            at = data.draw(st.integers(0, len(body) - 1))
            cut = data.draw(st.integers(0, 8))
            insert = data.draw(st.binary(max_size=8))
            body = body[:at] + insert + body[at + cut :]
            assume(body != original)
        answer = http.post(endpoint.path, content=body, headers={endpoint.header: signature})
        assert answer.status_code == 401, answer.text

    await fuzz(exposed_service, check)
    await assert_nothing_started(exposed_service)


async def test_signed_events_with_type_confused_fields_are_refused(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """Fault: a valid event, correctly signed, with one text field replaced by a number, a
    boolean, null, a list, an object, an empty string, or raw JSON no field can hold (NaN,
    1e400, a NUL or unpaired surrogate escape, a duplicate key, deep brackets).
    Assertion: 400 naming that field (or a part of it; too deep nesting is named as such),
    and nothing recorded or started."""
    secret = exposed_service.secret(endpoint)

    @FUZZ
    @given(
        field=st.sampled_from(TEXT_FIELDS[endpoint.name]),
        value=not_text.map(lambda v: json.dumps(v)) | raw_hostile,
    )
    def check(http: httpx.Client, field: str, value: str) -> None:
        text = json.dumps(replaced(endpoint.event(), field, RAW)).replace(json.dumps(RAW), value)
        body = text.encode()
        answer = http.post(endpoint.path, content=body, headers=endpoint.signed(body, secret))
        assert answer.status_code == 400, answer.text
        named = answer.json().get("field")  # the field, or the part of it that is refused
        if named is None:  # nesting is counted before parsing, where no field is known yet
            assert "nests deeper" in answer.json()["error"], answer.text
        else:
            assert named == field or named.startswith((f"{field}.", f"{field}[")), answer.text

    await fuzz(exposed_service, check)
    await assert_nothing_started(exposed_service)


async def test_random_headers_do_not_get_past_the_signature(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """Fault: a valid event sent with random headers: random names and values, a random
    Content-Type and Content-Encoding, and no signature header, one of random text, or
    one of a real signature's shape with random digits.
    Assertion: 401, never a 5xx or a reset, and nothing recorded or started."""

    forged = st.builds(
        lambda t, digest: f"t={t},v1={digest}",
        st.integers(0, 10**12),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    )

    @FUZZ
    @given(
        extra=st.dictionaries(header_names, header_values, max_size=8),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "*/*"]
        ),
        encoding=st.sampled_from([None, "gzip", "deflate", "br", "identity"]),
        signature=st.none() | header_values | forged,
    )
    def check(
        http: httpx.Client,
        extra: dict[str, str],
        content_type: str,
        encoding: str | None,
        signature: str | None,
    ) -> None:
        reserved = {"host", "content-length", "transfer-encoding", "connection", "expect"}
        headers = [
            (name.encode(), value.encode("latin-1"))
            for name, value in extra.items()
            if name.lower() not in reserved and name.lower() != endpoint.header.lower()
        ]
        headers.append((b"content-type", content_type.encode()))
        if encoding is not None:
            headers.append((b"content-encoding", encoding.encode()))
        if signature is not None:
            headers.append((endpoint.header.encode(), signature.encode("latin-1")))
        body = dumps(endpoint.event())
        answer = http.post(endpoint.path, content=body, headers=headers)
        assert answer.status_code == 401, answer.text

    await fuzz(exposed_service, check)
    await assert_nothing_started(exposed_service)
