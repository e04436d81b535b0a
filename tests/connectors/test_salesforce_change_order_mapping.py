"""`Change_Order__c` and its details to a canonical `ChangeOrder`, the write-back body and the
approval event: no server, every field, each refusal naming the Salesforce field."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from canonical import BillingType, ChangeAction, ChangeOrderStatus, Money
from connectors.errors import ValidationFailed
from connectors.salesforce import (
    InvalidEvent,
    canonical_id,
    change_order_write_back_fields,
    parse_change_order_approved_event,
    record_key,
    to_change_order,
)
from connectors.salesforce.wire import (
    ChangeOrderLineRecord,
    ChangeOrderMilestoneRecord,
    ChangeOrderRecord,
)

CO = "a065g0000000001AAA"
DEAL_LINE = "00k5g0000000001AAA"
MILESTONE = "a055g0000000001AAA"


def _co(**overrides: Any) -> ChangeOrderRecord:
    return ChangeOrderRecord.model_validate(
        {
            "Id": CO,
            "Name": "CO-001",
            "Opportunity__c": "0065g0000000001AAA",
            "Amount_Delta__c": Decimal("7200.00"),
            "Effective_Date__c": "2026-03-01",
            "Budget_Delta__c": Decimal("-150.25"),
            "New_End_Date__c": "2026-12-31",
            "Retroactive__c": True,
            "Status__c": "Approved",
            "Approved_At__c": "2026-02-20T09:30:00.000+0000",
            "CurrencyIsoCode": "EUR",
            "Description__c": " Rates from March ",
            "LastModifiedDate": "2026-02-20T09:31:00.000+0000",
            **overrides,
        }
    )


def _line(**overrides: Any) -> ChangeOrderLineRecord:
    return ChangeOrderLineRecord.model_validate(
        {
            "Id": "a075g0000000001AAA",
            "Change_Order__c": CO,
            "Action__c": "Change",
            "Line_Item_Id__c": DEAL_LINE,
            "Rate__c": Decimal("180.50"),
            "CurrencyIsoCode": "EUR",
            **overrides,
        }
    )


def _added(**overrides: Any) -> ChangeOrderLineRecord:
    return _line(
        **{
            "Id": "a075g0000000002AAA",
            "Action__c": "Add",
            "Line_Item_Id__c": None,
            "Product__c": "QA Testing",
            "Role__c": "QA Engineer",
            "Billing_Type__c": "Time and Materials",
            "Rate__c": Decimal("120"),
            "Hours__c": Decimal("40.5"),
            **overrides,
        }
    )


def _milestone(**overrides: Any) -> ChangeOrderMilestoneRecord:
    return ChangeOrderMilestoneRecord.model_validate(
        {
            "Id": "a085g0000000001AAA",
            "Change_Order__c": CO,
            "Action__c": "Change",
            "Milestone__c": MILESTONE,
            "Name": "Go-live",
            "Amount__c": Decimal("8500.25"),
            "Planned_Date__c": "2026-06-30",
            "CurrencyIsoCode": "EUR",
            **overrides,
        }
    )


def test_every_field_maps_to_its_canonical_value() -> None:
    added_milestone = _milestone(
        Id="a085g0000000002AAA",
        Action__c="Add",
        Milestone__c=None,
        Line_Item_Id__c="00k5g0000000004",
        Name="UAT",
        Planned_Date__c=None,
    )
    removed = _line(Id="a075g0000000003AAA", Action__c="Remove", Rate__c=None)
    co = to_change_order(
        _co(),
        [_line(), _added(), removed],
        [_milestone(), added_milestone],
        default_currency="USD",
    )

    assert (co.id, co.crm, co.opportunity_id, co.name) == (
        CO,
        "salesforce",
        "0065g0000000001AAA",
        "CO-001",
    )
    assert (co.status, co.currency, co.effective_date) == (
        ChangeOrderStatus.APPROVED,
        "EUR",
        date(2026, 3, 1),
    )
    assert co.amount_delta == Money.of("7200.00", "EUR")
    assert co.budget_delta == Money.of("-150.25", "EUR")
    assert (co.new_end_date, co.retroactive) == (date(2026, 12, 31), True)
    assert co.approved_at == datetime(2026, 2, 20, 9, 30, tzinfo=UTC)
    assert co.updated_at == datetime(2026, 2, 20, 9, 31, tzinfo=UTC)
    assert co.description == "Rates from March"
    changed, added, gone = co.lines
    assert (changed.action, changed.line_id, changed.rate) == (
        ChangeAction.CHANGE,
        DEAL_LINE,
        Money.of("180.50", "EUR"),
    )
    assert (changed.task, changed.role, changed.billing_type, changed.amount, changed.hours) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert (added.action, added.line_id, added.task, added.role) == (
        ChangeAction.ADD,
        "a075g0000000002AAA",  # an added line is its own record
        "QA Testing",
        "QA Engineer",
    )
    assert (added.billing_type, added.rate, added.hours) == (
        BillingType.TIME_AND_MATERIALS,
        Money.of("120", "EUR"),
        Decimal("40.5"),
    )
    assert (gone.action, gone.line_id, gone.rate) == (ChangeAction.REMOVE, DEAL_LINE, None)
    moved, new = co.milestones
    assert (moved.action, moved.milestone_id, moved.line_id, moved.name) == (
        ChangeAction.CHANGE,
        MILESTONE,
        None,
        "Go-live",
    )
    assert (moved.amount, moved.planned_date) == (Money.of("8500.25", "EUR"), date(2026, 6, 30))
    assert (new.action, new.milestone_id, new.line_id, new.planned_date) == (
        ChangeAction.ADD,
        "a085g0000000002AAA",
        "00k5g0000000004AAA",  # the 15-character id as the line has it
        None,
    )


def test_a_bare_change_order_keeps_the_defaults() -> None:
    co = to_change_order(
        _co(
            Budget_Delta__c=None,
            New_End_Date__c=None,
            Retroactive__c=None,
            Approved_At__c=None,
            CurrencyIsoCode=None,
            Description__c=None,
            Status__c="Draft",
        ),
        default_currency="CHF",
    )
    assert (co.currency, co.amount_delta) == ("CHF", Money.of("7200", "CHF"))
    assert (co.budget_delta, co.new_end_date, co.retroactive) == (None, None, False)
    assert (co.approved_at, co.description, co.status) == (None, None, ChangeOrderStatus.DRAFT)
    assert (co.lines, co.milestones) == ([], [])
    assert co.budget_change() == Decimal(0)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Draft", ChangeOrderStatus.DRAFT),
        ("Approved", ChangeOrderStatus.APPROVED),
        ("Applied", ChangeOrderStatus.APPLIED),
        (" rejected ", ChangeOrderStatus.REJECTED),
        ("FAILED", ChangeOrderStatus.FAILED),
    ],
)
def test_statuses(text: str, status: ChangeOrderStatus) -> None:
    assert to_change_order(_co(Status__c=text), default_currency="EUR").status is status


@pytest.mark.parametrize(
    ("where", "change", "field"),
    [
        ("co", {"Status__c": "Signed"}, "Change_Order__c.Status__c"),
        ("co", {"Status__c": None}, "Change_Order__c.Status__c"),
        ("co", {"Opportunity__c": None}, "Change_Order__c.Opportunity__c"),
        ("co", {"Effective_Date__c": None}, "Change_Order__c.Effective_Date__c"),
        ("co", {"Amount_Delta__c": None}, "Change_Order__c.Amount_Delta__c"),
        ("co", {"Name": " "}, "Change_Order__c.Name"),
        ("co", {"CurrencyIsoCode": "EURO"}, "Change_Order__c.CurrencyIsoCode"),
        ("line", {"Action__c": "Swap"}, "Change_Order_Line__c.Action__c"),
        ("line", {"Action__c": None}, "Change_Order_Line__c.Action__c"),
        ("line", {"Line_Item_Id__c": None}, "Change_Order_Line__c.Line_Item_Id__c"),
        ("line", {"Line_Item_Id__c": "line 1"}, "Change_Order_Line__c.Line_Item_Id__c"),
        ("line", {"Line_Item_Id__c": "00k5g0000000001AA!"}, "Change_Order_Line__c.Line_Item_Id__c"),
        ("line", {"Line_Item_Id__c": "00k5g0000000001AA9"}, "Change_Order_Line__c.Line_Item_Id__c"),
        ("line", {"Rate__c": Decimal(-1)}, "Change_Order_Line__c.Rate__c"),
        ("line", {"Amount__c": Decimal(-1)}, "Change_Order_Line__c.Amount__c"),
        ("line", {"Hours__c": Decimal(0)}, "Change_Order_Line__c.Hours__c"),
        ("line", {"Billing_Type__c": "Retainer"}, "Change_Order_Line__c.Billing_Type__c"),
        ("line", {"CurrencyIsoCode": "USD"}, "Change_Order_Line__c.CurrencyIsoCode"),
        ("added", {"Line_Item_Id__c": DEAL_LINE}, "Change_Order_Line__c.Line_Item_Id__c"),
        ("added", {"Product__c": " "}, "Change_Order_Line__c.Product__c"),
        ("added", {"Billing_Type__c": None}, "Change_Order_Line__c.Billing_Type__c"),
        ("added", {"Rate__c": None}, "Change_Order_Line__c.Rate__c"),
        ("milestone", {"Action__c": "Move"}, "Change_Order_Milestone__c.Action__c"),
        ("milestone", {"Milestone__c": None}, "Change_Order_Milestone__c.Milestone__c"),
        ("milestone", {"Milestone__c": "Go-live"}, "Change_Order_Milestone__c.Milestone__c"),
        ("milestone", {"Line_Item_Id__c": "x"}, "Change_Order_Milestone__c.Line_Item_Id__c"),
        ("milestone", {"Amount__c": Decimal(0)}, "Change_Order_Milestone__c.Amount__c"),
        ("milestone", {"Amount__c": Decimal(-5)}, "Change_Order_Milestone__c.Amount__c"),
        ("milestone", {"CurrencyIsoCode": "GBP"}, "Change_Order_Milestone__c.CurrencyIsoCode"),
        (
            "added_milestone",
            {"Milestone__c": MILESTONE},
            "Change_Order_Milestone__c.Milestone__c",
        ),
        ("added_milestone", {"Line_Item_Id__c": None}, "Change_Order_Milestone__c.Line_Item_Id__c"),
        ("added_milestone", {"Amount__c": None}, "Change_Order_Milestone__c.Amount__c"),
    ],
)
def test_invalid_values_name_the_salesforce_field(
    where: str, change: dict[str, Any], field: str
) -> None:
    milestone = {"Action__c": "Add", "Milestone__c": None, "Line_Item_Id__c": DEAL_LINE}
    records = {
        "co": (_co(**change) if where == "co" else _co()),
        "lines": [
            _line(**change) if where == "line" else _line(),
            _added(**change) if where == "added" else _added(),
        ],
        "milestones": [
            _milestone(**change) if where == "milestone" else _milestone(),
            _milestone(**{**milestone, **change})
            if where == "added_milestone"
            else _milestone(**milestone),
        ],
    }
    with pytest.raises(ValidationFailed) as refused:
        to_change_order(
            records["co"],  # type: ignore[arg-type]
            records["lines"],  # type: ignore[arg-type]
            records["milestones"],  # type: ignore[arg-type]
            default_currency="USD",
        )
    assert refused.value.field == field
    assert refused.value.retryable is False
    assert refused.value.message.split()[0] == field.split(".")[0]  # names the record


def test_15_and_18_character_ids_come_out_as_salesforce_returns_them() -> None:
    assert canonical_id("0065g0000000001") == "0065g0000000001AAA"
    assert canonical_id(" 0065g0000000001aaa ") == "0065g0000000001AAA"
    upper = canonical_id("0065G0000000001")
    assert upper is not None and upper[:15] == "0065G0000000001"
    assert upper != "0065g0000000001AAA"  # a 15-character id is case-exact
    assert canonical_id(upper.lower()) == upper  # the suffix restores the capitals
    assert record_key(upper) == record_key("0065G0000000001")
    assert canonical_id("006-bad") is None
    assert canonical_id("0065g0000000001a!c") is None
    assert canonical_id("0065g00000000019AA") is None  # 9 is no checksum character


def test_write_back_body() -> None:
    assert change_order_write_back_fields(
        status=ChangeOrderStatus.APPLIED, message=None, run_url=None
    ) == {"Status__c": "Applied", "Q2C_Message__c": None}
    failed = change_order_write_back_fields(
        status=ChangeOrderStatus.FAILED, message="x" * 40_000, run_url="http://ui/run"
    )
    assert failed["Status__c"] == "Failed" and failed["Q2C_Run_Url__c"] == "http://ui/run"
    assert len(failed["Q2C_Message__c"]) == 32_000
    rejected = change_order_write_back_fields(
        status=ChangeOrderStatus.REJECTED, message="over budget", run_url=None
    )
    assert rejected == {"Status__c": "Rejected", "Q2C_Message__c": "over budget"}
    for status in (ChangeOrderStatus.DRAFT, ChangeOrderStatus.APPROVED):
        with pytest.raises(ValidationFailed) as refused:
            change_order_write_back_fields(status=status, message=None, run_url=None)
        assert refused.value.field == "Change_Order__c.Status__c"


APPROVED = {
    "eventId": "5d0f3f6e-8a59-4c1b-9d7c-2f1de0a0c002",
    "eventType": "change_order.approved",
    "occurredAt": "2026-02-20T09:30:00.123Z",
    "organizationId": "00D5g000004Xy1ZEAS",
    "sobject": {
        "Id": CO,
        "Name": "CO-001",
        "Opportunity__c": "0065g0000000001AAA",
        "Status__c": "Approved",
        "Amount_Delta__c": 7200.10,
        "CurrencyIsoCode": "EUR",
        "Effective_Date__c": "2026-03-01",
        "Approved_At__c": "2026-02-20T09:30:00.000+0000",
        "LastModifiedDate": "2026-02-20T09:30:00.000+0000",
    },
}


def test_approval_event_parses_exactly() -> None:
    event = parse_change_order_approved_event(json.dumps(APPROVED).encode())
    assert (event.event_id, event.sobject.id) == (APPROVED["eventId"], CO)
    assert event.sobject.opportunity_id == "0065g0000000001AAA"
    assert event.sobject.amount_delta == Decimal("7200.1")
    assert event.sobject.approved_at == datetime(2026, 2, 20, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"eventType": "opportunity.closed_won"}, "eventType"),
        ({"sobject": {**APPROVED["sobject"], "Id": "short"}}, "sobject.Id"),  # type: ignore[dict-item]
        ({"sobject": {**APPROVED["sobject"], "Name": ""}}, "sobject.Name"),  # type: ignore[dict-item]
        ({"eventId": ""}, "eventId"),
    ],
)
def test_approval_event_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_change_order_approved_event(json.dumps({**APPROVED, **change}))
    assert refused.value.field == field
