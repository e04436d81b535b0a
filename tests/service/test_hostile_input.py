"""Hostile input on every webhook endpoint, over a real socket to the service under uvicorn:
each kind of bad delivery gets its 4xx (never a 5xx, never a reset connection), the
signature is checked before the body is read as text, and nothing is recorded or started.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from connectors.signing import sign
from settings import Settings
from tests.fixtures.service import running_service
from tests.fixtures.webhooks import ENDPOINTS, STRIPE, Endpoint, dumps
from tests.service.conftest import ExposedService

pytestmark = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)

#: Placeholder for raw JSON text that `json.dumps` cannot write (NaN, 1e400, ...).
RAW = "\x01raw\x01"


@pytest.fixture
async def http(exposed_service: ExposedService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=exposed_service.url, timeout=30) as client:
        yield client


async def post_signed(
    http: httpx.AsyncClient, service: ExposedService, endpoint: Endpoint, body: bytes
) -> httpx.Response:
    headers = endpoint.signed(body, service.secret(endpoint))
    return await http.post(endpoint.path, content=body, headers=headers)


async def assert_nothing_started(service: ExposedService) -> None:
    assert service.quiet.inbound_events() == []
    assert service.quiet.exceptions() == []
    assert await service.quiet.runs() == []


def replaced(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`event` with the field at dotted `path` set to `value`."""
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    holder = changed
    for part in parents:
        holder = holder[part]
    holder[last] = value
    return changed


def with_raw(event: dict[str, Any], path: str, raw: str) -> bytes:
    """The JSON text of `event` with the value at `path` written as `raw` JSON text."""
    return json.dumps(replaced(event, path, RAW)).replace(json.dumps(RAW), raw).encode()


#: Text fields each event must carry as non-empty text.
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
    "stripe": [
        "id",
        "type",
        "data.object.id",
        "data.object.customer",
        "data.object.currency",
    ],
    "psa": ["eventId", "projectId", "milestoneId", "completedOn"],
}
#: Where a number is expected, what is out of range or not a number at all.
NUMBER_FIELDS = {
    "salesforce": [],
    "salesforce-change-order": [],
    "stripe": ["created", "data.object.amount_paid"],
    "psa": [],
}


# ------------------------------------------------------------------------ signatures


