"""Salesforce connector pieces that need no server: webhook checks, mapping, error classes."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from canonical import (
    BillingType,
    ExpensePolicy,
    FeeRemainder,
    Money,
    Opportunity,
    PaymentTerms,
    plan_deal,
)
from connectors.errors import AuthFailed, RateLimitedError, TransientError, ValidationFailed
from connectors.salesforce import (
    InvalidEvent,
    InvalidSignature,
    SalesforceClient,
    StaleSignature,
    parse_closed_won_event,
    soql_literal,
    to_opportunity,
    verify_webhook_signature,
)
from connectors.salesforce.mapping import (
    billing_type,
    fee_schedule,
    payment_terms,
    record_key,
    to_expense_policy,
    write_back_fields,
)
from connectors.salesforce.wire import (
    MilestoneRecord,
    OpportunityLineItemRecord,
    OpportunityRecord,
)
from tests.workflows.fakes import RULES, account

SECRET = "whsec-test"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVENT = {
    "eventId": "5d0f3f6e-8a59-4c1b-9d7c-2f1de0a0c001",
    "eventType": "opportunity.closed_won",
    "occurredAt": "2025-03-01T11:59:58.123Z",
    "organizationId": "00D5g000004Xy1ZEAS",
    "sobject": {
        "Id": "0065g0000000001AAA",
        "Name": "Globex rollout",
        "AccountId": "0015g0000000001AAA",
        "StageName": "Closed Won",
        "Amount": 19675.99,
        "CurrencyIsoCode": "EUR",
        "CloseDate": "2025-06-30",
        "LastModifiedDate": "2025-03-01T11:59:58.000+0000",
    },
}


def _signed(body: bytes, at: datetime = NOW, secret: str = SECRET) -> str:
    t = int(at.timestamp())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# ---------------------------------------------------------------- webhook


def test_signature_accepts_a_fresh_delivery_and_rotation() -> None:
    body = json.dumps(EVENT).encode()
    verify_webhook_signature(body, _signed(body), SECRET, now=NOW + timedelta(seconds=30))
    # During a secret rotation the sender adds a second v1; one match suffices.
    rotating = _signed(body, secret="old") + "," + _signed(body).split(",")[1]
    verify_webhook_signature(body, rotating, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, InvalidSignature),
        ("", InvalidSignature),
        ("v1=abc", InvalidSignature),
        ("t=soon,v1=abc", InvalidSignature),
        (f"t={int(NOW.timestamp())}", InvalidSignature),
        (f"t={int(NOW.timestamp())},v1=" + "0" * 64, InvalidSignature),
    ],
)
def test_signature_refuses_malformed_headers(header: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_webhook_signature(b"{}", header, SECRET, now=NOW)


def test_signature_refuses_stale_and_future_timestamps() -> None:
    body = json.dumps(EVENT).encode()
    with pytest.raises(StaleSignature):
        verify_webhook_signature(body, _signed(body), SECRET, now=NOW + timedelta(minutes=6))
    with pytest.raises(StaleSignature):
        verify_webhook_signature(body, _signed(body), SECRET, now=NOW - timedelta(minutes=6))
    verify_webhook_signature(
        body, _signed(body), SECRET, now=NOW + timedelta(minutes=6), tolerance=timedelta(hours=1)
    )


def test_event_parses_amount_exactly() -> None:
    event = parse_closed_won_event(json.dumps(EVENT).encode())
    assert event.event_id == EVENT["eventId"]
    assert event.sobject.amount == Decimal("19675.99")
    assert event.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"eventId": None}, "eventId"),
        ({"eventType": "opportunity.closed_lost"}, "eventType"),
        ({"occurredAt": "yesterday"}, "occurredAt"),
        ({"sobject": {**EVENT["sobject"], "CloseDate": None}}, "sobject.CloseDate"),  # type: ignore[dict-item]
        ({"sobject": {k: v for k, v in EVENT["sobject"].items() if k != "Id"}}, "sobject.Id"),  # type: ignore[attr-defined]
    ],
)
def test_event_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_closed_won_event(json.dumps({**EVENT, **change}))
    assert refused.value.field == field
    assert field in str(refused.value)


def test_event_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidEvent):
        parse_closed_won_event(b"<xml/>")


# ---------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    ("text", "days"),
    [("Net 30", 30), ("net45", 45), ("Net 60 days", 60), ("Due on Receipt", 0), (None, None)],
)
def test_payment_terms(text: str | None, days: int | None) -> None:
    expected = None if days is None else PaymentTerms(net_days=days)
    assert payment_terms(text, record_id="006") == expected


def test_unknown_payment_terms_name_the_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        payment_terms("2/10 Net 30", record_id="006")
    assert refused.value.field == "Opportunity.Payment_Terms__c"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Time and Materials", BillingType.TIME_AND_MATERIALS),
        ("time_and_materials", BillingType.TIME_AND_MATERIALS),
        ("Fixed Fee", BillingType.FIXED_FEE),
        ("Milestone", BillingType.MILESTONE),
        ("", None),
    ],
)
def test_billing_type(text: str, kind: BillingType | None) -> None:
    assert billing_type(text, sobject="OpportunityLineItem", record_id="00k") == kind


def _opportunity(**overrides: Any) -> OpportunityRecord:
    return OpportunityRecord.model_validate(
        {
            "Id": "0065g0000000001AAA",
            "Name": "Deal",
            "AccountId": "0015g0000000001AAA",
            "StageName": "Closed Won",
            "CloseDate": "2025-06-30",
            "IsWon": True,
            **overrides,
        }
    )


def _line(**overrides: Any) -> OpportunityLineItemRecord:
    return OpportunityLineItemRecord.model_validate(
        {
            "Id": "00k5g0000000001AAA",
            "Product2": {"Name": "Consulting"},
            "Quantity": Decimal(10),
            "UnitPrice": Decimal("99.90"),
            **overrides,
        }
    )


def _milestone(**overrides: Any) -> MilestoneRecord:
    return MilestoneRecord.model_validate(
        {
            "Id": "a055g0000000001AAA",
            "Name": "Go-live",
            "Opportunity__c": "0065g0000000001AAA",
            "Line_Item_Id__c": "00k5g0000000001AAA",
            "Amount__c": Decimal("999.00"),
            "Planned_Date__c": "2025-09-30",
            "CurrencyIsoCode": "EUR",
            **overrides,
        }
    )


def test_single_currency_org_uses_the_default_currency() -> None:
    opp = to_opportunity(_opportunity(), [_line()], default_currency="CHF")
    assert opp.currency == "CHF"
    assert opp.amount.amount == Decimal("999.00") and opp.amount.currency == "CHF"


def test_a_line_without_billing_type_is_left_to_the_service_catalogue() -> None:
    opp = to_opportunity(
        _opportunity(CurrencyIsoCode="EUR"),
        [_line(), _line(Id="00k5g0000000002AAA", Billing_Type__c="Milestone")],
        default_currency="USD",
    )
    assert [ln.billing_type for ln in opp.lines] == [None, BillingType.MILESTONE]
    assert opp.billing_types() == {BillingType.MILESTONE}


def test_contract_terms_map_to_canonical_values() -> None:
    fee = _line(
        Id="00k5g0000000002AAA",
        Billing_Type__c="Fixed Fee",
        Fee_Schedule__c="Monthly Instalments",
        Instalments__c=Decimal("6.0"),  # a number field comes as 6.0
        Quantity=Decimal(1),
        UnitPrice=Decimal("12000"),
    )
    hourly = _line(Billing_Type__c="Time and Materials", Not_To_Exceed__c=Decimal("900.5"))
    opp = to_opportunity(
        _opportunity(
            CurrencyIsoCode="EUR",
            Not_To_Exceed__c=Decimal("50000"),
            Upfront_Percent__c=Decimal("20"),
            Contract_End_Date__c="2025-12-31",
            Expense_Markup_Percent__c=Decimal("12.5"),
            Billable_Expense_Categories__c="Travel;Lodging",
        ),
        [hourly, fee],
        [
            _milestone(Line_Item_Id__c="00k5g0000000002", Amount__c=Decimal("4000")),
            _milestone(Id="a055g0000000002AAA", Name="Handover", Planned_Date__c=None),
        ],
        default_currency="USD",
    )
    assert opp.not_to_exceed == Money.of("50000", "EUR")
    assert opp.upfront_percent == Decimal(20)
    assert opp.end_date == date(2025, 12, 31)
    assert opp.expense_policy == ExpensePolicy(
        billable_categories=["Travel", "Lodging"], markup_percent=Decimal("12.5")
    )
    assert (opp.lines[0].not_to_exceed, opp.lines[0].fee_remainder) == (
        Money.of("900.5", "EUR"),
        None,
    )
    assert (opp.lines[1].fee_remainder, opp.lines[1].instalments) == (
        FeeRemainder.INSTALMENTS,
        6,
    )
    assert [(m.id, m.name, m.amount, m.due_date, m.line_id) for m in opp.milestones] == [
        # The 15-character line id finds the line; the milestone carries the line's own id.
        ("a055g0000000001AAA", "Go-live", Money.of("4000", "EUR"), date(2025, 9, 30), fee.id),
        ("a055g0000000002AAA", "Handover", Money.of("999", "EUR"), None, hourly.id),
    ]


def test_a_milestone_line_with_its_milestone_is_bookable() -> None:
    """The deal's own `Milestone__c` records satisfy "milestone lines need milestones"."""
    line = _line(Billing_Type__c="Milestone", Quantity=Decimal(1), UnitPrice=Decimal(999))
    bare = to_opportunity(_opportunity(), [line], default_currency="EUR")
    with_milestone = to_opportunity(_opportunity(), [line], [_milestone()], default_currency="EUR")
    customer = account("DE", tax_id="DE136695976").model_copy(update={"id": bare.account_id})

    def milestone_issues(deal: Opportunity) -> list[str]:
        return [i for i in plan_deal(deal, customer, RULES).issues if "milestone" in i]

    assert milestone_issues(bare) != []
    assert milestone_issues(with_milestone) == []


