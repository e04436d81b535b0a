"""The Tryton client's wire handling: sessions, typed values and error classification."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors import timeouts
from connectors.errors import (
    AuthFailed,
    ConflictError,
    PermanentError,
    RateLimitedError,
    TransientError,
    ValidationFailed,
)
from connectors.tryton.client import TrytonClient, decode, encode

URL = "http://tryton.test"
PREFERENCES = {"company": 1, "employee": None, "language": "en"}


def _rpc(result: Any = None, *, error: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"id": 1}
    body["error" if error is not None else "result"] = error if error is not None else result
    return httpx.Response(200, json=body)


class FakeTryton:
    """Answers login and preferences; `answer` decides what every other call gets."""

    def __init__(self, answer: Callable[[dict[str, Any]], httpx.Response]) -> None:
        self.answer = answer
        self.logins = 0
        self.calls: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == "/q2c/rpc/"
        assert set(body) == {"id", "method", "params"}
        if body["method"] == "common.db.login":
            self.logins += 1
            _, params, _ = body["params"]
            if params["password"] != "pw":
                return httpx.Response(401)
            return _rpc([7, f"key{self.logins}", None])
        expected = "Session " + base64.b64encode(f"admin:7:key{self.logins}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return httpx.Response(401)
        if body["method"] == "model.res.user.get_preferences":
            return _rpc(PREFERENCES)
        self.calls.append(body)
        return self.answer(body)


def _client(fake: FakeTryton, password: str = "pw") -> TrytonClient:
    return TrytonClient(URL, "q2c", "admin", password, transport=httpx.MockTransport(fake))


async def _call(answer: Callable[[dict[str, Any]], httpx.Response]) -> Any:
    async with _client(FakeTryton(answer)) as client:
        return await client.model("party.party", "read", [1], ["name"])


async def test_calls_carry_the_session_and_the_users_context() -> None:
    fake = FakeTryton(lambda body: _rpc([{"id": 1, "name": "Acme"}]))
    async with _client(fake) as client:
        rows = await client.read("party.party", [1], ["name"], context={"active_test": False})
    assert rows == [{"id": 1, "name": "Acme"}]
    (call,) = fake.calls
    assert call["method"] == "model.party.party.read"
    assert call["params"] == [[1], ["name"], {**PREFERENCES, "active_test": False}]


async def test_http_503_is_transient() -> None:
    with pytest.raises(TransientError) as caught:
        await _call(lambda body: httpx.Response(503, text="Service Unavailable"))
    assert caught.value.retryable
    assert caught.value.status == 503


async def test_http_429_is_rate_limited_with_retry_after() -> None:
    with pytest.raises(RateLimitedError) as caught:
        await _call(lambda body: httpx.Response(429, headers={"Retry-After": "7"}))
    assert caught.value.retryable
    assert caught.value.retry_after == timedelta(seconds=7)


async def test_transport_failure_is_transient() -> None:
    def refuse(body: dict[str, Any]) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(TransientError):
        await _call(refuse)


async def test_user_error_is_validation_failed_with_the_message() -> None:
    error = ["UserError", ['The European VAT Number "FR123" is not valid.', "", None]]
    with pytest.raises(ValidationFailed) as caught:
        await _call(lambda body: _rpc(error=error))
    assert not caught.value.retryable
    assert 'The European VAT Number "FR123" is not valid.' in caught.value.message
    assert caught.value.code == "UserError"


async def test_validation_error_names_the_field_tryton_names() -> None:
    domain = [[["name", "!=", None]], {"name": {"string": "Name", "type": "char"}}]
    error = ["UserError", ['A value is required for field "Name".', "", domain]]
    with pytest.raises(ValidationFailed) as caught:
        await _call(lambda body: _rpc(error=error))
    assert caught.value.field == "name"


async def test_required_field_error_names_the_field_label() -> None:
    message = 'A value is required for field "Name" in record "7" of "Project Work".'
    with pytest.raises(ValidationFailed) as caught:
        await _call(lambda body: _rpc(error=["UserError", [message, "", None]]))
    assert caught.value.field == "Name"


@pytest.mark.parametrize(
    "error",
    [
        ["ConcurrencyException", "Records were modified"],
        ["database is locked", "Traceback ..."],
        ["could not serialize access due to concurrent update", "Traceback ..."],
        ["deadlock detected", "Traceback ..."],
        ['duplicate key value violates unique constraint "party_party_code_uniq"', "Tb"],
        ["UNIQUE constraint failed: project_work.number", "Traceback ..."],
        # A numbering sequence raced, or a concurrent create took the same code.
        ["UserError", ["The code on party must be unique.", "", None]],
        ["UserError", ["The number on work must be unique.", "", None]],
    ],
)
async def test_write_conflicts_are_retryable_conflicts(error: list[Any]) -> None:
    with pytest.raises(ConflictError) as caught:
        await _call(lambda body: _rpc(error=error))
    assert caught.value.retryable
    assert caught.value.error_type == "Conflict"


async def test_locked_answer_outside_json_rpc_is_a_conflict() -> None:
    with pytest.raises(ConflictError):
        await _call(lambda body: httpx.Response(423, text="Records were modified"))


async def test_unexpected_server_exception_is_permanent() -> None:
    with pytest.raises(PermanentError) as caught:
        await _call(lambda body: _rpc(error=["KeyError: 'nonexist'", "Traceback ..."]))
    assert not caught.value.retryable


async def test_expired_session_logs_in_once_and_replays() -> None:
    fake = FakeTryton(lambda body: _rpc([1]))
    async with _client(fake) as client:
        await client.login()
        fake.logins += 1  # the server forgot our session: the old key no longer matches
        assert await client.model("party.party", "search", []) == [1]
    assert fake.logins == 3  # first login, forgotten, one new login
    assert len(fake.calls) == 1


async def test_401_after_a_new_login_is_auth_failed() -> None:
    fake = FakeTryton(lambda body: httpx.Response(401))
    async with _client(fake) as client:
        with pytest.raises(AuthFailed):
            await client.model("party.party", "search", [])
    assert fake.logins == 2


async def test_bad_password_is_auth_failed() -> None:
    async with _client(FakeTryton(lambda body: _rpc([])), password="wrong") as client:
        with pytest.raises(AuthFailed) as caught:
            await client.login()
    assert caught.value.status == 401


def test_typed_values_round_trip() -> None:
    value = {
        "price": Decimal("150.25"),
        "day": date(2026, 11, 21),
        "at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
        "spent": timedelta(hours=3),
        "nested": [Decimal("1.5")],
    }
    wire = encode(value)
    assert wire["price"] == {"__class__": "Decimal", "decimal": "150.25"}
    assert wire["day"] == {"__class__": "date", "year": 2026, "month": 11, "day": 21}
    assert wire["spent"] == {"__class__": "timedelta", "seconds": 10800.0}
    assert decode(json.loads(json.dumps(wire))) == value


async def test_a_company_view_runs_calls_in_that_company_on_the_same_session() -> None:
    fake = FakeTryton(lambda body: _rpc([]))
    async with _client(fake) as client:
        uk = client.for_company(3)
        await uk.search("party.party", [])
        await client.search("party.party", [])
        fake.logins += 1  # the server forgot the session: the view logs in again...
        await uk.search("party.party", [])
        await client.search("party.party", [])  # ...and the client uses that login
        await uk.aclose()  # a view closes nothing
        await client.search("party.party", [])
    assert fake.logins == 3
    contexts = [call["params"][-1] for call in fake.calls]
    in_uk = {**PREFERENCES, "company": 3, "companies": [3], "employee": None}
    assert contexts == [in_uk, PREFERENCES, in_uk, PREFERENCES, PREFERENCES]
    assert uk.company_id == 3
    assert client.company_id == 1


async def test_a_call_makes_at_most_the_requests_its_worst_case_counts() -> None:
    """`TRYTON_CALL_MAX` counts the requests of a fresh client whose session the server
    forgets before the call: login, preferences, the call, login, preferences, replay."""
    requests: list[str] = []

    class Forgetful(FakeTryton):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            method = json.loads(request.content)["method"]
            requests.append(method)
            if method == "model.party.party.read" and self.logins == 1:
                self.logins += 1  # the server restarted: the first session is gone
            return super().__call__(request)

    fake = Forgetful(lambda body: _rpc([{"id": 1, "name": "Acme"}]))
    async with _client(fake) as client:
        assert client._session.http.timeout == timeouts.TRYTON_HTTP_TIMEOUT
        await client.model("party.party", "read", [1], ["name"])
    assert len(requests) == timeouts.TRYTON_REQUESTS_PER_CALL
    assert requests.count("model.party.party.read") == 2
    assert timeouts.TRYTON_REQUEST_MAX * len(requests) == timeouts.TRYTON_CALL_MAX


def test_every_phase_of_a_request_is_bounded() -> None:
    assert timeouts.request_max(httpx.Timeout(connect=1, read=2, write=3, pool=4)) == timedelta(
        seconds=10
    )
    with pytest.raises(ValueError):
        timeouts.request_max(httpx.Timeout(None, connect=5))
