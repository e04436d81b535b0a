"""The Salesforce stand-in, in process: REST shapes, the org's rules, SOQL, state on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from standins.salesforce import create_app
from standins.salesforce.schema import id_checksum, normalize_id

API = "/services/data/v60.0"
CLIENT_ID = "standin-test-client"
CLIENT_SECRET = "standin-test-secret"


class Org:
    """An authenticated session against one in-process stand-in."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def create(self, obj: str, **fields: Any) -> str:
        r = await self.http.post(f"{API}/sobjects/{obj}", json=fields, headers=self.headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def post(self, obj: str, body: Any) -> httpx.Response:
        return await self.http.post(f"{API}/sobjects/{obj}", json=body, headers=self.headers)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(
            f"{API}{path}", headers={**self.headers, **kw.pop("headers", {})}, **kw
        )

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.http.patch(f"{API}{path}", json=body, headers=self.headers)

    async def query(self, soql: str, **headers: str) -> httpx.Response:
        return await self.get("/query", params={"q": soql}, headers=headers)


async def _token(http: httpx.AsyncClient) -> str:
    r = await http.post(
        "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _client(db: Path, **kw: Any) -> httpx.AsyncClient:
    app = create_app(db, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **kw)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sf.test")


@pytest.fixture
async def org(tmp_path: Path) -> AsyncIterator[Org]:
    async with _client(tmp_path / "sf.sqlite3") as http:
        yield Org(http, await _token(http))


@pytest.fixture
async def deal(org: Org) -> dict[str, str]:
    account = await org.create("Account", Name="Globex", CurrencyIsoCode="EUR")
    product = await org.create("Product2", Name="Consulting", IsActive=True)
    opportunity = await org.create(
        "Opportunity",
        Name="Globex rollout",
        StageName="Proposal/Price Quote",
        CloseDate="2025-06-30",
        AccountId=account,
        CurrencyIsoCode="EUR",
    )
    return {"account": account, "product": product, "opportunity": opportunity}


async def test_token_issued_for_right_credentials_only(tmp_path: Path) -> None:
    async with _client(tmp_path / "sf.sqlite3") as http:
        bad = await http.post(
            "/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "x"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_client"
        good = await http.post(
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        body = good.json()
        assert body["token_type"] == "Bearer"
        assert body["instance_url"] == "http://sf.test"
        assert {"access_token", "issued_at", "id", "signature"} <= body.keys()
        unauth = await http.get(f"{API}/sobjects/Account/001000000000000AAA")
        assert unauth.status_code == 401
        assert unauth.json()[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_version_list_needs_no_session(tmp_path: Path) -> None:
    async with _client(tmp_path / "sf.sqlite3") as http:
        versions = (await http.get("/services/data/")).json()
    assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in versions


async def test_ids_are_18_characters_with_prefix_and_checksum(
    org: Org, deal: dict[str, str]
) -> None:
    assert deal["account"].startswith("001") and len(deal["account"]) == 18
    assert deal["opportunity"].startswith("006")
    assert deal["product"].startswith("01t")
    # The 15-character form addresses the same record.
    r = await org.get(f"/sobjects/Account/{deal['account'][:15]}")
    assert r.status_code == 200
    assert r.json()["Id"] == deal["account"]
    assert normalize_id("001000000000001") == "001000000000001" + id_checksum("001000000000001")


async def test_line_items_roll_up_into_opportunity_amount(org: Org, deal: dict[str, str]) -> None:
    for quantity, price, discount in ((10, 150, None), (4, 200.5, 10)):
        await org.create(
            "OpportunityLineItem",
            OpportunityId=deal["opportunity"],
            Product2Id=deal["product"],
            Quantity=quantity,
            UnitPrice=price,
            Discount=discount,
        )
    opp = (await org.get(f"/sobjects/Opportunity/{deal['opportunity']}")).json()
    assert opp["Amount"] == 1500 + 721.8
    assert opp["HasOpportunityLineItem"] is True
    assert opp["CurrencyIsoCode"] == "EUR"
    refused = await org.patch(f"/sobjects/Opportunity/{deal['opportunity']}", {"Amount": 1})
    assert refused.status_code == 400
    assert refused.json()[0]["fields"] == ["Amount"]


async def test_read_only_field_refused_on_write(org: Org, deal: dict[str, str]) -> None:
    r = await org.post(
        "OpportunityLineItem",
        {
            "OpportunityId": deal["opportunity"],
            "Product2Id": deal["product"],
            "Quantity": 1,
            "UnitPrice": 10,
            "TotalPrice": 10,
        },
    )
    assert r.status_code == 400
    assert r.json() == [
        {
            "message": r.json()[0]["message"],
            "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
            "fields": ["TotalPrice"],
        }
    ]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"StageName": "Prospecting", "CloseDate": "2025-01-01"}, "REQUIRED_FIELD_MISSING", "Name"),
        (
            {"Name": "x", "StageName": "Won-ish", "CloseDate": "2025-01-01"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "StageName",
        ),
        (
            {"Name": "x", "StageName": "Prospecting", "CloseDate": "soon"},
            "JSON_PARSER_ERROR",
            "CloseDate",
        ),
        (
            {"Name": "x", "StageName": "Prospecting", "CloseDate": "2025-01-01", "Amount": "abc"},
            "JSON_PARSER_ERROR",
            "Amount",
        ),
        (
            {
                "Name": "x",
                "StageName": "Prospecting",
                "CloseDate": "2025-01-01",
                "Colour__c": "red",
            },
            "INVALID_FIELD",
            "Colour__c",
        ),
        (
            {"Name": "x", "StageName": "Prospecting", "CloseDate": "2025-01-01", "AccountId": "42"},
            "MALFORMED_ID",
            "AccountId",
        ),
        (
            {
                "Name": "x",
                "StageName": "Prospecting",
                "CloseDate": "2025-01-01",
                "AccountId": "001000000000000AAA",
            },
            "INVALID_CROSS_REFERENCE_KEY",
            "AccountId",
        ),
    ],
)
async def test_validation_errors_name_the_field(
    org: Org, body: dict[str, Any], code: str, field: str
) -> None:
    r = await org.post("Opportunity", body)
    assert r.status_code == 400
    [error] = r.json()
    assert error["errorCode"] == code
    assert error["fields"][0] == field


async def test_unknown_object_and_record_are_not_found(org: Org) -> None:
    r = await org.get("/sobjects/Invoice__c/001000000000000AAA")
    assert (r.status_code, r.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    r = await org.get("/sobjects/Account/001000000000000AAA")
    assert (r.status_code, r.json()[0]["errorCode"]) == (404, "NOT_FOUND")


async def test_upsert_by_external_id_creates_then_updates(org: Org) -> None:
    path = "/sobjects/Account/Q2C_External_Id__c/cust-7"
    first = await org.patch(path, {"Name": "Initech"})
    second = await org.patch(path, {"Name": "Initech AG", "BillingCountryCode": "CH"})
    assert (first.status_code, first.json()["created"]) == (201, True)
    assert (second.status_code, second.json()["created"]) == (200, False)
    assert first.json()["id"] == second.json()["id"]
    record = (await org.get(path, params={"fields": "Name,BillingCountryCode"})).json()
    assert record["Name"] == "Initech AG"
    assert record["BillingCountryCode"] == "CH"
    not_ext = await org.patch("/sobjects/Account/Name/Initech", {"Phone": "1"})
    assert not_ext.status_code == 404


async def test_soql_filters_orders_and_follows_parents(org: Org, deal: dict[str, str]) -> None:
    other = await org.create("Product2", Name="Training", IsActive=True)
    for product, quantity in ((deal["product"], 3), (other, 8), (deal["product"], 5)):
        await org.create(
            "OpportunityLineItem",
            OpportunityId=deal["opportunity"],
            Product2Id=product,
            Quantity=quantity,
            UnitPrice=100,
        )
    r = await org.query(
        "SELECT Id, Quantity, Product2.Name, Opportunity.Account.Name FROM OpportunityLineItem "
        f"WHERE OpportunityId = '{deal['opportunity'][:15]}' AND Product2.Name LIKE 'cons%' "
        "ORDER BY Quantity DESC LIMIT 5"
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["totalSize"] == 2 and body["done"] is True
    assert [rec["Quantity"] for rec in body["records"]] == [5, 3]
    first = body["records"][0]
    assert first["attributes"]["type"] == "OpportunityLineItem"
    assert first["Product2"]["Name"] == "Consulting"
    assert first["Opportunity"]["Account"]["Name"] == "Globex"
    r = await org.query(
        f"SELECT Id FROM OpportunityLineItem WHERE Quantity IN (3, 8) AND Product2Id != '{other}'"
    )
    assert r.json()["totalSize"] == 1


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM", "MALFORMED_QUERY"),
        ("SELECT Id Account", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Name = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Colour__c FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Invoice__c", "INVALID_TYPE"),
        ("SELECT Id FROM Opportunity WHERE Amount = 'abc'", "INVALID_QUERY_FILTER_OPERATOR"),
    ],
)
async def test_bad_soql_is_refused(org: Org, soql: str, code: str) -> None:
    r = await org.query(soql)
    assert r.status_code == 400
    assert r.json()[0]["errorCode"] == code


async def test_query_pages_with_locator(org: Org) -> None:
    for n in range(450):
        await org.create("Account", Name=f"Bulk {n:03d}", Industry="Paging")
    r = await org.query(
        "SELECT Id, Name FROM Account WHERE Industry = 'Paging' ORDER BY Name",
        **{"Sforce-Query-Options": "batchSize=200"},
    )
    names: list[str] = []
    pages = 0
    body = r.json()
    while True:
        pages += 1
        assert body["totalSize"] == 450
        names += [rec["Name"] for rec in body["records"]]
        if body["done"]:
            assert "nextRecordsUrl" not in body
            break
        next_url = body["nextRecordsUrl"]
        body = (await org.http.get(next_url, headers=org.headers)).json()
    assert pages == 3
    assert names == [f"Bulk {n:03d}" for n in range(450)]
    # Salesforce never pages below 200 records.
    r = await org.query("SELECT Id FROM Account", **{"Sforce-Query-Options": "batchSize=5"})
    assert len(r.json()["records"]) == 200


async def test_state_and_sessions_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "sf.sqlite3"
    async with _client(db) as http:
        token = await _token(http)
        account = await Org(http, token).create("Account", Name="Durable Ltd")
    async with _client(db) as http:
        r = await Org(http, token).get(f"/sobjects/Account/{account}")
    assert r.status_code == 200
    assert r.json()["Name"] == "Durable Ltd"


async def test_tokens_expire(tmp_path: Path) -> None:
    async with _client(tmp_path / "sf.sqlite3", token_ttl_s=0) as http:
        org = Org(http, await _token(http))
        r = await org.get("/sobjects/Account/001000000000000AAA")
    assert r.status_code == 401
    assert r.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


async def test_injected_429_speaks_salesforce(org: Org) -> None:
    await org.http.post("/_standin/faults", json={"kind": "429", "retry_after": 7})
    r = await org.get("/sobjects/Account/001000000000000AAA")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


async def test_deleting_an_account_removes_its_opportunities(
    org: Org, deal: dict[str, str]
) -> None:
    r = await org.http.delete(f"{API}/sobjects/Account/{deal['account']}", headers=org.headers)
    assert r.status_code == 204
    gone = await org.get(f"/sobjects/Opportunity/{deal['opportunity']}")
    assert gone.status_code == 404


async def test_soql_compares_and_orders_by_last_modified_date(org: Org) -> None:
    """What the CRM sweep asks: Closed Won deals changed since a dateTime, oldest first."""
    account = await org.create("Account", Name="Sweep Co")
    ids = [
        await org.create(
            "Opportunity",
            Name=f"Sweep {n}",
            StageName=stage,
            CloseDate="2026-11-30",
            AccountId=account,
        )
        for n, stage in enumerate(("Closed Won", "Prospecting", "Closed Won", "Closed Won"))
    ]
    won = [ids[0], ids[2], ids[3]]
    soql = (
        "SELECT Id, LastModifiedDate FROM Opportunity WHERE StageName = 'Closed Won' "
        "AND LastModifiedDate >= {since} ORDER BY LastModifiedDate ASC, Id ASC LIMIT {limit}"
    )
    everything = await org.query(soql.format(since="2000-01-01T00:00:00Z", limit=10))
    records = everything.json()["records"]
    assert [r["Id"] for r in records] == won
    stamps = [r["LastModifiedDate"] for r in records]
    assert stamps == sorted(stamps)

    limited = await org.query(soql.format(since="2000-01-01T00:00:00Z", limit=2))
    assert [r["Id"] for r in limited.json()["records"]] == won[:2]
    # The same instant in another zone; seconds only, as SOQL literals are written.
    last = stamps[-1][:19]
    # The same instant written in another zone; whole seconds, as SOQL literals are written.
    moment = datetime.fromisoformat(f"{last}+00:00").astimezone(timezone(timedelta(hours=1)))
    same = await org.query(soql.format(since=moment.isoformat(), limit=10))
    assert ids[3] in [r["Id"] for r in same.json()["records"]]
    future = await org.query(soql.format(since="2999-01-01T00:00:00Z", limit=10))
    assert future.json()["totalSize"] == 0

    edited = await org.patch(f"/sobjects/Opportunity/{ids[0]}", {"Description": "edited"})
    assert edited.status_code == 204
    again = await org.query(soql.format(since=f"{last}Z", limit=10))
    assert ids[0] in [r["Id"] for r in again.json()["records"]]  # a change moves it forward


@pytest.mark.parametrize(
    "literal",
    ["'2026-12-01T00:00:00Z'", "2026-12-01", "1764547200"],
)
async def test_last_modified_date_needs_a_datetime_literal(org: Org, literal: str) -> None:
    r = await org.query(f"SELECT Id FROM Opportunity WHERE LastModifiedDate >= {literal}")
    assert r.status_code == 400
    assert r.json()[0]["errorCode"] == "INVALID_QUERY_FILTER_OPERATOR"


# ---------------------------------------------------------------- contract terms (issue 8)


async def _line(org: Org, deal: dict[str, str], **fields: Any) -> str:
    fields = {"Quantity": 1, "UnitPrice": 5000, **fields}
    return await org.create(
        "OpportunityLineItem",
        OpportunityId=deal["opportunity"],
        Product2Id=deal["product"],
        **fields,
    )


async def _milestone(org: Org, deal: dict[str, str], line: str, **fields: Any) -> str:
    fields = {"Name": "Go-live", "Amount__c": 2500, "CurrencyIsoCode": "EUR", **fields}
    return await org.create(
        "Milestone__c", Opportunity__c=deal["opportunity"], Line_Item_Id__c=line, **fields
    )


async def test_describe_shows_the_contract_fields_and_the_milestone_object(org: Org) -> None:
    def fields(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in body["fields"]}

    line = fields((await org.get("/sobjects/OpportunityLineItem/describe")).json())
    opportunity_body = (await org.get("/sobjects/Opportunity/describe")).json()
    opportunity = fields(opportunity_body)
    milestone_body = (await org.get("/sobjects/Milestone__c/describe")).json()
    milestone = fields(milestone_body)
    listed = (await org.get("/sobjects")).json()["sobjects"]

    assert [v["value"] for v in line["Fee_Schedule__c"]["picklistValues"]] == [
        "On Completion",
        "Monthly Instalments",
    ]
    assert line["Fee_Schedule__c"]["restrictedPicklist"] is True
    assert [v["value"] for v in line["Billing_Type__c"]["picklistValues"]] == [
        "Time and Materials",
        "Fixed Fee",
        "Milestone",
    ]
    assert (line["Instalments__c"]["type"], line["Instalments__c"]["scale"]) == ("double", 0)
    assert line["Not_To_Exceed__c"]["type"] == "currency"
    assert {n: opportunity[n]["type"] for n in opportunity if n.endswith("__c")}.items() >= {
        "Not_To_Exceed__c": "currency",
        "Upfront_Percent__c": "percent",
        "Payment_Terms__c": "picklist",
        "Contract_End_Date__c": "date",
        "Expense_Markup_Percent__c": "percent",
        "Billable_Expense_Categories__c": "multipicklist",
    }.items()
    assert "Billing_Type__c" not in opportunity  # a line's, or the catalogue's, not the deal's
    assert all(opportunity[n]["custom"] for n in opportunity if n.endswith("__c"))

    assert (milestone_body["name"], milestone_body["custom"]) == ("Milestone__c", True)
    assert milestone_body["keyPrefix"] == "a05"
    assert {n: f["type"] for n, f in milestone.items()}.items() >= {
        "Name": "string",
        "Opportunity__c": "reference",
        "Line_Item_Id__c": "string",
        "Amount__c": "currency",
        "Planned_Date__c": "date",
        "CurrencyIsoCode": "picklist",
    }.items()
    assert milestone["Line_Item_Id__c"]["length"] == 18
    assert milestone["Opportunity__c"]["referenceTo"] == ["Opportunity"]
    assert milestone["Opportunity__c"]["relationshipName"] == "Opportunity__r"
    assert {
        "childSObject": "Milestone__c",
        "field": "Opportunity__c",
        "relationshipName": "Milestones__r",
        "cascadeDelete": False,
    } in opportunity_body["childRelationships"]
    assert {o["name"]: o["custom"] for o in listed}["Milestone__c"] is True


async def test_contract_fields_are_written_and_read_like_the_standard_ones(
    org: Org, deal: dict[str, str]
) -> None:
    terms = {
        "Not_To_Exceed__c": 80000.5,
        "Upfront_Percent__c": 20,
        "Payment_Terms__c": "Net 45",
        "Contract_End_Date__c": "2025-12-31",
        "Expense_Markup_Percent__c": 12.5,
        "Billable_Expense_Categories__c": "Lodging; Travel;;Lodging;Parking",
    }
    updated = await org.patch(f"/sobjects/Opportunity/{deal['opportunity']}", terms)
    assert updated.status_code == 204, updated.text
    line = await _line(
        org,
        deal,
        Billing_Type__c="Fixed Fee",
        Fee_Schedule__c="Monthly Instalments",
        Instalments__c=6,
        Not_To_Exceed__c=4000,
    )
    opportunity = (await org.get(f"/sobjects/Opportunity/{deal['opportunity']}")).json()
    read_line = (await org.get(f"/sobjects/OpportunityLineItem/{line}")).json()

    assert {k: opportunity[k] for k in terms} == {
        **terms,
        # Stored without blanks or repeats, in the picklist's order; an unlisted value last.
        "Billable_Expense_Categories__c": "Travel;Lodging;Parking",
    }
    assert (read_line["Fee_Schedule__c"], read_line["Instalments__c"]) == (
        "Monthly Instalments",
        6,
    )
    assert read_line["Not_To_Exceed__c"] == 4000
    found = await org.query(
        "SELECT Id FROM Opportunity "
        "WHERE Billable_Expense_Categories__c = 'travel;lodging;parking' "
        "AND Upfront_Percent__c = 20 AND Contract_End_Date__c = 2025-12-31"
    )
    assert [r["Id"] for r in found.json()["records"]] == [deal["opportunity"]]


@pytest.mark.parametrize(
    ("obj", "body", "code", "field"),
    [
        (
            "OpportunityLineItem",
            {"Fee_Schedule__c": "Quarterly"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "Fee_Schedule__c",
        ),
        ("OpportunityLineItem", {"Instalments__c": 1000}, "NUMBER_OUTSIDE_VALID_RANGE", None),
        ("OpportunityLineItem", {"Not_To_Exceed__c": "lots"}, "JSON_PARSER_ERROR", None),
        ("Opportunity", {"Contract_End_Date__c": "end of year"}, "JSON_PARSER_ERROR", None),
        ("Opportunity", {"Billable_Expense_Categories__c": ["Travel"]}, "JSON_PARSER_ERROR", None),
        ("Opportunity", {"Upfront_Percent__c": 1000}, "NUMBER_OUTSIDE_VALID_RANGE", None),
    ],
)
async def test_contract_fields_are_checked_by_type(
    org: Org, deal: dict[str, str], obj: str, body: dict[str, Any], code: str, field: str | None
) -> None:
    record = deal["opportunity"] if obj == "Opportunity" else await _line(org, deal)
    r = await org.patch(f"/sobjects/{obj}/{record}", body)
    assert r.status_code == 400
    [error] = r.json()
    assert error["errorCode"] == code
    assert error["fields"] == [field or next(iter(body))]


async def test_milestones_are_created_queried_and_upserted(org: Org, deal: dict[str, str]) -> None:
    line = await _line(org, deal, Billing_Type__c="Milestone")
    first = await _milestone(org, deal, line, Planned_Date__c="2025-09-30")
    second = await _milestone(org, deal, line[:15], Name="Handover", Amount__c=2500)
    other = await org.create(
        "Opportunity", Name="Other", StageName="Prospecting", CloseDate="2025-01-01"
    )
    await org.create("Milestone__c", Name="Elsewhere", Opportunity__c=other, Amount__c=1)

    r = await org.query(
        "SELECT Id, Name, Opportunity__c, Opportunity__r.Name, Line_Item_Id__c, Amount__c, "
        "Planned_Date__c, CurrencyIsoCode FROM Milestone__c "
        f"WHERE Opportunity__c = '{deal['opportunity'][:15]}' "
        "ORDER BY Planned_Date__c ASC NULLS LAST, CreatedDate, Id"
    )
    body = r.json()
    assert r.status_code == 200, body
    assert [rec["Id"] for rec in body["records"]] == [first, second]
    record = body["records"][0]
    assert first.startswith("a05") and len(first) == 18
    assert record["attributes"] == {
        "type": "Milestone__c",
        "url": f"{API}/sobjects/Milestone__c/{first}",
    }
    assert record["Opportunity__c"] == deal["opportunity"]
    assert record["Opportunity__r"]["Name"] == "Globex rollout"
    assert (record["Line_Item_Id__c"], record["Amount__c"]) == (line, 2500)
    assert (record["Planned_Date__c"], record["CurrencyIsoCode"]) == ("2025-09-30", "EUR")
    # The text field keeps what was written: a 15-character id stays 15 characters.
    assert body["records"][1]["Line_Item_Id__c"] == line[:15]

    path = "/sobjects/Milestone__c/Q2C_External_Id__c/deal-7:milestone:0"
    made = await org.patch(path, {"Name": "UAT", "Opportunity__c": deal["opportunity"]})
    again = await org.patch(path, {"Name": "UAT sign-off", "Amount__c": 100})
    assert (made.status_code, again.status_code) == (201, 200)
    assert made.json()["id"] == again.json()["id"]
    read = (await org.get(path, params={"fields": "Name,Amount__c,CurrencyIsoCode"})).json()
    # A lookup child keeps its own currency: the corporate one unless it says otherwise.
    assert (read["Name"], read["Amount__c"], read["CurrencyIsoCode"]) == (
        "UAT sign-off",
        100,
        "USD",
    )


async def test_milestone_lookup_is_checked_and_cleared_when_the_deal_goes(
    org: Org, deal: dict[str, str]
) -> None:
    nameless = await org.post("Milestone__c", {"Opportunity__c": deal["opportunity"]})
    wrong_type = await org.post("Milestone__c", {"Name": "x", "Opportunity__c": deal["account"]})
    line = await _line(org, deal)
    milestone = await _milestone(org, deal, line)

    gone = await org.http.delete(
        f"{API}/sobjects/Opportunity/{deal['opportunity']}", headers=org.headers
    )
    kept = (await org.get(f"/sobjects/Milestone__c/{milestone}")).json()

    assert [nameless.status_code, nameless.json()[0]["errorCode"]] == [
        400,
        "REQUIRED_FIELD_MISSING",
    ]
    assert wrong_type.json()[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert wrong_type.json()[0]["fields"] == ["Opportunity__c"]
    assert gone.status_code == 204
    assert (await org.get(f"/sobjects/OpportunityLineItem/{line}")).status_code == 404
    assert (kept["Name"], kept["Opportunity__c"]) == ("Go-live", None)


async def test_milestone_query_pages_and_obeys_faults(org: Org, deal: dict[str, str]) -> None:
    line = await _line(org, deal, Billing_Type__c="Milestone", Quantity=250, UnitPrice=10)
    for n in range(250):
        await _milestone(org, deal, line, Name=f"M{n:03d}", Amount__c=10)
    soql = (
        f"SELECT Name FROM Milestone__c WHERE Opportunity__c = '{deal['opportunity']}' "
        "ORDER BY Name"
    )
    await org.http.post(
        "/_standin/faults", json={"kind": "503", "path": f"{API}/query", "count": 1}
    )
    refused = await org.query(soql)
    first = (await org.query(soql, **{"Sforce-Query-Options": "batchSize=200"})).json()
    rest = (await org.http.get(first["nextRecordsUrl"], headers=org.headers)).json()

    assert (refused.status_code, refused.json()[0]["errorCode"]) == (503, "SERVER_UNAVAILABLE")
    assert (first["totalSize"], first["done"], len(first["records"])) == (250, False, 200)
    assert rest["done"] is True
    names = [r["Name"] for r in first["records"] + rest["records"]]
    assert names == [f"M{n:03d}" for n in range(250)]


# ---------------------------------------------------------------- change orders (issue 9)


async def _change_order(org: Org, deal: dict[str, str], **fields: Any) -> str:
    fields = {
        "Name": "CO-001",
        "Opportunity__c": deal["opportunity"],
        "CurrencyIsoCode": "EUR",
        "Amount_Delta__c": 1200,
        "Effective_Date__c": "2026-03-01",
        **fields,
    }
    return await org.create("Change_Order__c", **fields)


async def test_describe_shows_the_change_order_objects(org: Org) -> None:
    def fields(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in body["fields"]}

    bodies = {
        name: (await org.get(f"/sobjects/{name}/describe")).json()
        for name in ("Change_Order__c", "Change_Order_Line__c", "Change_Order_Milestone__c")
    }
    opportunity = (await org.get("/sobjects/Opportunity/describe")).json()
    change_order = fields(bodies["Change_Order__c"])
    line = fields(bodies["Change_Order_Line__c"])
    milestone = fields(bodies["Change_Order_Milestone__c"])

    assert [(b["keyPrefix"], b["custom"]) for b in bodies.values()] == [
        ("a06", True),
        ("a07", True),
        ("a08", True),
    ]
    assert {n: f["type"] for n, f in change_order.items()}.items() >= {
        "Name": "string",
        "Opportunity__c": "reference",
        "Amount_Delta__c": "currency",
        "Effective_Date__c": "date",
        "Budget_Delta__c": "currency",
        "New_End_Date__c": "date",
        "Retroactive__c": "boolean",
        "Status__c": "picklist",
        "Approved_At__c": "datetime",
        "Q2C_Message__c": "textarea",
        "Q2C_Run_Url__c": "url",
        "CurrencyIsoCode": "picklist",
        "Description__c": "textarea",
    }.items()
    statuses = change_order["Status__c"]["picklistValues"]
    assert [v["value"] for v in statuses] == ["Draft", "Approved", "Applied", "Rejected", "Failed"]
    assert [v["value"] for v in statuses if v["defaultValue"]] == ["Draft"]
    assert change_order["Status__c"]["restrictedPicklist"] is True
    assert change_order["Q2C_Message__c"]["length"] == 32768
    assert {n: f["type"] for n, f in line.items()}.items() >= {
        "Change_Order__c": "reference",
        "Action__c": "picklist",
        "Line_Item_Id__c": "string",
        "Product__c": "string",
        "Role__c": "string",
        "Billing_Type__c": "picklist",
        "Rate__c": "currency",
        "Amount__c": "currency",
        "Hours__c": "double",
    }.items()
    assert line["Line_Item_Id__c"]["length"] == 18
    assert [v["value"] for v in line["Action__c"]["picklistValues"]] == ["Add", "Remove", "Change"]
    assert [v["value"] for v in line["Billing_Type__c"]["picklistValues"]] == [
        "Time and Materials",
        "Fixed Fee",
        "Milestone",
    ]
    assert (line["CurrencyIsoCode"]["createable"], line["Change_Order__c"]["updateable"]) == (
        False,
        False,
    )
    assert {n: f["type"] for n, f in milestone.items()}.items() >= {
        "Name": "string",
        "Change_Order__c": "reference",
        "Action__c": "picklist",
        "Milestone__c": "string",
        "Line_Item_Id__c": "string",
        "Amount__c": "currency",
        "Planned_Date__c": "date",
    }.items()
    assert {
        "childSObject": "Change_Order_Line__c",
        "field": "Change_Order__c",
        "relationshipName": "Change_Order_Lines__r",
        "cascadeDelete": True,
    } in bodies["Change_Order__c"]["childRelationships"]
    assert {
        "childSObject": "Change_Order__c",
        "field": "Opportunity__c",
        "relationshipName": "Change_Orders__r",
        "cascadeDelete": False,
    } in opportunity["childRelationships"]


async def test_change_orders_are_created_read_and_upserted(org: Org, deal: dict[str, str]) -> None:
    change_order = await _change_order(org, deal, Budget_Delta__c=-250.5, Retroactive__c=True)
    line = await org.create(
        "Change_Order_Line__c",
        Change_Order__c=change_order[:15],
        Action__c="Add",
        Product__c="QA Testing",
        Billing_Type__c="Time and Materials",
        Rate__c=120,
        Hours__c=40.5,
    )
    milestone = await org.create(
        "Change_Order_Milestone__c",
        Change_Order__c=change_order,
        Action__c="Change",
        Name="Go-live",
        Milestone__c="a055g0000000001",
        Planned_Date__c="2026-06-30",
    )
    read = (await org.get(f"/sobjects/Change_Order__c/{change_order}")).json()
    read_line = (await org.get(f"/sobjects/Change_Order_Line__c/{line}")).json()
    read_milestone = (await org.get(f"/sobjects/Change_Order_Milestone__c/{milestone}")).json()
    path = "/sobjects/Change_Order__c/Q2C_External_Id__c/change-order:co-7"
    made = await org.patch(path, {"Name": "CO-7", "Opportunity__c": deal["opportunity"]})
    again = await org.patch(path, {"Description__c": "Second thoughts", "Amount_Delta__c": 0})

    assert change_order.startswith("a06") and len(change_order) == 18
    assert (read["Status__c"], read["Approved_At__c"]) == ("Draft", None)  # the default
    assert (read["Retroactive__c"], read["Budget_Delta__c"]) == (True, -250.5)
    assert (read["Amount_Delta__c"], read["Effective_Date__c"]) == (1200, "2026-03-01")
    assert read_line["Change_Order__c"] == change_order  # stored as 18 characters
    assert read_line["Name"].startswith("COL-")  # an auto-number name
    assert (read_line["Hours__c"], read_line["CurrencyIsoCode"]) == (40.5, "EUR")
    assert read_milestone["Milestone__c"] == "a055g0000000001"  # text keeps what was written
    assert read_milestone["CurrencyIsoCode"] == "EUR"  # the master's
    assert (made.status_code, again.status_code) == (201, 200)
    assert made.json()["id"] == again.json()["id"]
    fresh = (await org.get(path)).json()
    assert (fresh["Retroactive__c"], fresh["Status__c"]) == (False, "Draft")  # checkbox default


@pytest.mark.parametrize(
    ("obj", "body", "code", "field"),
    [
        (
            "Change_Order__c",
            {"Status__c": "Signed"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            None,
        ),
        ("Change_Order__c", {"Approved_At__c": "yesterday"}, "JSON_PARSER_ERROR", None),
        ("Change_Order__c", {"Approved_At__c": "2026-02-30T10:00:00Z"}, "JSON_PARSER_ERROR", None),
        ("Change_Order__c", {"Retroactive__c": "yes"}, "JSON_PARSER_ERROR", None),
        ("Change_Order__c", {"Effective_Date__c": "1 March"}, "JSON_PARSER_ERROR", None),
        ("Change_Order__c", {"Amount_Delta__c": "lots"}, "JSON_PARSER_ERROR", None),
        (
            "Change_Order__c",
            {"Opportunity__c": "001000000000000AAA"},
            "FIELD_INTEGRITY_EXCEPTION",
            None,
        ),
        (
            "Change_Order_Line__c",
            {"Action__c": "Swap"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            None,
        ),
        ("Change_Order_Line__c", {"Action__c": None}, "REQUIRED_FIELD_MISSING", None),
        (
            "Change_Order_Line__c",
            {"Billing_Type__c": "Retainer"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            None,
        ),
        (
            "Change_Order_Line__c",
            {"Line_Item_Id__c": "00k5g0000000001AAAX"},
            "STRING_TOO_LONG",
            None,
        ),
        (
            "Change_Order_Line__c",
            {"CurrencyIsoCode": "USD"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            None,
        ),
        ("Change_Order_Milestone__c", {"Planned_Date__c": "soon"}, "JSON_PARSER_ERROR", None),
        ("Change_Order_Milestone__c", {"Name": ""}, "REQUIRED_FIELD_MISSING", None),
    ],
)
async def test_change_order_fields_are_checked_by_type(
    org: Org, deal: dict[str, str], obj: str, body: dict[str, Any], code: str, field: str | None
) -> None:
    change_order = await _change_order(org, deal)
    records = {
        "Change_Order__c": change_order,
        "Change_Order_Line__c": await org.create(
            "Change_Order_Line__c", Change_Order__c=change_order, Action__c="Remove"
        ),
        "Change_Order_Milestone__c": await org.create(
            "Change_Order_Milestone__c", Change_Order__c=change_order, Action__c="Add", Name="M"
        ),
    }
    r = await org.patch(f"/sobjects/{obj}/{records[obj]}", body)
    assert r.status_code == 400, r.text
    [error] = r.json()
    assert error["errorCode"] == code
    assert error["fields"] == [field or next(iter(body))]


async def test_change_order_details_follow_their_master(org: Org, deal: dict[str, str]) -> None:
    change_order = await _change_order(org, deal)
    line = await org.create("Change_Order_Line__c", Change_Order__c=change_order, Action__c="Add")
    orphan = await org.post("Change_Order_Line__c", {"Action__c": "Add"})
    other = await _change_order(org, deal, Name="CO-002")
    reparent = await org.patch(f"/sobjects/Change_Order_Line__c/{line}", {"Change_Order__c": other})
    await org.patch(f"/sobjects/Change_Order__c/{change_order}", {"CurrencyIsoCode": "GBP"})
    moved = (await org.get(f"/sobjects/Change_Order_Line__c/{line}")).json()

    await org.http.delete(f"{API}/sobjects/Opportunity/{deal['opportunity']}", headers=org.headers)
    kept = (await org.get(f"/sobjects/Change_Order__c/{change_order}")).json()
    await org.http.delete(f"{API}/sobjects/Change_Order__c/{change_order}", headers=org.headers)
    gone = await org.get(f"/sobjects/Change_Order_Line__c/{line}")

    assert orphan.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert reparent.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert moved["CurrencyIsoCode"] == "GBP"
    assert kept["Opportunity__c"] is None  # a lookup: cleared, the change order stays
    assert gone.status_code == 404  # master-detail: deleted with its change order


async def test_approval_is_stamped_in_whole_seconds_unless_given(
    org: Org, deal: dict[str, str]
) -> None:
    stamped = await _change_order(org, deal)
    given = await _change_order(org, deal, Name="CO-002")
    before = datetime.now(UTC).replace(microsecond=0)
    await org.patch(f"/sobjects/Change_Order__c/{stamped}", {"Status__c": "Approved"})
    await org.patch(
        f"/sobjects/Change_Order__c/{given}",
        {"Status__c": "Approved", "Approved_At__c": "2026-12-01T10:00:00+01:00"},
    )
    first = (await org.get(f"/sobjects/Change_Order__c/{stamped}")).json()["Approved_At__c"]
    await org.patch(f"/sobjects/Change_Order__c/{stamped}", {"Description__c": "edited"})
    edited = (await org.get(f"/sobjects/Change_Order__c/{stamped}")).json()["Approved_At__c"]
    read_given = (await org.get(f"/sobjects/Change_Order__c/{given}")).json()

    assert first.endswith(".000+0000")
    moment = datetime.fromisoformat(first.replace("+0000", "+00:00"))
    assert before <= moment <= datetime.now(UTC)
    assert edited == first  # only entering Approved stamps it
    assert read_given["Approved_At__c"] == "2026-12-01T09:00:00.000+0000"  # in UTC


async def test_soql_on_change_orders_filters_orders_and_pages(
    org: Org, deal: dict[str, str]
) -> None:
    late = await _change_order(
        org, deal, Name="late", Status__c="Approved", Approved_At__c="2026-02-02T00:00:00Z"
    )
    early = await _change_order(
        org, deal, Name="early", Status__c="Approved", Approved_At__c="2026-02-01T00:00:00Z"
    )
    draft = await _change_order(org, deal, Name="draft")
    for n in range(250):
        await org.create(
            "Change_Order_Line__c",
            Change_Order__c=early,
            Action__c="Change",
            Line_Item_Id__c=f"00k5g{n:010d}",
            Rate__c=n,
        )
    ordered = await org.query(
        "SELECT Id, Name, Status__c, Approved_At__c, Opportunity__r.Name FROM Change_Order__c "
        f"WHERE Opportunity__c = '{deal['opportunity'][:15]}' "
        "ORDER BY Approved_At__c ASC NULLS LAST, CreatedDate, Id"
    )
    approved = await org.query(
        "SELECT Id FROM Change_Order__c WHERE Status__c IN ('Approved', 'Applied') "
        "AND Approved_At__c >= 2026-02-02T00:00:00Z AND Retroactive__c = false"
    )
    soql = (
        "SELECT Id, Rate__c, Change_Order__r.Name FROM Change_Order_Line__c "
        f"WHERE Change_Order__c = '{early}' ORDER BY Rate__c"
    )
    await org.http.post(
        "/_standin/faults",
        json={"kind": "503", "path": f"{API}/query", "count": 1},
    )
    refused = await org.query(soql)
    first = (await org.query(soql, **{"Sforce-Query-Options": "batchSize=200"})).json()
    rest = (await org.http.get(first["nextRecordsUrl"], headers=org.headers)).json()

    records = ordered.json()["records"]
    assert [r["Id"] for r in records] == [early, late, draft]
    assert records[0]["Opportunity__r"]["Name"] == "Globex rollout"
    assert [r["Id"] for r in approved.json()["records"]] == [late]
    assert (refused.status_code, refused.json()[0]["errorCode"]) == (503, "SERVER_UNAVAILABLE")
    assert (first["totalSize"], first["done"], len(first["records"])) == (250, False, 200)
    rates = [r["Rate__c"] for r in first["records"] + rest["records"]]
    assert rates == list(range(250))
    assert first["records"][0]["Change_Order__r"]["Name"] == "early"


async def test_change_orders_need_a_session_and_count_against_the_limit(
    tmp_path: Path,
) -> None:
    async with _client(tmp_path / "sf.sqlite3") as http:
        anonymous = await http.get(f"{API}/sobjects/Change_Order__c/a065g0000000001AAA")
        org = Org(http, await _token(http))
        missing = await org.get("/sobjects/Change_Order__c/a065g0000000001AAA")
        described = await org.get("/sobjects/Change_Order_Milestone__c/describe")
        await http.post("/_standin/faults", json={"kind": "429", "retry_after": 3})
        limited = await org.get("/sobjects/Change_Order_Line__c/a075g0000000001AAA")

    assert (anonymous.status_code, anonymous.json()[0]["errorCode"]) == (
        401,
        "INVALID_SESSION_ID",
    )
    assert (missing.status_code, missing.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    assert described.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert limited.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