def test_a_deal_without_contract_terms_keeps_the_defaults() -> None:
    opp = to_opportunity(_opportunity(), [_line()], default_currency="EUR")
    assert (opp.milestones, opp.not_to_exceed, opp.upfront_percent) == ([], None, Decimal(0))
    assert (opp.end_date, opp.expense_policy) == (None, None)  # None: the firm's policy
    assert (opp.lines[0].fee_remainder, opp.lines[0].instalments) == (None, None)


@pytest.mark.parametrize(
    ("categories", "markup", "policy"),
    [
        (" Travel ; ;Travel;Meals", None, ExpensePolicy(billable_categories=["Travel", "Meals"])),
        (None, Decimal(15), ExpensePolicy(markup_percent=Decimal(15))),
        ("", Decimal(0), ExpensePolicy()),  # "nothing is billable", stated
    ],
)
def test_expense_policy_from_the_multi_select_and_the_markup(
    categories: str | None, markup: Decimal | None, policy: ExpensePolicy
) -> None:
    record = _opportunity(
        Billable_Expense_Categories__c=categories, Expense_Markup_Percent__c=markup
    )
    assert to_expense_policy(record) == policy


@pytest.mark.parametrize(
    ("text", "remainder"),
    [
        ("On Completion", FeeRemainder.ON_COMPLETION),
        ("Monthly Instalments", FeeRemainder.INSTALMENTS),
        ("monthly installments", FeeRemainder.INSTALMENTS),
        ("on_completion", FeeRemainder.ON_COMPLETION),
        (" ", None),
        (None, None),
    ],
)
def test_fee_schedule(text: str | None, remainder: FeeRemainder | None) -> None:
    assert fee_schedule(text, record_id="00k") == remainder


