"""The REST surface: OAuth token, sObject rows, rows by external id, SOQL query, describe."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from standins.faults import FaultInjector
from standins.salesforce import soql
from standins.salesforce.org import CASCADE_DELETE, Org, not_found
from standins.salesforce.schema import (
    SOBJECTS,
    SalesforceError,
    SObject,
    make_id,
    normalize_id,
    sobject,
)
from standins.salesforce.store import Store
from standins.salesforce.webhooks import WebhookSender

DEFAULT_TOKEN_TTL_S = 2 * 60 * 60
DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
#: API versions this org answers to (Spring '15 .. Winter '25).
VERSIONS = [f"{v}.0" for v in range(33, 63)]
_SEASONS = ("Winter", "Spring", "Summer")

_FAULT_CODES = {
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "UNKNOWN_EXCEPTION",
    502: "UNKNOWN_EXCEPTION",
    503: "SERVER_UNAVAILABLE",
    504: "REQUEST_RUNNING_TOO_LONG",
}
#: Control endpoints served by this app itself rather than by the shared FaultInjector.
_OWN_CONTROL = ("/_standin/replay-webhook/", "/_standin/expire-sessions")

Handler = Callable[[Request], Awaitable[Response]]


def fault_body(status: int, message: str) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": _FAULT_CODES.get(status, "UNKNOWN_EXCEPTION")}]


def sf_error(exc: SalesforceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _label(version: str) -> str:
    # v20.0 was Winter '11; three releases a year since.
    offset = int(version.split(".")[0]) - 20
    return f"{_SEASONS[offset % 3]} '{11 + offset // 3:02d}"


class SalesforceStandin:
    def __init__(
        self,
        db: str | Path,
        *,
        client_id: str,
        client_secret: str,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
    ) -> None:
        self.store = Store(db)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.org_id = self.store.meta("org_id", make_id("00D", secrets.randbelow(62**8)))
        self.user_id = self.store.meta("user_id", make_id("005", secrets.randbelow(62**8)))
        self.webhooks = WebhookSender(self.store, webhook_url, webhook_secret, self.org_id)
        self.org = Org(self.store, self.webhooks.closed_won, self.webhooks.change_order_approved)
        self.api_calls = 0

    # -- plumbing

    def routes(self) -> list[Route]:
        api = "/services/data/{version}"
        return [
            Route("/services/data", self.versions, methods=["GET"]),
            Route("/services/data/", self.versions, methods=["GET"]),
            Route("/services/oauth2/token", self.token, methods=["POST"]),
            Route(api, self.api(self.resources), methods=["GET"]),
            Route(api + "/", self.api(self.resources), methods=["GET"]),
            Route(api + "/sobjects", self.api(self.describe_global), methods=["GET"]),
            Route(api + "/sobjects/", self.api(self.describe_global), methods=["GET"]),
            Route(api + "/sobjects/{obj}", self.api(self.sobject_root), methods=["GET", "POST"]),
            Route(api + "/sobjects/{obj}/describe", self.api(self.describe), methods=["GET"]),
            Route(
                api + "/sobjects/{obj}/{id}",
                self.api(self.row),
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route(
                api + "/sobjects/{obj}/{field}/{value}",
                self.api(self.row_by_external_id),
                methods=["GET", "PATCH"],
            ),
            Route(api + "/query", self.api(self.query), methods=["GET"]),
            Route(api + "/query/", self.api(self.query), methods=["GET"]),
            Route(api + "/query/{cursor}", self.api(self.query_more), methods=["GET"]),
            Route("/_standin/replay-webhook/{id}", self.replay_webhook, methods=["POST"]),
            Route("/_standin/expire-sessions", self.expire_sessions, methods=["POST"]),
        ]

    def api(self, handler: Handler) -> Handler:
        """Version check and bearer-token check, in Salesforce's order and error shapes."""

        async def endpoint(request: Request) -> Response:
            try:
                version = request.path_params["version"]
                if not version.startswith("v") or version[1:] not in VERSIONS:
                    raise not_found()
                self.authorize(request)
                self.api_calls += 1
                response = await handler(request)
            except SalesforceError as exc:
                return sf_error(exc)
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_calls}/15000"
            return response

        return endpoint

    def authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not self.store.session_valid(token):
            raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")

    @staticmethod
    def url(version: str) -> Callable[[str, str], str]:
        return lambda obj, record_id: f"/services/data/{version}/sobjects/{obj}/{record_id}"

    def render(self, version: str, obj: SObject, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "attributes": {"type": obj.name, "url": self.url(version)(obj.name, record["Id"])},
            **record,
        }

    @staticmethod
    async def body(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                f"Unexpected character: {exc.msg} at [line:{exc.lineno}, column:{exc.colno}]",
            ) from None
        except UnicodeDecodeError:
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Invalid UTF-8 in body") from None

    # -- unauthenticated

    async def versions(self, request: Request) -> Response:
        return JSONResponse(
            [{"label": _label(v), "url": f"/services/data/v{v}", "version": v} for v in VERSIONS]
        )

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                decoded = base64.b64decode(basic[6:]).decode()
                client_id, _, client_secret = decoded.partition(":")
        if form.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if not client_id or not hmac.compare_digest(client_id, self.client_id):
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not client_secret or not hmac.compare_digest(client_secret, self.client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        self.store.add_session(token, time.time() + self.token_ttl_s)
        instance_url = str(request.base_url).rstrip("/")
        identity = f"{instance_url}/id/{self.org_id}/{self.user_id}"
        issued_at = str(int(time.time() * 1000))
        signature = base64.b64encode(
            hmac.new(
                self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        return JSONResponse(
            {
                "access_token": token,
                "signature": signature,
                "scope": "api",
                "instance_url": instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            }
        )

    # -- API

    async def resources(self, request: Request) -> Response:
        base = f"/services/data/{request.path_params['version']}"
        return JSONResponse({"sobjects": f"{base}/sobjects", "query": f"{base}/query"})

    async def describe_global(self, request: Request) -> Response:
        version = request.path_params["version"]
        return JSONResponse(
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [_object_summary(version, o) for o in SOBJECTS.values()],
            }
        )

    async def describe(self, request: Request) -> Response:
        obj = sobject(request.path_params["obj"])
        version = request.path_params["version"]
        return JSONResponse(
            {
                **_object_summary(version, obj),
                "fields": [
                    {
                        "name": f.name,
                        "label": f.label or f.name,
                        "type": f.type,
                        "length": f.length
                        if f.type
                        not in ("double", "currency", "percent", "boolean", "date", "datetime")
                        else 0,
                        "precision": f.precision
                        if f.type in ("double", "currency", "percent")
                        else 0,
                        "scale": f.scale if f.type in ("double", "currency", "percent") else 0,
                        "nillable": not f.required and f.type != "boolean",
                        "createable": f.createable,
                        "updateable": f.updateable,
                        "externalId": f.external_id,
                        "idLookup": f.external_id or f.name == "Id",
                        "custom": f.name.endswith("__c"),
                        "referenceTo": [f.reference_to] if f.reference_to else [],
                        "relationshipName": f.relationship,
                        "restrictedPicklist": f.restricted,
                        "picklistValues": [
                            {
                                "active": True,
                                "defaultValue": v == f.default,
                                "label": v,
                                "value": v,
                            }
                            for v in f.picklist
                        ],
                        "defaultValue": f.default if f.type == "boolean" else None,
                    }
                    for f in obj.fields
                ],
                "childRelationships": [
                    {
                        "childSObject": child.name,
                        "field": f.name,
                        "relationshipName": f.child_relationship,
                        "cascadeDelete": (child.name, f.name) in CASCADE_DELETE,
                    }
                    for child in SOBJECTS.values()
                    for f in child.fields
                    if f.reference_to == obj.name and f.child_relationship
                ],
            }
        )

    async def sobject_root(self, request: Request) -> Response:
        obj = sobject(request.path_params["obj"])
        version = request.path_params["version"]
        if request.method == "GET":
            recent = [self.render(version, obj, r) for r in self.org.all(obj)[-10:]]
            return JSONResponse(
                {"objectDescribe": _object_summary(version, obj), "recentItems": recent}
            )
        record = self.org.create(obj, await self.body(request))
        return JSONResponse({"id": record["Id"], "success": True, "errors": []}, status_code=201)

    async def row(self, request: Request) -> Response:
        obj = sobject(request.path_params["obj"])
        version = request.path_params["version"]
        record_id = request.path_params["id"]
        if request.method == "PATCH":
            self.org.update(obj, record_id, await self.body(request))
            return Response(status_code=204)
        if request.method == "DELETE":
            self.org.delete(obj, record_id)
            return Response(status_code=204)
        record = self.org.get(obj, record_id)
        return JSONResponse(self.render(version, obj, _select(obj, record, request)))

    async def row_by_external_id(self, request: Request) -> Response:
        obj = sobject(request.path_params["obj"])
        version = request.path_params["version"]
        field, value = request.path_params["field"], request.path_params["value"]
        if request.method == "GET":
            matches = self.org.by_external_id(obj, field, value)
            if not matches:
                raise not_found()
            if len(matches) > 1:
                urls = [self.url(version)(obj.name, r["Id"]) for r in matches]
                return JSONResponse(urls, status_code=300)
            return JSONResponse(self.render(version, obj, _select(obj, matches[0], request)))
        record, created = self.org.upsert(obj, field, value, await self.body(request))
        return JSONResponse(
            {"id": record["Id"], "success": True, "errors": [], "created": created},
            status_code=201 if created else 200,
        )

    async def query(self, request: Request) -> Response:
        text = request.query_params.get("q")
        if not text:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        parsed = soql.parse(text)
        rows = soql.run(parsed, self.org.all(parsed.sobject), self.org.lookup)
        version = request.path_params["version"]
        if parsed.count_only:
            return JSONResponse({"totalSize": len(rows), "done": True, "records": []})
        records = [soql.project(parsed, r, self.org.lookup, self.url(version)) for r in rows]
        batch = _batch_size(request.headers.get("sforce-query-options"))
        if len(records) <= batch:
            return JSONResponse({"totalSize": len(records), "done": True, "records": records})
        locator = self.store.open_cursor(records, batch)
        return JSONResponse(self._page(version, locator, records, 0, batch))

    async def query_more(self, request: Request) -> Response:
        locator, _, offset_text = request.path_params["cursor"].rpartition("-")
        opened = self.store.read_cursor(locator) if offset_text.isdigit() else None
        if opened is None:
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, batch = opened
        offset = int(offset_text)
        if offset >= len(records):
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return JSONResponse(
            self._page(request.path_params["version"], locator, records, offset, batch)
        )

    @staticmethod
    def _page(
        version: str, locator: str, records: list[dict[str, Any]], offset: int, batch: int
    ) -> dict[str, Any]:
        end = offset + batch
        page: dict[str, Any] = {
            "totalSize": len(records),
            "done": end >= len(records),
            "records": records[offset:end],
        }
        if end < len(records):
            page["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return page

    # -- control (test and demo helpers, not Salesforce)

    async def replay_webhook(self, request: Request) -> Response:
        event = self.webhooks.replay(normalize_id(request.path_params["id"]) or "")
        if event is None:
            return JSONResponse({"error": "no event for this record"}, 404)
        return JSONResponse({"eventId": event["eventId"], "queued": bool(self.webhooks.url)}, 202)

    async def expire_sessions(self, request: Request) -> Response:
        """Ends every session now, as an admin's "revoke" or a session timeout would."""
        return JSONResponse({"expired": self.store.expire_sessions()})


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


def _object_summary(version: str, obj: SObject) -> dict[str, Any]:
    return {
        "name": obj.name,
        "label": obj.label,
        "keyPrefix": obj.key_prefix,
        "custom": obj.custom,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "queryable": True,
        "urls": {
            "sobject": f"/services/data/{version}/sobjects/{obj.name}",
            "describe": f"/services/data/{version}/sobjects/{obj.name}/describe",
            "rowTemplate": f"/services/data/{version}/sobjects/{obj.name}/{{ID}}",
        },
    }


def _select(obj: SObject, record: dict[str, Any], request: Request) -> dict[str, Any]:
    wanted = request.query_params.get("fields")
    if not wanted:
        return record
    out: dict[str, Any] = {}
    for name in (n.strip() for n in wanted.split(",") if n.strip()):
        f = obj.field(name)
        if f is None:
            raise SalesforceError(
                400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'", [name]
            )
        out[f.name] = record.get(f.name)
    out["Id"] = record["Id"]
    return out


def _batch_size(header: str | None) -> int:
    """`Sforce-Query-Options: batchSize=N`, which Salesforce holds between 200 and 2000."""
    for part in (header or "").split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return max(MIN_BATCH_SIZE, min(DEFAULT_BATCH_SIZE, int(value.strip())))
    return DEFAULT_BATCH_SIZE


class _Dispatch:
    """Sends this stand-in's own control paths to the app, everything else through faults."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_OWN_CONTROL):
            await self.app(scope, receive, send)
        else:
            await self.faults(scope, receive, send)


def create_app(
    db: str | Path,
    *,
    client_id: str,
    client_secret: str,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
) -> ASGIApp:
    standin = SalesforceStandin(
        db,
        client_id=client_id,
        client_secret=client_secret,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        token_ttl_s=token_ttl_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await standin.webhooks.aclose()
            standin.store.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            body = [
                {
                    "errorCode": "METHOD_NOT_ALLOWED",
                    "message": f"HTTP Method '{request.method}' not allowed.",
                }
            ]
        else:
            body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        return JSONResponse(body, status_code=exc.status_code)

    async def salesforce_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SalesforceError)
        return sf_error(exc)

    app = Starlette(
        routes=standin.routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, SalesforceError: salesforce_error},
    )
    app.state.standin = standin
    faults = FaultInjector(app, error_body=fault_body)
    return _Dispatch(app, faults)


def create_app_from_env(db: str | Path, webhook_url: str | None) -> ASGIApp:
    """Credentials and knobs from the environment, so they never show in a process list."""
    client_id = os.environ.get("STANDIN_SF_CLIENT_ID")
    client_secret = os.environ.get("STANDIN_SF_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise SystemExit("STANDIN_SF_CLIENT_ID and STANDIN_SF_CLIENT_SECRET must be set")
    webhook_secret = os.environ.get("STANDIN_SF_WEBHOOK_SECRET")
    if webhook_url and not webhook_secret:
        raise SystemExit("--webhook-url needs STANDIN_SF_WEBHOOK_SECRET")
    ttl = float(os.environ.get("STANDIN_SF_TOKEN_TTL", DEFAULT_TOKEN_TTL_S))
    return create_app(
        db,
        client_id=client_id,
        client_secret=client_secret,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        token_ttl_s=ttl,
    )
