"""JSON-RPC client for a Tryton server (`POST /<db>/rpc/`).

One session per client: `common.db.login` gives a session key that goes in
`Authorization: Session base64(login:uid:key)`. Sessions expire when idle, so a 401
triggers one new login and one replay of the call; a second 401 is `AuthFailed`.
The call is replayed only when the server refused it before running it (401), so the
replay cannot apply a change twice.

Every call carries the user's context (company, employee, language) the way the Tryton
client does: the server reads company-dependent values from it. `for_company` gives a
view of the same session whose calls run in another company (legal entity): Tryton 8.2
takes the company from the `company` key of the context, so a company-scoped view sends
that key (and `companies`, the client's list of the companies being worked in). Records
of other companies stay visible only when the user's company filter is "All", which the
dev-stack bootstrap sets.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from connectors import correlation
from connectors.errors import (
    AuthFailed,
    ConflictError,
    ConnectorError,
    PermanentError,
    RateLimitedError,
    TransientError,
    ValidationFailed,
    error_for_status,
)
from connectors.timeouts import TRYTON_HTTP_TIMEOUT

SYSTEM = "tryton"
#: Every phase bounded; `connectors.timeouts.TRYTON_CALL_MAX` is what one call can take.
DEFAULT_TIMEOUT = TRYTON_HTTP_TIMEOUT

#: Server-side exceptions (reported as `[str(exc), traceback]`) that mean another writer
#: got in the way: a locked SQLite database, a serialization failure, lock or deadlock on
#: PostgreSQL, a unique value taken by a concurrent insert. Worth a retry.
_CONFLICT_SERVER_MESSAGES = (
    "database is locked",
    "could not serialize",
    "deadlock detected",
    "could not obtain lock",
    "lock timeout",
    "unique constraint failed",  # SQLite
    "duplicate key value",  # PostgreSQL
)
#: How Tryton words a unique constraint it reports as a `UserError` ("The code on party
#: must be unique."). On a create it means a concurrent create took the value first
#: (numbering sequences race too); the next attempt re-checks and finds the winner.
_UNIQUE_MESSAGE = "must be unique"


class TrytonClient:
    """A logged-in session on one Tryton database."""

    def __init__(
        self,
        base_url: str,
        database: str,
        login: str,
        password: str | SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        language: str = "en",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.database = database
        self.login_name = login
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        self.language = language
        self._session = _Session(
            httpx.AsyncClient(
                base_url=self.base_url,
                transport=transport,
                timeout=timeout,
                headers={"Accept": "application/json"},
                event_hooks={"request": [correlation.add_header]},
            )
        )
        #: Context keys this client (or company view) puts over the user's context.
        self._overrides: dict[str, Any] = {}
        self._owns_session = True

    async def __aenter__(self) -> TrytonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; a company view leaves it to the client it came from."""
        if self._owns_session:
            await self._session.http.aclose()

    @property
    def rpc_path(self) -> str:
        return f"/{self.database}/rpc/"

    @property
    def user_id(self) -> int | None:
        return self._session.user_id

    @property
    def company_id(self) -> int | None:
        """The company calls run in: the view's, else the user's current company."""
        company = self.context.get("company")
        return int(company) if company else None

    @property
    def context(self) -> dict[str, Any]:
        """The context calls carry: the user's (as given at login) with this view's keys."""
        return {**self._session.context, **self._overrides}

    def for_company(self, company_id: int) -> TrytonClient:
        """A view of this session whose calls run in `company_id` (one legal entity).

        The view shares the session (a new login by either serves both) and the
        connection; closing it closes nothing. The user's current employee belongs to
        the user's current company, so the view carries none.
        """
        view = copy.copy(self)
        view._overrides = {
            **self._overrides,
            "company": company_id,
            "companies": [company_id],
            "employee": None,
        }
        view._owns_session = False
        return view

    # -- session ---------------------------------------------------------------------------

    async def login(self) -> int:
        """Open a session and load the user's context; raises `AuthFailed` on bad credentials."""
        result = await self._post(
            "common.db.login",
            [self.login_name, {"password": self._password.get_secret_value()}, self.language],
            authorized=False,
        )
        if not isinstance(result, list) or len(result) < 2:
            raise PermanentError(f"unexpected login answer: {result!r}", system=SYSTEM)
        uid, key = int(result[0]), str(result[1])
        token = base64.b64encode(f"{self.login_name}:{uid}:{key}".encode()).decode()
        self._session.authorization = f"Session {token}"
        self._session.user_id = uid
        await self.refresh_context()
        return uid

    async def refresh_context(self) -> dict[str, Any]:
        """Reload the context, e.g. after the user's company changed."""
        prefs = await self._call_authorized("model.res.user.get_preferences", [True, {}])
        if not isinstance(prefs, dict):
            raise PermanentError(f"unexpected preferences: {prefs!r}", system=SYSTEM)
        self._session.context = prefs
        return self.context

    async def logout(self) -> None:
        if self._session.authorization is None:
            return
        try:
            await self._post("common.db.logout", [], authorized=True)
        finally:
            self._session.authorization = None

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        *args: Any,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call `method` (e.g. `model.party.party.search`) with the context appended."""
        if self._session.authorization is None:
            await self.login()
        full_context = {**self.context, **(context or {})}
        return await self._call_authorized(method, [*args, full_context])

    async def _call_authorized(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._post(method, params, authorized=True)
        except AuthFailed as exc:
            if exc.status != 401:
                raise
        # The session expired or the server restarted: one new login, one replay.
        await self.login()
        return await self._post(method, params, authorized=True)

    async def model(
        self,
        model: str,
        method: str,
        *args: Any,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        return await self.call(f"model.{model}.{method}", *args, context=context)

    async def search(
        self,
        model: str,
        domain: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        ids = await self.model(
            model,
            "search",
            list(domain),
            offset,
            limit,
            [list(o) for o in order] if order else None,
            context=context,
        )
        return [int(i) for i in ids]

    async def read(
        self,
        model: str,
        ids: Sequence[int],
        fields: Sequence[str],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        if not ids:
            return []
        rows = await self.model(model, "read", list(ids), list(fields), context=context)
        by_id = {row["id"]: row for row in rows}
        # `read` does not promise the order of `ids`; callers rely on it.
        return [by_id[i] for i in ids if i in by_id]

    async def search_read(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        rows = await self.model(
            model,
            "search_read",
            list(domain),
            offset,
            limit,
            [list(o) for o in order] if order else None,
            list(fields),
            context=context,
        )
        return list(rows)

    async def create(
        self,
        model: str,
        values: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        ids = await self.model(model, "create", [dict(v) for v in values], context=context)
        return [int(i) for i in ids]

    async def create_one(
        self,
        model: str,
        values: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        (record_id,) = await self.create(model, [values], context=context)
        return record_id

    async def write(
        self,
        model: str,
        ids: Sequence[int],
        values: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        if ids:
            await self.model(model, "write", list(ids), dict(values), context=context)

    async def delete(
        self,
        model: str,
        ids: Sequence[int],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        if ids:
            await self.model(model, "delete", list(ids), context=context)

    # -- transport -------------------------------------------------------------------------

    async def _post(self, method: str, params: list[Any], *, authorized: bool) -> Any:
        headers = {}
        if authorized and self._session.authorization:
            headers["Authorization"] = self._session.authorization
        body = {"id": next(self._session.ids), "method": method, "params": encode(params)}
        try:
            response = await self._session.http.post(self.rpc_path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{method}: timed out: {exc}", system=SYSTEM) from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{method}: {type(exc).__name__}: {exc}", system=SYSTEM) from exc
        if response.status_code != 200:
            raise _http_error(method, response)
        try:
            payload = response.json()
        except ValueError as exc:
            raise TransientError(
                f"{method}: answer is not JSON", system=SYSTEM, status=response.status_code
            ) from exc
        if not isinstance(payload, dict):
            raise PermanentError(f"{method}: unexpected answer {payload!r}", system=SYSTEM)
        if payload.get("error") is not None:
            raise classify_rpc_error(method, payload["error"])
        return decode(payload.get("result"))


class _Session:
    """What a client and its company views share: the connection and the login."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.ids = itertools.count(1)
        self.authorization: str | None = None
        self.user_id: int | None = None
        self.context: dict[str, Any] = {}