def _refusal(
    *,
    opportunity: dict[str, Any] | None = None,
    line: dict[str, Any] | None = None,
    milestone: dict[str, Any] | None = None,
) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as refused:
        to_opportunity(
            _opportunity(CurrencyIsoCode="EUR", **(opportunity or {})),
            [_line(**(line or {}))],
            [_milestone(**(milestone or {}))],
            default_currency="USD",
        )
    assert refused.value.retryable is False
    return refused.value


@pytest.mark.parametrize(
    ("where", "change", "field"),
    [
        ("milestone", {"Amount__c": None}, "Milestone__c.Amount__c"),
        ("milestone", {"Amount__c": Decimal(0)}, "Milestone__c.Amount__c"),
        ("milestone", {"Name": " "}, "Milestone__c.Name"),
        ("milestone", {"CurrencyIsoCode": "USD"}, "Milestone__c.CurrencyIsoCode"),
        ("milestone", {"Line_Item_Id__c": "00k5g0000000099AAA"}, "Milestone__c.Line_Item_Id__c"),
        ("milestone", {"Line_Item_Id__c": None}, "Milestone__c.Line_Item_Id__c"),
        ("milestone", {"Line_Item_Id__c": "not an id"}, "Milestone__c.Line_Item_Id__c"),
        ("line", {"Fee_Schedule__c": "Quarterly"}, "OpportunityLineItem.Fee_Schedule__c"),
        ("line", {"Instalments__c": Decimal("2.5")}, "OpportunityLineItem.Instalments__c"),
        ("line", {"Instalments__c": Decimal(0)}, "OpportunityLineItem.Instalments__c"),
        ("line", {"Instalments__c": Decimal(500)}, "OpportunityLineItem.Instalments__c"),
        ("line", {"Not_To_Exceed__c": Decimal(-1)}, "OpportunityLineItem.Not_To_Exceed__c"),
        ("line", {"Billing_Type__c": "Retainer"}, "OpportunityLineItem.Billing_Type__c"),
        ("opportunity", {"Not_To_Exceed__c": Decimal(-1)}, "Opportunity.Not_To_Exceed__c"),
        ("opportunity", {"Upfront_Percent__c": Decimal(120)}, "Opportunity.Upfront_Percent__c"),
        ("opportunity", {"Upfront_Percent__c": Decimal(-5)}, "Opportunity.Upfront_Percent__c"),
        (
            "opportunity",
            {"Expense_Markup_Percent__c": Decimal(-1)},
            "Opportunity.Expense_Markup_Percent__c",
        ),
    ],
)
def test_invalid_contract_values_name_the_salesforce_field(
    where: str, change: dict[str, Any], field: str
) -> None:
    refused = _refusal(**{where: change})
    assert refused.field == field
    assert refused.message.split(":")[0].split()[0] == field.split(".")[0]  # names the record


