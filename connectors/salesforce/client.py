"""Salesforce REST API client: OAuth 2.0 client credentials, sObject rows, SOQL.

The token is fetched on first use from `<base_url>/services/oauth2/token`; API calls go to
the `instance_url` the token response names. A 401 `INVALID_SESSION_ID` (session expired
or revoked) gets one new token and one replay of the request: Salesforce refused the call
before running it, so the replay cannot apply a change twice. That is re-authentication,
not a retry; everything else is classified into `connectors.errors` and left to Temporal.

Idempotency: Salesforce has no idempotency-key header. `upsert` (PATCH by external id) and
`update` are idempotent by nature; `create` is not, so mutating activities upsert on an
external id derived from the workflow's idempotency key (`Q2C_External_Id__c`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from canonical import Account, ChangeOrder, ChangeOrderStatus, Money, Opportunity
from connectors import correlation
from connectors.errors import (
    AuthFailed,
    ConnectorError,
    RateLimitedError,
    TransientError,
    ValidationFailed,
    error_for_status,
    parse_retry_after,
)
from connectors.salesforce import mapping
from connectors.salesforce.wire import (
    AccountRecord,
    ApiError,
    ChangedOpportunity,
    ChangeOrderLineRecord,
    ChangeOrderMilestoneRecord,
    ChangeOrderRecord,
    ChangeOrderSummary,
    ContactRecord,
    MilestoneRecord,
    OAuthError,
    OpportunityLineItemRecord,
    OpportunityRecord,
    QueryPage,
    SaveResult,
    TokenResponse,
)
from connectors.timeouts import SALESFORCE_HTTP_TIMEOUT

SYSTEM = mapping.CRM
DEFAULT_API_VERSION = "v60.0"
#: Every phase bounded; `connectors.timeouts.SALESFORCE_CALL_MAX` is what one call can take.
DEFAULT_TIMEOUT = SALESFORCE_HTTP_TIMEOUT
#: The org's corporate currency, for single-currency orgs whose records carry no currency.
DEFAULT_CURRENCY = "USD"
CLOSED_WON = "Closed Won"
#: Deals per page of the catch-up query (Salesforce's default batch: 2,000).
SWEEP_BATCH = 2000
MIN_BATCH_SIZE = 200
MAX_EXACT_DIGITS = 15
MAX_BATCH_SIZE = 2000

#: Error codes that are worth another attempt whatever the HTTP status says.
_RATE_LIMIT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"})
_TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
)

_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NO_SUCH_COLUMN = re.compile(r"No such column '([^']+)'")

ACCOUNT_FIELDS = (
    "Id",
    "Name",
    "BillingStreet",
    "BillingCity",
    "BillingPostalCode",
    "BillingState",
    "BillingCountry",
    "BillingCountryCode",
    "Website",
    "Industry",
    "CurrencyIsoCode",
    "Tax_Id__c",
    "LastModifiedDate",
)
CONTACT_FIELDS = ("Id", "FirstName", "LastName", "Email", "Phone", "Title")
OPPORTUNITY_FIELDS = (
    "Id",
    "Name",
    "AccountId",
    "StageName",
    "CloseDate",
    "Amount",
    "CurrencyIsoCode",
    "Probability",
    "Description",
    "IsWon",
    "Payment_Terms__c",
    "PO_Number__c",
    "Not_To_Exceed__c",
    "Upfront_Percent__c",
    "Contract_End_Date__c",
    "Expense_Markup_Percent__c",
    "Billable_Expense_Categories__c",
    "LastModifiedDate",
)
LINE_FIELDS = (
    "Id",
    "Product2Id",
    "Product2.Name",
    "Product2.ProductCode",
    "Quantity",
    "UnitPrice",
    "TotalPrice",
    "Discount",
    "Description",
    "Role__c",
    "Billing_Type__c",
    "Fee_Schedule__c",
    "Instalments__c",
    "Not_To_Exceed__c",
)
MILESTONE_FIELDS = (
    "Id",
    "Name",
    "Opportunity__c",
    "Line_Item_Id__c",
    "Amount__c",
    "Planned_Date__c",
    "CurrencyIsoCode",
)

CHANGE_ORDER_FIELDS = (
    "Id",
    "Name",
    "Opportunity__c",
    "Amount_Delta__c",
    "Effective_Date__c",
    "Budget_Delta__c",
    "New_End_Date__c",
    "Retroactive__c",
    "Status__c",
    "Approved_At__c",
    "CurrencyIsoCode",
    "Description__c",
    "LastModifiedDate",
)
CHANGE_ORDER_LINE_FIELDS = (
    "Id",
    "Change_Order__c",
    "Action__c",
    "Line_Item_Id__c",
    "Product__c",
    "Role__c",
    "Billing_Type__c",
    "Rate__c",
    "Amount__c",
    "Hours__c",
    "CurrencyIsoCode",
)
CHANGE_ORDER_MILESTONE_FIELDS = (
    "Id",
    "Change_Order__c",
    "Action__c",
    "Milestone__c",
    "Line_Item_Id__c",
    "Name",
    "Amount__c",
    "Planned_Date__c",
    "CurrencyIsoCode",
)
CHANGE_ORDER_SUMMARY_FIELDS = (
    "Id",
    "Name",
    "Opportunity__c",
    "Status__c",
    "Approved_At__c",
    "LastModifiedDate",
)


@dataclass(frozen=True)
class UpsertResult:
    id: str
    created: bool


def soql_literal(value: str) -> str:
    """A quoted SOQL string literal; the only safe way to put a value into a query."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"'{escaped}'"