async def test_forged_stale_and_future_signatures_are_refused(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    secret = exposed_service.secret(endpoint)
    body = dumps(endpoint.event())
    now = time.time()
    cases = {
        "wrong secret": sign(body, "not-the-secret"),
        "stale": sign(body, secret, at=now - 600),
        "future": sign(body, secret, at=now + 600),
        "tampered body": sign(body.replace(b"2026", b"2025", 1), secret),
    }
    for case, header in cases.items():
        answer = await http.post(endpoint.path, content=body, headers={endpoint.header: header})
        assert answer.status_code == 401, (case, answer.text)
        error = answer.json()["error"]
        assert "signature" in error, case
        assert secret not in error and header.split("v1=")[1] not in error, case
    assert (
        "away from now"
        in (
            await http.post(endpoint.path, content=body, headers={endpoint.header: cases["future"]})
        ).json()["error"]
    )
    await assert_nothing_started(exposed_service)


MALFORMED_HEADERS = [
    "",
    "t=",
    "v1=" + "0" * 64,
    "t=1764547200",
    "t=abc,v1=" + "0" * 64,
    "t=-1764547200,v1=" + "0" * 64,
    "t=+1764547200,v1=" + "0" * 64,
    "t=1_764_547_200,v1=" + "0" * 64,
    "t=" + "9" * 400 + ",v1=" + "0" * 64,
    "t=1764547200,v1=zz",
    "t=1764547200,v1=" + "é" * 64,
    "t=1764547200,v1=" + "0" * 63,
    ",,,===,,,",
    "t=1764547200," + "v1=ab," * 500,
]


async def test_malformed_signature_headers_are_refused(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    body = dumps(endpoint.event())
    for header in MALFORMED_HEADERS:
        headers = [(endpoint.header.encode(), header.encode("latin-1"))] if header else []
        answer = await http.post(endpoint.path, content=body, headers=headers)
        assert answer.status_code == 401, (header[:40], answer.text)
        assert answer.json()["error"].startswith("invalid signature: ")
    await assert_nothing_started(exposed_service)


# ----------------------------------------------------------------- bodies that are not JSON


async def test_bodies_that_are_not_utf8_are_refused_only_after_the_signature(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    valid = json.dumps(endpoint.event())
    bodies = [
        b'{"id": "\xff\xfe\xfd"}',
        valid.encode("utf-16"),
        valid.encode("utf-32"),
        valid.encode("utf-8").replace(b"2026", b"\xc0\xaf\xed\xa0\x80", 1),
    ]
    for body in bodies:
        # No secret needed to be told no, and nothing decodes the body before the check.
        unsigned = await http.post(endpoint.path, content=body)
        assert unsigned.status_code == 401, unsigned.text
        signed = await post_signed(http, exposed_service, endpoint, body)
        assert signed.status_code == 400, signed.text
        assert "UTF-8" in signed.json()["error"]
    await assert_nothing_started(exposed_service)


async def test_deep_nesting_is_refused_not_a_recursion_error(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    depth = min(endpoint.limit // 2 - 10, 200_000)
    bare = b"[" * depth + b"]" * depth
    inside = replaced(endpoint.event(), "extra", RAW)
    nested = json.dumps(inside).replace(json.dumps(RAW), '{"a":' * 50 + "1" + "}" * 50)
    for body in (bare, nested.encode(), b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}"):
        assert (await http.post(endpoint.path, content=body)).status_code == 401
        answer = await post_signed(http, exposed_service, endpoint, body)
        assert answer.status_code == 400, answer.text
        assert "nests deeper" in answer.json()["error"]
    await assert_nothing_started(exposed_service)


async def test_signed_bodies_that_are_not_json_objects_are_refused(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    odd = (b"", b"<xml/>", b"{", b"[]", b"null", b"42", b'"text"', b"\xef\xbb\xbf{}")
    surrogate_keys = (b'{"\\udfff": 1}', b'{"a": 1, "\\ud800": 2, "\\ud800": 3}')
    for body in odd + surrogate_keys:
        answer = await post_signed(http, exposed_service, endpoint, body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]
    await assert_nothing_started(exposed_service)


# -------------------------------------------------------------------- type-confused fields


async def test_type_confused_fields_are_refused_naming_the_field(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    confusions: list[Any] = [42, 1.5, True, None, [], ["x"], {}, {"a": "b"}, ""]
    bodies: list[tuple[str, bytes]] = []
    for field in TEXT_FIELDS[endpoint.name]:
        for value in confusions:
            bodies.append((field, dumps(replaced(endpoint.event(), field, value))))
        for raw in ("NaN", "Infinity", "-Infinity", "1e400", "1" * 30, '"a\\u0000b"'):
            bodies.append((field, with_raw(endpoint.event(), field, raw)))
        bodies.append((field, with_raw(endpoint.event(), field, '"\\ud800"')))
    for field in NUMBER_FIELDS[endpoint.name]:
        for raw in ('"soon"', "NaN", "Infinity", "1e400", "9" * 30, "1.5", "[]", "null"):
            bodies.append((field, with_raw(endpoint.event(), field, raw)))
    for field, body in bodies:
        answer = await post_signed(http, exposed_service, endpoint, body)
        assert answer.status_code == 400, (field, body[:200], answer.text)
        assert answer.json()["field"] == field, (body[:200], answer.text)
        assert field in answer.json()["error"]
    await assert_nothing_started(exposed_service)


async def test_duplicate_keys_are_refused_naming_the_key(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    event = endpoint.event()
    first = next(iter(event))
    text = json.dumps(event)
    body = ("{" + json.dumps(first) + ': "decoy", ' + text[1:]).encode()
    answer = await post_signed(http, exposed_service, endpoint, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == first
    assert "duplicate" in answer.json()["error"]
    await assert_nothing_started(exposed_service)


async def test_a_missing_field_is_named(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    for field in TEXT_FIELDS[endpoint.name]:
        event = endpoint.event()
        *parents, last = field.split(".")
        holder = event
        for part in parents:
            holder = holder[part]
        del holder[last]
        answer = await post_signed(http, exposed_service, endpoint, dumps(event))
        assert answer.status_code == 400, (field, answer.text)
        assert answer.json()["field"] == field
    await assert_nothing_started(exposed_service)


# ------------------------------------------------------------------------ oversized bodies


async def test_an_oversized_body_gets_413_with_or_without_content_length(
    endpoint: Endpoint, exposed_service: ExposedService, http: httpx.AsyncClient
) -> None:
    body = b"x" * (endpoint.limit * 3)

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    declared = await http.post(endpoint.path, content=body)
    streamed = await http.post(endpoint.path, content=chunked())
    async with httpx.AsyncClient(base_url=exposed_service.url, timeout=30) as closing:
        closed = await closing.post(endpoint.path, content=body, headers={"Connection": "close"})
    for answer in (declared, streamed, closed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == f"body larger than {endpoint.limit} bytes"
    # The limit itself is allowed through to the signature check.
    at_limit = await http.post(endpoint.path, content=b"x" * endpoint.limit)
    assert at_limit.status_code == 401
    await assert_nothing_started(exposed_service)


async def test_an_endless_chunked_body_is_answered_413_while_it_is_still_being_sent(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    """The service answers without waiting for the end of a body that has none."""
    where = urlsplit(exposed_service.url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    writer.write(
        f"POST {endpoint.path} HTTP/1.1\r\nHost: q2c\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"

    async def send_forever() -> None:
        while True:
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(send_forever())
    try:
        status = await reader.readline()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    await assert_nothing_started(exposed_service)


async def test_a_sender_expecting_100_continue_is_refused_before_sending_the_body(
    endpoint: Endpoint, exposed_service: ExposedService
) -> None:
    where = urlsplit(exposed_service.url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    size = endpoint.limit * 1000
    writer.write(
        f"POST {endpoint.path} HTTP/1.1\r\nHost: q2c\r\nContent-Length: {size}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status


# ---------------------------------------------------------------------- the control case


#: Each endpoint's valid event with its text at the longest a field allows, in 4-byte UTF-8.
AT_THE_EDGE = {
    "salesforce": {"sobject.Name": "\U0001f600" * 120, "eventId": "\U0001f600" * 255},
    "salesforce-change-order": {"sobject.Name": "\U0001f600" * 80, "eventId": "\U0001f600" * 255},
    "stripe": {"data.object.metadata.q2c_workflow_id": "time-to-invoice:" + "\U0001f600" * 484},
    "psa": {"eventId": "\U0001f600" * 255, "milestoneId": "\U0001f600" * 255},
}


async def test_a_valid_signed_event_still_gets_through_even_at_the_edges(
    endpoint: Endpoint, service_settings: Settings, started_runs: list[str]
) -> None:
    """The refusals above come from the checks, not from a service that refuses all; and
    text as long as a field allows is accepted, not failed on downstream (Temporal, store)."""
    secret = "control-secret"
    settings = service_settings.model_copy(
        update={
            "salesforce_webhook_secret": SecretStr(secret),
            "stripe_webhook_secret": SecretStr(secret),
            "psa_webhook_secret": SecretStr(secret),
        }
    )
    plain = dumps(endpoint.event())
    edge = endpoint.event()
    for field, value in AT_THE_EDGE[endpoint.name].items():
        edge = replaced(edge, field, value)
    async with running_service(settings) as http:
        answers = [
            await http.post(endpoint.path, content=body, headers=endpoint.signed(body, secret))
            for body in (plain, dumps(edge))
        ]
    for answer in answers:
        assert answer.status_code in (200, 202), answer.text
        if endpoint is STRIPE:
            assert answer.json()["exception"] == "unknown_billing_invoice"
        else:
            started_runs.append(answer.json()["workflow_id"])
