"""The Salesforce connector against the stand-in running as a real process."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from canonical import BillingType, ExpensePolicy, FeeRemainder, Money, PaymentTerms
from connectors.errors import (
    AuthFailed,
    NotFound,
    RateLimitedError,
    TransientError,
    ValidationFailed,
)
from connectors.salesforce import (
    InvalidSignature,
    SalesforceClient,
    StaleSignature,
    parse_closed_won_event,
    verify_webhook_signature,
)
from connectors.salesforce.client import LINE_FIELDS, MILESTONE_FIELDS, OPPORTUNITY_FIELDS
from devstack.demo import MIXED
from devstack.salesforce_seed import DealMilestone
from tests.fixtures.deals import mixed_deal
from tests.fixtures.salesforce import SalesforceStandin, for_opportunity


def _tag() -> str:
    return uuid.uuid4().hex[:8]


async def _deal(sf: SalesforceClient, *, stage: str = "Negotiation/Review") -> dict[str, str]:
    """An account, two products and a EUR opportunity with three line items."""
    tag = _tag()
    account = await sf.upsert(
        "Account",
        "Q2C_External_Id__c",
        f"acct-{tag}",
        {
            "Name": f"Globex {tag}",
            "BillingStreet": "Hauptstrasse 1\nGebäude B",
            "BillingCity": "Berlin",
            "BillingPostalCode": "10115",
            "BillingCountryCode": "DE",
            "CurrencyIsoCode": "EUR",
            "Tax_Id__c": "DE123456789",
            "Website": "https://globex.example",
        },
    )
    consulting = await sf.create("Product2", {"Name": "Consulting", "IsActive": True})
    training = await sf.create("Product2", {"Name": "Training", "IsActive": True})
    opportunity = await sf.create(
        "Opportunity",
        {
            "Name": f"Globex rollout {tag}",
            "AccountId": account.id,
            "StageName": stage,
            "CloseDate": "2025-06-30",
            "CurrencyIsoCode": "EUR",
            "Payment_Terms__c": "Net 45",
            "PO_Number__c": f"PO-{tag}",
        },
    )
    lines = [
        {"Product2Id": consulting, "Quantity": 40, "UnitPrice": "150.00", "Role__c": "Architect"},
        {"Product2Id": consulting, "Quantity": 80, "UnitPrice": "120.50", "Discount": 10},
        {
            "Product2Id": training,
            "Quantity": 1,
            "UnitPrice": "4999.99",
            "Billing_Type__c": "Fixed Fee",
            "Description": "On-site training day",
        },
    ]
    for line in lines:
        await sf.create("OpportunityLineItem", {"OpportunityId": opportunity, **line})
    return {"account": account.id, "opportunity": opportunity, "tag": tag}


async def test_opportunity_maps_to_canonical_with_lines(salesforce: SalesforceStandin) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        opp = await sf.fetch_opportunity(deal["opportunity"])

    assert opp.id == deal["opportunity"] and opp.crm == "salesforce"
    assert opp.account_id == deal["account"]
    assert opp.currency == "EUR"
    assert opp.payment_terms == PaymentTerms(net_days=45)
    assert opp.po_number == f"PO-{deal['tag']}"
    assert opp.close_date == date(2025, 6, 30)
    assert not opp.won
    assert [(ln.service, ln.role, ln.quantity) for ln in opp.lines] == [
        ("Consulting", "Architect", Decimal(40)),
        ("Consulting", "Consulting", Decimal(80)),
        ("Training", "Training", Decimal(1)),
    ]
    # Lines without a billing type are left to the service catalogue.
    assert [ln.billing_type for ln in opp.lines] == [None, None, BillingType.FIXED_FEE]
    assert opp.lines[1].unit_rate == Money.of("120.50", "EUR")
    assert opp.lines[1].discount_percent == Decimal(10)
    assert opp.lines[2].description == "On-site training day"
    # Salesforce rolls the products up into Amount: 6000 + 8676 + 4999.99.
    assert opp.amount == Money.of("19675.99", "EUR")
    assert opp.total() == opp.amount


async def test_account_maps_address_and_contacts(salesforce: SalesforceStandin) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        await sf.create(
            "Contact",
            {
                "FirstName": "Ada",
                "LastName": "Lovelace",
                "Email": "ada@globex.example",
                "AccountId": deal["account"],
            },
        )
        await sf.create("Contact", {"LastName": "No Email", "AccountId": deal["account"]})
        account = await sf.fetch_account(deal["account"])

    assert account.name == f"Globex {deal['tag']}"
    assert account.currency == "EUR" and account.tax_id == "DE123456789"
    address = account.billing_address
    assert address is not None
    assert (address.street, address.street2, address.city) == (
        "Hauptstrasse 1",
        "Gebäude B",
        "Berlin",
    )
    assert (address.postal_code, address.country) == ("10115", "DE")
    assert [(c.name, c.email) for c in account.contacts] == [("Ada Lovelace", "ada@globex.example")]


async def test_upsert_by_external_id_never_duplicates(salesforce: SalesforceStandin) -> None:
    key = f"acct-{_tag()}"
    async with salesforce.client() as sf:
        first = await sf.upsert("Account", "Q2C_External_Id__c", key, {"Name": "Initech"})
        again = await sf.upsert("Account", "Q2C_External_Id__c", key, {"Name": "Initech"})
        found = [
            r async for r in sf.query(f"SELECT Id FROM Account WHERE Q2C_External_Id__c = '{key}'")
        ]
    assert first.created and not again.created
    assert first.id == again.id
    assert [r["Id"] for r in found] == [first.id]


async def test_query_follows_next_records_url(salesforce: SalesforceStandin) -> None:
    family = f"Paging {_tag()}"
    async with salesforce.client() as sf:
        for start in range(0, 450, 50):
            await asyncio.gather(
                *(
                    sf.create("Product2", {"Name": f"P{n:03d}", "Family": family})
                    for n in range(start, start + 50)
                )
            )
        names = [
            r["Name"]
            async for r in sf.query(
                f"SELECT Name FROM Product2 WHERE Family = '{family}' ORDER BY Name",
                batch_size=200,
            )
        ]
    # A page holds at most 200 records, so 450 names prove two more pages were fetched.
    assert names == [f"P{n:03d}" for n in range(450)]


async def test_write_back_is_visible_and_repeatable(salesforce: SalesforceStandin) -> None:
    fields = ["Q2C_Status__c", "Q2C_Project_Id__c", "Q2C_Run_Url__c", "Q2C_Message__c"]
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        opp_id = deal["opportunity"]
        await sf.write_back(opp_id, status="failed", message="Tryton refused the party")
        for _ in range(2):
            await sf.write_back(
                opp_id,
                status="project_created",
                project_id="PRJ-42",
                run_url="http://127.0.0.1:8233/namespaces/default/workflows/x",
            )
        after_success = await sf.get("Opportunity", opp_id, fields=fields)
        await sf.write_back(opp_id, status="invoiced")
        after_status_only = await sf.get("Opportunity", opp_id, fields=fields)

    assert after_success["Q2C_Status__c"] == "project_created"
    assert after_success["Q2C_Project_Id__c"] == "PRJ-42"
    assert after_success["Q2C_Message__c"] is None  # the old failure no longer shows
    assert after_status_only["Q2C_Status__c"] == "invoiced"
    assert after_status_only["Q2C_Project_Id__c"] == "PRJ-42"


async def test_validation_error_is_permanent_and_names_the_field(
    salesforce: SalesforceStandin,
) -> None:
    async with salesforce.client() as sf:
        with pytest.raises(ValidationFailed) as missing:
            await sf.create("Account", {"Website": "https://nameless.example"})
        deal = await _deal(sf)
        with pytest.raises(ValidationFailed) as stage:
            await sf.update("Opportunity", deal["opportunity"], {"StageName": "Won-ish"})
        with pytest.raises(ValidationFailed) as unknown:
            await sf.update("Opportunity", deal["opportunity"], {"Colour__c": "red"})
        with pytest.raises(NotFound):
            await sf.get("Opportunity", "006000000000000AAA")

    assert missing.value.field == "Name"
    assert missing.value.code == "REQUIRED_FIELD_MISSING"
    assert missing.value.retryable is False and missing.value.status == 400
    assert stage.value.field == "StageName"
    assert stage.value.code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert unknown.value.field == "Colour__c"


async def test_rate_limit_is_retryable_with_retry_after(salesforce: SalesforceStandin) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        salesforce.inject_fault(kind="429", path="/services/data/", retry_after=7)
        with pytest.raises(RateLimitedError) as limited:
            await sf.fetch_opportunity(deal["opportunity"])
        # The fault was used up; the same call now goes through.
        assert (await sf.fetch_opportunity(deal["opportunity"])).id == deal["opportunity"]

    assert limited.value.retryable is True
    assert limited.value.retry_after == timedelta(seconds=7)
    assert limited.value.code == "REQUEST_LIMIT_EXCEEDED"


async def test_server_errors_and_dead_servers_are_transient(
    salesforce: SalesforceStandin,
) -> None:
    async with salesforce.client() as sf:
        salesforce.inject_fault(kind="503", path="/services/data/")
        with pytest.raises(TransientError) as unavailable:
            await sf.get("Account", "001000000000000AAA")
    assert unavailable.value.retryable and unavailable.value.status == 503

    async with SalesforceClient("http://127.0.0.1:9", "x", "y", timeout=2.0) as dead:
        with pytest.raises(TransientError):
            await dead.get("Account", "001000000000000AAA")


async def test_expired_session_reauthenticates_transparently(
    salesforce: SalesforceStandin,
) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        salesforce.expire_sessions()
        opp = await sf.fetch_opportunity(deal["opportunity"])
    assert opp.id == deal["opportunity"]


async def test_wrong_credentials_fail_auth(salesforce: SalesforceStandin) -> None:
    async with SalesforceClient(salesforce.url, salesforce.client_id, "wrong") as sf:
        with pytest.raises(AuthFailed) as refused:
            await sf.get("Account", "001000000000000AAA")
    assert refused.value.retryable is False
    assert refused.value.code == "invalid_client"


async def test_closed_won_sends_a_signed_webhook(salesforce: SalesforceStandin) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf)
        opp_id = deal["opportunity"]
        assert salesforce.wait_for_webhooks(for_opportunity(opp_id), timeout=0.5) == []
        await sf.update("Opportunity", opp_id, {"StageName": "Closed Won"})
        [delivery] = salesforce.wait_for_webhooks(for_opportunity(opp_id))

    verify_webhook_signature(delivery.body, delivery.signature, salesforce.webhook_secret)
    event = parse_closed_won_event(delivery.body)
    assert event.sobject.id == opp_id
    assert event.sobject.stage_name == "Closed Won"
    assert event.sobject.amount == Decimal("19675.99")
    assert event.sobject.currency_iso_code == "EUR"
    assert event.organization_id.startswith("00D")

    tampered = delivery.body.replace(b"19675.99", b"1.00")
    with pytest.raises(InvalidSignature):
        verify_webhook_signature(tampered, delivery.signature, salesforce.webhook_secret)
    with pytest.raises(InvalidSignature):
        verify_webhook_signature(delivery.body, delivery.signature, "another-secret")
    later = datetime.now(UTC) + timedelta(minutes=6)
    with pytest.raises(StaleSignature):
        verify_webhook_signature(
            delivery.body, delivery.signature, salesforce.webhook_secret, now=later
        )


async def test_replay_resends_the_same_event(salesforce: SalesforceStandin) -> None:
    async with salesforce.client() as sf:
        deal = await _deal(sf, stage="Closed Won")
    opp_id = deal["opportunity"]
    [first] = salesforce.wait_for_webhooks(for_opportunity(opp_id))
    salesforce.replay_webhook(opp_id)
    deliveries = salesforce.wait_for_webhooks(for_opportunity(opp_id), count=2)

    assert len(deliveries) == 2
    assert deliveries[1].json() == first.json()  # same eventId: a duplicate to deduplicate
    verify_webhook_signature(deliveries[1].body, deliveries[1].signature, salesforce.webhook_secret)


async def test_failed_delivery_is_retried(salesforce: SalesforceStandin) -> None:
    salesforce.fail_next_webhooks(2)
    async with salesforce.client() as sf:
        deal = await _deal(sf, stage="Closed Won")
    attempts = salesforce.wait_for_webhooks(for_opportunity(deal["opportunity"]), count=3)

    assert [a.answered for a in attempts] == [503, 503, 204]
    assert len({json.loads(a.body)["eventId"] for a in attempts}) == 1


# ---------------------------------------------------------------- the contract as sold


async def test_contract_as_sold_comes_from_the_crm(salesforce: SalesforceStandin) -> None:
    """The demo's mixed deal with its fee in monthly instalments, a contract cap and two
    milestones on its milestone line: every field comes back as a canonical value."""
    development, management, package, go_live = MIXED.lines
    uat, launch = date(2026, 3, 31), date(2026, 5, 29)
    spec = mixed_deal(
        lines=[
            development,
            management,
            replace(package, fee_schedule="Monthly Instalments", instalments=6),
            go_live,
        ],
        milestones=[
            # Seeded out of date order: they come back by planned date.
            DealMilestone(name="Go-live", line=3, amount=Decimal("5000.50"), planned_date=launch),
            DealMilestone(name="UAT sign-off", line=3, amount=Decimal("2999.50"), planned_date=uat),
        ],
        not_to_exceed=Decimal("90000"),
        end_date=date(2026, 6, 30),
        payment_terms="Net 45",
    )
    deal = await salesforce.seed(spec)
    async with salesforce.client() as sf:
        opp = await sf.fetch_opportunity(deal.opportunity_id)
        # Seeding again changes nothing: the same lines and milestones, no duplicates.
        await salesforce.seed(spec)
        again = await sf.fetch_opportunity(deal.opportunity_id)

    assert [ln.id for ln in opp.lines] == list(deal.line_ids)
    assert [ln.billing_type for ln in opp.lines] == [
        BillingType.TIME_AND_MATERIALS,
        None,  # the catalogue decides
        BillingType.FIXED_FEE,
        BillingType.MILESTONE,
    ]
    assert opp.lines[0].not_to_exceed == Money.of("26400", "USD")
    assert (opp.lines[2].fee_remainder, opp.lines[2].instalments) == (FeeRemainder.INSTALMENTS, 6)
    assert opp.lines[2].amount == Money.of("30000", "USD")
    assert (opp.lines[3].fee_remainder, opp.lines[3].not_to_exceed) == (None, None)
    assert opp.not_to_exceed == Money.of("90000", "USD")
    assert opp.upfront_percent == Decimal(20)
    assert opp.end_date == date(2026, 6, 30)
    assert opp.payment_terms == PaymentTerms(net_days=45)
    assert opp.expense_policy == ExpensePolicy(
        billable_categories=["Travel", "Lodging"], markup_percent=Decimal(10)
    )
    assert [(m.id, m.name, m.amount, m.due_date, m.line_id) for m in opp.milestones] == [
        (deal.milestone_ids[1], "UAT sign-off", Money.of("2999.50", "USD"), uat, deal.line_ids[3]),
        (deal.milestone_ids[0], "Go-live", Money.of("5000.50", "USD"), launch, deal.line_ids[3]),
    ]
    assert all(isinstance(m.amount.amount, Decimal) for m in opp.milestones)
    assert again.model_dump(exclude={"updated_at"}) == opp.model_dump(exclude={"updated_at"})


async def test_a_milestone_on_another_deals_line_is_refused_naming_the_field(
    salesforce: SalesforceStandin,
) -> None:
    ours, theirs = await salesforce.seed(mixed_deal()), await salesforce.seed(mixed_deal())
    async with salesforce.client() as sf:
        await sf.update(
            "Milestone__c", ours.milestone_ids[0], {"Line_Item_Id__c": theirs.line_ids[3]}
        )
        with pytest.raises(ValidationFailed) as refused:
            await sf.fetch_opportunity(ours.opportunity_id)
        await sf.update("Milestone__c", ours.milestone_ids[0], {"Amount__c": None})
        await sf.update(
            "Milestone__c", ours.milestone_ids[0], {"Line_Item_Id__c": ours.line_ids[3][:15]}
        )
        with pytest.raises(ValidationFailed) as no_amount:
            await sf.fetch_opportunity(ours.opportunity_id)

    assert refused.value.field == "Milestone__c.Line_Item_Id__c"
    assert theirs.line_ids[3] in refused.value.message
    assert refused.value.retryable is False
    assert no_amount.value.field == "Milestone__c.Amount__c"


async def test_the_org_describes_every_field_the_connector_reads(
    salesforce: SalesforceStandin,
) -> None:
    """What an installation must add to its org; a rename on either side fails here."""
    async with salesforce.client() as sf:
        described = {
            obj: await sf.describe(obj)
            for obj in ("Opportunity", "OpportunityLineItem", "Milestone__c")
        }
    names = {obj: {f["name"] for f in body["fields"]} for obj, body in described.items()}

    assert set(OPPORTUNITY_FIELDS) <= names["Opportunity"]
    assert {f for f in LINE_FIELDS if "." not in f} <= names["OpportunityLineItem"]
    assert set(MILESTONE_FIELDS) <= names["Milestone__c"]
    assert described["Milestone__c"]["custom"] is True
    fields = {f["name"]: f for f in described["Opportunity"]["fields"]}
    assert fields["Billable_Expense_Categories__c"]["type"] == "multipicklist"
    assert fields["Upfront_Percent__c"]["type"] == "percent"