def soql_datetime(moment: datetime) -> str:
    """A SOQL dateTime literal in UTC (`2026-12-01T00:05:00Z`): unquoted, whole seconds."""
    if moment.tzinfo is None:
        raise ValueError("a SOQL dateTime needs a timezone-aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_id(value: str, *, field: str = "Id") -> str:
    """Refuse a malformed record id before it reaches a URL or a query."""
    if not _ID_RE.match(value):
        raise ValidationFailed(
            f"{value!r} is not a Salesforce record id (15 or 18 letters and digits)",
            system=SYSTEM,
            field=field,
            code="MALFORMED_ID",
        )
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a Salesforce API name")
    return value


def _decode(response: httpx.Response) -> Any:
    """JSON with decimals for numbers: money must never pass through float."""
    try:
        return json.loads(response.content, parse_float=Decimal)
    except ValueError:
        raise TransientError(
            f"unreadable answer ({response.headers.get('content-type', 'no content type')})",
            system=SYSTEM,
            status=response.status_code,
        ) from None


class SalesforceClient:
    """One connected app's session on one org."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str | SecretStr,
        *,
        api_version: str = DEFAULT_API_VERSION,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        default_currency: str = DEFAULT_CURRENCY,
    ) -> None:
        self.login_url = base_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.api_version = api_version
        self.default_currency = default_currency
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json"},
            event_hooks={"request": [correlation.add_header]},
        )
        self._token: str | None = None
        self._instance_url: str | None = None
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> SalesforceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ session

    async def _authenticate(self, stale: str | None = None) -> None:
        """Get a token, unless another task already replaced the `stale` one meanwhile."""
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return
            try:
                response = await self._http.post(
                    f"{self.login_url}/services/oauth2/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.client_id,
                        "client_secret": self._client_secret.get_secret_value(),
                    },
                )
            except httpx.TransportError as exc:
                raise _transport_error(exc) from exc
            if response.status_code in (400, 401, 403):
                try:
                    oauth = OAuthError.model_validate(_decode(response))
                    reason = f"{oauth.error}: {oauth.error_description or ''}".strip(": ")
                    code = oauth.error
                except (ConnectorError, ValidationError):
                    reason, code = response.reason_phrase, None
                raise AuthFailed(
                    f"token request refused ({reason})",
                    system=SYSTEM,
                    status=response.status_code,
                    code=code,
                )
            if response.is_error:
                raise self._error(response)
            try:
                token = TokenResponse.model_validate(_decode(response))
            except ValidationError as exc:
                raise TransientError(
                    f"token answer without {exc.errors()[0]['loc']}", system=SYSTEM
                ) from exc
            self._token = token.access_token
            self._instance_url = token.instance_url.rstrip("/")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One call on the API (`path` from `/services/data/...`), re-authenticating once."""
        if self._token is None:
            await self._authenticate()
        response = await self._send(method, path, json_body, params, headers)
        if response.status_code == 401:
            used = response.request.headers.get("authorization", "").partition(" ")[2]
            await self._authenticate(stale=used)
            response = await self._send(method, path, json_body, params, headers)
        if response.is_error or response.status_code == 300:
            raise self._error(response)
        return response

    async def _send(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        assert self._instance_url is not None
        content = None
        all_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        if json_body is not None:
            content = json.dumps(json_body, default=_json_default).encode()
            all_headers["Content-Type"] = "application/json"
        try:
            return await self._http.request(
                method,
                self._instance_url + path,
                content=content,
                params=params,
                headers=all_headers,
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc) from exc

    @staticmethod
    def _error(response: httpx.Response) -> ConnectorError:
        """Salesforce's error list as one error of the tree, naming the field it names."""
        status = response.status_code
        first = ApiError(message=response.reason_phrase or f"HTTP {status}")
        try:
            body = _decode(response)
            if isinstance(body, list) and body and isinstance(body[0], dict):
                first = ApiError.model_validate(body[0])
        except (ConnectorError, ValidationError):
            pass
        field = first.fields[0] if first.fields else None
        if field is None and (match := _NO_SUCH_COLUMN.search(first.message)):
            field = match.group(1)
        message = first.message.strip() or first.error_code
        retry_after = response.headers.get("retry-after")
        if first.error_code in _RATE_LIMIT_CODES:
            return RateLimitedError(
                message,
                system=SYSTEM,
                status=status,
                code=first.error_code,
                retry_after=parse_retry_after(retry_after),
            )
        if first.error_code in _TRANSIENT_CODES:
            return TransientError(
                message,
                system=SYSTEM,
                status=status,
                field=field,
                code=first.error_code,
                retry_after=parse_retry_after(retry_after),
            )
        return error_for_status(
            status,
            message,
            system=SYSTEM,
            field=field,
            code=first.error_code,
            retry_after=retry_after,
        )

    def _sobject_path(self, sobject: str, *parts: str) -> str:
        path = f"/services/data/{self.api_version}/sobjects/{_check_name(sobject)}"
        return path + "".join("/" + quote(p, safe="") for p in parts)

    # ------------------------------------------------------------ REST

    async def get(
        self, sobject: str, record_id: str, *, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        response = await self._request(
            "GET", self._sobject_path(sobject, check_id(record_id)), params=params
        )
        record: dict[str, Any] = _decode(response)
        return record

    async def create(self, sobject: str, fields: dict[str, Any]) -> str:
        """Not idempotent: prefer `upsert` on an external id for anything a retry may repeat."""
        response = await self._request("POST", self._sobject_path(sobject), json_body=fields)
        return SaveResult.model_validate(_decode(response)).id

    async def update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        await self._request(
            "PATCH", self._sobject_path(sobject, check_id(record_id)), json_body=fields
        )

    async def upsert(
        self, sobject: str, external_field: str, value: str, fields: dict[str, Any]
    ) -> UpsertResult:
        """Create or update the one record whose `external_field` is `value`."""
        response = await self._request(
            "PATCH",
            self._sobject_path(sobject, _check_name(external_field), value),
            json_body=fields,
        )
        if response.status_code == 204 or not response.content:
            # Before API v46 an update answered 204 without a body.
            found = await self.get_by_external_id(sobject, external_field, value, fields=["Id"])
            return UpsertResult(id=str(found["Id"]), created=False)
        result = SaveResult.model_validate(_decode(response))
        created = result.created if result.created is not None else response.status_code == 201
        return UpsertResult(id=result.id, created=created)

    async def get_by_external_id(
        self,
        sobject: str,
        external_field: str,
        value: str,
        *,
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        response = await self._request(
            "GET", self._sobject_path(sobject, _check_name(external_field), value), params=params
        )
        record: dict[str, Any] = _decode(response)
        return record

    async def delete(self, sobject: str, record_id: str) -> bool:
        """True when deleted now, False when it was already gone: safe as a compensation."""
        try:
            await self._request("DELETE", self._sobject_path(sobject, check_id(record_id)))
        except ConnectorError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def describe(self, sobject: str) -> dict[str, Any]:
        """The object's metadata (`fields`, `childRelationships`...): what this org has, for
        checking that an installation added the custom fields and objects q2c reads."""
        response = await self._request("GET", self._sobject_path(sobject, "describe"))
        described: dict[str, Any] = _decode(response)
        return described

    async def query(
        self, soql: str, *, batch_size: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record the query selects, page by page (`nextRecordsUrl`), as Salesforce
        returns them (with `attributes`; parents nested under their relationship name)."""
        headers = None
        if batch_size is not None:
            size = max(MIN_BATCH_SIZE, min(MAX_BATCH_SIZE, batch_size))
            headers = {"Sforce-Query-Options": f"batchSize={size}"}
        response = await self._request(
            "GET",
            f"/services/data/{self.api_version}/query",
            params={"q": soql},
            headers=headers,
        )
        while True:
            page = QueryPage.model_validate(_decode(response))
            for record in page.records:
                yield record
            if page.done or not page.next_records_url:
                return
            response = await self._request("GET", page.next_records_url, headers=headers)

    # ------------------------------------------------------------ CRM role

    async def fetch_account(self, account_id: str) -> Account:
        record = AccountRecord.model_validate(
            await self.get("Account", account_id, fields=ACCOUNT_FIELDS)
        )
        contacts = [
            ContactRecord.model_validate(c)
            async for c in self.query(
                f"SELECT {', '.join(CONTACT_FIELDS)} FROM Contact "
                f"WHERE AccountId = {soql_literal(record.id)} ORDER BY CreatedDate, Id"
            )
        ]
        return mapping.to_account(record, contacts)

    async def fetch_opportunity(self, opportunity_id: str) -> Opportunity:
        """The deal, its line items and its `Milestone__c` records: one read, two queries.

        Milestones come by their own query rather than a subquery, so the query stays within
        what every org and API version answers; they are ordered by planned date.
        """
        record = OpportunityRecord.model_validate(
            await self.get("Opportunity", opportunity_id, fields=OPPORTUNITY_FIELDS)
        )
        lines = [
            OpportunityLineItemRecord.model_validate(line)
            async for line in self.query(
                f"SELECT {', '.join(LINE_FIELDS)} FROM OpportunityLineItem "
                f"WHERE OpportunityId = {soql_literal(record.id)} ORDER BY CreatedDate, Id"
            )
        ]
        milestones = [
            MilestoneRecord.model_validate(milestone)
            async for milestone in self.query(
                f"SELECT {', '.join(MILESTONE_FIELDS)} FROM Milestone__c "
                f"WHERE Opportunity__c = {soql_literal(record.id)} "
                "ORDER BY Planned_Date__c ASC NULLS LAST, CreatedDate, Id"
            )
        ]
        return mapping.to_opportunity(
            record, lines, milestones, default_currency=self.default_currency
        )

    async def fetch_change_order(self, change_order_id: str) -> ChangeOrder:
        """The change order with its lines and milestones: one read, two paged queries (as
        `fetch_opportunity`: no subqueries), the details in the order they were entered."""
        record = ChangeOrderRecord.model_validate(
            await self.get("Change_Order__c", change_order_id, fields=CHANGE_ORDER_FIELDS)
        )
        where = f"WHERE Change_Order__c = {soql_literal(record.id)} ORDER BY CreatedDate, Id"
        lines = [
            ChangeOrderLineRecord.model_validate(line)
            async for line in self.query(
                f"SELECT {', '.join(CHANGE_ORDER_LINE_FIELDS)} FROM Change_Order_Line__c {where}"
            )
        ]
        milestones = [
            ChangeOrderMilestoneRecord.model_validate(milestone)
            async for milestone in self.query(
                f"SELECT {', '.join(CHANGE_ORDER_MILESTONE_FIELDS)} "
                f"FROM Change_Order_Milestone__c {where}"
            )
        ]
        return mapping.to_change_order(
            record, lines, milestones, default_currency=self.default_currency
        )

    async def list_change_orders(
        self,
        opportunity_id: str,
        *,
        status: ChangeOrderStatus | Sequence[ChangeOrderStatus] | None = None,
    ) -> list[ChangeOrderSummary]:
        """The deal's change orders (those in `status`, when given) in the CRM's approval
        order: by `Approved_At__c`, those never approved last, then as they were entered."""
        soql = (
            f"SELECT {', '.join(CHANGE_ORDER_SUMMARY_FIELDS)} FROM Change_Order__c "
            f"WHERE Opportunity__c = {soql_literal(check_id(opportunity_id))}"
        )
        if status is not None:
            wanted = [status] if isinstance(status, ChangeOrderStatus) else list(status)
            labels = ", ".join(soql_literal(s.value.title()) for s in wanted)
            soql += f" AND Status__c IN ({labels})"
        soql += " ORDER BY Approved_At__c ASC NULLS LAST, CreatedDate, Id"
        found = []
        async for record in self.query(soql):
            listed = mapping.change_order_status(record.get("Status__c"), record_id=record["Id"])
            found.append(ChangeOrderSummary.model_validate({**record, "Status__c": listed}))
        return found

    async def write_back_change_order(
        self,
        change_order_id: str,
        status: ChangeOrderStatus,
        message: str | None = None,
        run_url: str | None = None,
    ) -> None:
        """What became of the change order (Applied, Rejected or Failed), why, and the run's
        link; the same call twice changes nothing. Never Approved: that is the CRM's."""
        await self.update(
            "Change_Order__c",
            change_order_id,
            mapping.change_order_write_back_fields(status=status, message=message, run_url=run_url),
        )

    async def closed_won_changed_since(
        self, since: datetime, *, limit: int | None = None
    ) -> AsyncIterator[ChangedOpportunity]:
        """Closed Won deals changed at or after `since`, oldest change first (at most `limit`).

        SOQL's dateTime literals have whole seconds, so `since` is rounded down: a change in
        that second may come back again, never be skipped. Without a limit, every one comes,
        page by page (`nextRecordsUrl`): however many deals share one second (a bulk update),
        none is left behind a page boundary.
        """
        soql = (
            "SELECT Id, LastModifiedDate FROM Opportunity "
            f"WHERE StageName = {soql_literal(CLOSED_WON)} "
            f"AND LastModifiedDate >= {soql_datetime(since)} "
            "ORDER BY LastModifiedDate ASC, Id ASC"
        )
        if limit is not None:
            soql += f" LIMIT {int(limit)}"
        async for record in self.query(soql, batch_size=SWEEP_BATCH):
            yield ChangedOpportunity.model_validate(record)

    async def write_back(
        self,
        opportunity_id: str,
        *,
        status: str,
        project_id: str | None = None,
        billing_customer_id: str | None = None,
        run_url: str | None = None,
        message: str | None = None,
    ) -> None:
        """Tell the deal's owner what q2c did with it; the same call twice changes nothing."""
        await self.update(
            "Opportunity",
            opportunity_id,
            mapping.write_back_fields(
                status=status,
                project_id=project_id,
                billing_customer_id=billing_customer_id,
                run_url=run_url,
                message=message,
            ),
        )

    async def write_invoice(
        self,
        opportunity_id: str,
        *,
        number: str,
        amount: Money,
        status: str,
    ) -> None:
        """The deal's latest invoice as billing holds it (number, total, status)."""
        await self.update(
            "Opportunity",
            opportunity_id,
            {
                "Q2C_Invoice_Number__c": number,
                "Q2C_Invoice_Amount__c": amount.amount,
                "Q2C_Invoice_Status__c": status,
            },
        )


def _transport_error(exc: httpx.TransportError) -> TransientError:
    return TransientError(f"{type(exc).__name__}: {exc}", system=SYSTEM)


def _json_default(value: Any) -> Any:
    """Decimals as JSON numbers, dates as ISO strings.

    A float's shortest repr reproduces every decimal of up to 15 significant digits exactly,
    which covers Salesforce's currency fields (18 digits, 2 decimals) for any real amount;
    beyond that we refuse rather than send a rounded number.
    """
    if isinstance(value, Decimal):
        if len(value.as_tuple().digits) > MAX_EXACT_DIGITS:
            raise ValueError(f"{value} has more digits than a JSON number carries exactly")
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