def test_a_milestone_on_another_deals_line_says_which_line() -> None:
    refused = _refusal(milestone={"Line_Item_Id__c": "00k5g0000000099AAA"})
    assert refused.code == "UNKNOWN_LINE_ITEM"
    assert "'00k5g0000000099AAA' is not a line item of opportunity" in refused.message


def test_record_key_matches_15_and_18_character_ids() -> None:
    assert record_key("0065g0000000001") == record_key("0065G0000000001AAA".lower()) is not None
    assert record_key("0065g0000000001") == record_key("0065g0000000001AAA")
    assert record_key("0065G0000000001") != record_key("0065g0000000001")  # 15 is case-exact
    assert record_key("006-bad") is None


def test_line_that_canonical_refuses_names_the_salesforce_field() -> None:
    with pytest.raises(ValidationFailed) as refused:
        to_opportunity(_opportunity(), [_line(Quantity=Decimal(-1))], default_currency="EUR")
    assert refused.value.field == "OpportunityLineItem.Quantity"
    assert refused.value.retryable is False


def test_write_back_keeps_known_ids_and_always_sets_the_message() -> None:
    body = write_back_fields(
        status="invoiced", project_id=None, billing_customer_id=None, run_url=None, message=None
    )
    assert body == {"Q2C_Status__c": "invoiced", "Q2C_Message__c": None}
    long = write_back_fields(
        status="failed",
        project_id="P1",
        billing_customer_id=None,
        run_url=None,
        message="x" * 40_000,
    )
    assert long["Q2C_Project_Id__c"] == "P1"
    assert len(long["Q2C_Message__c"]) == 32_000