def _http_error(method: str, response: httpx.Response) -> ConnectorError:
    text = response.text.strip()
    if response.status_code == 401:
        message = f"{method}: unauthorized (bad credentials or the session ended)"
    else:
        message = f"{method}: {_short(text) or response.reason_phrase}"
    # 423 (Tryton's ConcurrencyException outside JSON-RPC) is a conflict like 409.
    return error_for_status(
        response.status_code,
        message,
        system=SYSTEM,
        retry_after=response.headers.get("Retry-After"),
    )


def classify_rpc_error(method: str, error: Any) -> ConnectorError:
    """Turn the `error` member of a JSON-RPC answer into the connector error tree.

    Tryton sends its own exceptions as `[name, args]` (`["UserError", [message,
    description, domain]]`) and anything else as `[str(exc), traceback]`.
    """
    if isinstance(error, list | tuple) and len(error) == 2 and isinstance(error[0], str):
        name, args = error[0], error[1]
        if name in ("UserError", "UserWarning"):
            parts = list(args) if isinstance(args, list | tuple) else [args]
            if name == "UserWarning":
                parts = parts[1:]  # the first item is the warning's key
            message = str(parts[0]) if parts else "refused"
            description = str(parts[1]) if len(parts) > 1 and parts[1] else ""
            full = f"{message} {description}".strip() if description else message
            cls = ConflictError if _UNIQUE_MESSAGE in message.lower() else ValidationFailed
            return cls(
                f"{method}: {full}",
                system=SYSTEM,
                field=_field_from_domain(parts[2] if len(parts) > 2 else None)
                or _field_from_message(message),
                code=name,
            )
        if name == "ConcurrencyException":
            return ConflictError(f"{method}: {args}", system=SYSTEM, code=name)
        if name == "RateLimitException":
            return RateLimitedError(f"{method}: rate limited", system=SYSTEM, code=name)
        if name == "LoginException":
            return AuthFailed(f"{method}: login needs {args!r}", system=SYSTEM, code=name)
        lowered = name.lower()
        if any(marker in lowered for marker in _CONFLICT_SERVER_MESSAGES):
            return ConflictError(f"{method}: {_short(name)}", system=SYSTEM, code="Conflict")
        # An unexpected exception on the server: a bug or bad input it did not validate.
        # Retrying gives the same answer, so a person must look (the traceback is in its log).
        return PermanentError(
            f"{method}: server error: {_short(name)}", system=SYSTEM, code="ServerError"
        )
    return PermanentError(f"{method}: unexpected error {error!r}", system=SYSTEM)