def test_soql_literal_escapes_quotes() -> None:
    assert soql_literal("O'Brien\\") == "'O\\'Brien\\\\'"


# ---------------------------------------------------------------- client errors


def _client(handler: Any) -> SalesforceClient:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/services/oauth2/token":
            calls["token"] += 1
            return httpx.Response(
                200,
                json={"access_token": f"tok{calls['token']}", "instance_url": "https://org.test"},
            )
        calls["api"] += 1
        response: httpx.Response = handler(request)
        return response

    calls = {"token": 0, "api": 0}
    client = SalesforceClient(
        "https://login.test", "id", "secret", transport=httpx.MockTransport(route)
    )
    client.calls = calls  # type: ignore[attr-defined]
    return client


async def test_second_401_is_auth_failed_after_one_reauth() -> None:
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    async with _client(lambda r: httpx.Response(401, json=expired)) as sf:
        with pytest.raises(AuthFailed):
            await sf.get("Account", "0015g0000000001AAA")
        assert sf.calls == {"token": 2, "api": 2}  # type: ignore[attr-defined]


async def test_org_api_limit_on_403_is_rate_limited() -> None:
    body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    async with _client(lambda r: httpx.Response(403, json=body)) as sf:
        with pytest.raises(RateLimitedError):
            await sf.get("Account", "0015g0000000001AAA")


async def test_row_lock_is_transient() -> None:
    body = [
        {
            "message": "unable to obtain exclusive access",
            "errorCode": "UNABLE_TO_LOCK_ROW",
            "fields": [],
        }
    ]
    async with _client(lambda r: httpx.Response(400, json=body)) as sf:
        with pytest.raises(TransientError) as locked:
            await sf.update("Opportunity", "0065g0000000001AAA", {"StageName": "Closed Won"})
    assert locked.value.code == "UNABLE_TO_LOCK_ROW"


async def test_html_error_page_is_transient() -> None:
    async with _client(lambda r: httpx.Response(502, text="<html>Bad gateway</html>")) as sf:
        with pytest.raises(TransientError):
            await sf.get("Account", "0015g0000000001AAA")


async def test_malformed_id_is_refused_before_any_call() -> None:
    async with _client(lambda r: httpx.Response(500)) as sf:
        with pytest.raises(ValidationFailed) as refused:
            await sf.fetch_opportunity("006' OR Name != '")
        assert sf.calls["api"] == 0  # type: ignore[attr-defined]
    assert refused.value.code == "MALFORMED_ID"


async def test_decimals_go_out_exactly() -> None:
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(201, json={"id": "00k5g0000000001AAA", "success": True, "errors": []})

    async with _client(handler) as sf:
        await sf.create(
            "OpportunityLineItem", {"UnitPrice": Decimal("0.10"), "Quantity": Decimal("3")}
        )
    assert json.loads(sent[0], parse_float=str) == {"UnitPrice": "0.1", "Quantity": "3.0"}


def test_soql_datetime_is_utc_whole_seconds_and_refuses_naive_times() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from connectors.salesforce import soql_datetime

    paris = timezone(timedelta(hours=1))
    assert soql_datetime(datetime(2026, 12, 1, 2, 5, 7, 987000, tzinfo=paris)) == (
        "2026-12-01T01:05:07Z"  # rounded down: the sweep may see a change twice, never skip it
    )
    assert soql_datetime(datetime(2026, 12, 1, tzinfo=UTC)) == "2026-12-01T00:00:00Z"
    with pytest.raises(ValueError):
        soql_datetime(datetime(2026, 12, 1))


async def test_closed_won_changed_since_asks_for_changes_oldest_first() -> None:
    from datetime import UTC, datetime

    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["q"])
        record = {
            "attributes": {"type": "Opportunity"},
            "Id": "0065g0000000001AAA",
            "LastModifiedDate": "2026-12-01T00:05:07.250+0000",
        }
        return httpx.Response(200, json={"totalSize": 1, "done": True, "records": [record]})

    async with _client(handler) as sf:
        found = [
            o
            async for o in sf.closed_won_changed_since(
                datetime(2026, 12, 1, 0, 5, 7, 500000, tzinfo=UTC), limit=50
            )
        ]
    assert asked == [
        "SELECT Id, LastModifiedDate FROM Opportunity WHERE StageName = 'Closed Won' "
        "AND LastModifiedDate >= 2026-12-01T00:05:07Z "
        "ORDER BY LastModifiedDate ASC, Id ASC LIMIT 50"
    ]
    assert [(o.id, o.last_modified_date) for o in found] == [
        ("0065g0000000001AAA", datetime(2026, 12, 1, 0, 5, 7, 250000, tzinfo=UTC))
    ]


async def test_fetch_opportunity_reads_every_page_of_milestones() -> None:
    """One more query for the `Milestone__c` records, followed over `nextRecordsUrl`."""
    asked: list[str] = []
    opportunity = {
        "Id": "0065g0000000001AAA",
        "Name": "Deal",
        "AccountId": "0015g0000000001AAA",
        "StageName": "Closed Won",
        "CloseDate": "2025-06-30",
        "CurrencyIsoCode": "EUR",
        "IsWon": True,
    }
    line = {"Id": "00k5g0000000001AAA", "Product2": {"Name": "Go-live"}, "Quantity": 1}
    line |= {"UnitPrice": 3000, "Billing_Type__c": "Milestone"}

    def milestone(n: int) -> dict[str, Any]:
        return {
            "attributes": {"type": "Milestone__c"},
            "Id": f"a055g000000000{n}AAA",
            "Name": f"Phase {n}",
            "Opportunity__c": opportunity["Id"],
            "Line_Item_Id__c": line["Id"],
            "Amount__c": 1000.0,
            "Planned_Date__c": f"2025-0{n + 6}-30",
            "CurrencyIsoCode": "EUR",
        }

    def handler(request: httpx.Request) -> httpx.Response:
        if "/sobjects/Opportunity/" in request.url.path:
            return httpx.Response(200, json=opportunity)
        if request.url.path.endswith("/query/01gMORE-2"):
            page = {"totalSize": 3, "done": True, "records": [milestone(3)]}
            return httpx.Response(200, json=page)
        asked.append(request.url.params["q"])
        if "FROM OpportunityLineItem" in asked[-1]:
            return httpx.Response(200, json={"totalSize": 1, "done": True, "records": [line]})
        first = {
            "totalSize": 3,
            "done": False,
            "records": [milestone(1), milestone(2)],
            "nextRecordsUrl": "/services/data/v60.0/query/01gMORE-2",
        }
        return httpx.Response(200, json=first)

    async with _client(handler) as sf:
        opp = await sf.fetch_opportunity("0065g0000000001AAA")
    assert asked[1] == (
        "SELECT Id, Name, Opportunity__c, Line_Item_Id__c, Amount__c, Planned_Date__c, "
        "CurrencyIsoCode FROM Milestone__c WHERE Opportunity__c = '0065g0000000001AAA' "
        "ORDER BY Planned_Date__c ASC NULLS LAST, CreatedDate, Id"
    )
    assert [(m.name, m.amount, m.due_date) for m in opp.milestones] == [
        (f"Phase {n}", Money.of("1000.0", "EUR"), date(2025, n + 6, 30)) for n in (1, 2, 3)
    ]