def _field_from_domain(domain: Any) -> str | None:
    """Tryton names the refused field in the error's domain: `[domain, {field: {...}}]`."""
    if isinstance(domain, list | tuple) and len(domain) == 2 and isinstance(domain[1], dict):
        names = [str(k) for k in domain[1]]
        if names:
            return names[0]
    return None


_FIELD_IN_MESSAGE = re.compile(r'field "([^"]+)"')


def _field_from_message(message: str) -> str | None:
    """Required-field errors name the field only in the message, by its label."""
    match = _FIELD_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- typed values ------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """Tag the values JSON cannot carry the way Tryton's `JSONDecoder` expects."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            # Tryton stores naive UTC datetimes.
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Undo `encode`; datetimes come back timezone-aware (UTC)."""
    if isinstance(value, dict):
        tag = value.get("__class__")
        if tag == "Decimal":
            return Decimal(value["decimal"])
        if tag == "date":
            return date(value["year"], value["month"], value["day"])
        if tag == "datetime":
            return datetime(
                value["year"],
                value["month"],
                value["day"],
                value["hour"],
                value["minute"],
                value["second"],
                value["microsecond"],
                tzinfo=UTC,
            )
        if tag == "time":
            return time(value["hour"], value["minute"], value["second"], value["microsecond"])
        if tag == "timedelta":
            return timedelta(seconds=value["seconds"])
        if tag == "bytes":
            return base64.b64decode(value["base64"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
