"""Change orders through the connector against the stand-in running as a real process:
the approval webhook, the canonical change order, the listing in approval order, the
write-back, and seeding."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from canonical import BillingType, ChangeAction, ChangeOrderStatus, Money
from connectors.errors import ValidationFailed
from connectors.salesforce import (
    InvalidSignature,
    parse_change_order_approved_event,
    verify_webhook_signature,
)
from connectors.salesforce.client import (
    CHANGE_ORDER_FIELDS,
    CHANGE_ORDER_LINE_FIELDS,
    CHANGE_ORDER_MILESTONE_FIELDS,
)
from devstack.salesforce_seed import ChangeOrderLine, ChangeOrderMilestone
from tests.fixtures.deals import change_order, mixed_deal
from tests.fixtures.salesforce import SalesforceStandin, for_change_order


async def test_approving_a_change_order_sends_a_signed_webhook(
    salesforce: SalesforceStandin,
) -> None:
    deal = await salesforce.seed(mixed_deal())
    seeded = await salesforce.seed_change_order(deal, change_order())
    co_id = seeded.change_order_id
    assert salesforce.wait_for_webhooks(for_change_order(co_id), timeout=0.5) == []
    await salesforce.approve_change_order(co_id)
    [delivery] = salesforce.wait_for_webhooks(for_change_order(co_id))
    async with salesforce.client() as sf:
        # Edited while approved: no new event (q2c sees the edit when it fetches).
        await sf.update("Change_Order__c", co_id, {"Description__c": "edited"})
    extra = salesforce.wait_for_webhooks(for_change_order(co_id), count=2, timeout=1.0)

    verify_webhook_signature(delivery.body, delivery.signature, salesforce.webhook_secret)
    event = parse_change_order_approved_event(delivery.body)
    assert event.event_type == "change_order.approved"
    assert (event.sobject.id, event.sobject.opportunity_id) == (co_id, deal.opportunity_id)
    assert (event.sobject.status, event.sobject.name) == ("Approved", "CO-001 rate increase and QA")
    assert event.sobject.amount_delta == Decimal("7200")
    assert event.sobject.currency_iso_code == "USD"
    assert event.sobject.effective_date == date(2026, 3, 1)
    assert event.sobject.approved_at is not None
    assert event.sobject.approved_at.microsecond == 0
    assert event.organization_id.startswith("00D")
    assert len(extra) == 1
    with pytest.raises(InvalidSignature):
        verify_webhook_signature(
            delivery.body.replace(b"7200", b"1"), delivery.signature, salesforce.webhook_secret
        )


async def test_approval_is_redelivered_with_the_same_event_id(
    salesforce: SalesforceStandin,
) -> None:
    deal = await salesforce.seed(mixed_deal())
    salesforce.fail_next_webhooks(2)
    seeded = await salesforce.seed_change_order(deal, change_order(approve=True))
    co_id = seeded.change_order_id
    attempts = salesforce.wait_for_webhooks(for_change_order(co_id), count=3)
    replayed = salesforce.replay_webhook(co_id[:15])
    deliveries = salesforce.wait_for_webhooks(for_change_order(co_id), count=4)

    assert [a.answered for a in attempts] == [503, 503, 204]
    assert len({d.json()["eventId"] for d in deliveries}) == 1
    assert replayed["eventId"] == deliveries[0].json()["eventId"]
    assert deliveries[3].body == deliveries[0].body
    for d in deliveries:
        verify_webhook_signature(d.body, d.signature, salesforce.webhook_secret)

    # Back to Draft and approved again: a new approval, a new event.
    async with salesforce.client() as sf:
        await sf.update("Change_Order__c", co_id, {"Status__c": "Draft"})
    await salesforce.approve_change_order(co_id)
    later = salesforce.wait_for_webhooks(for_change_order(co_id), count=5)
    assert len({d.json()["eventId"] for d in later}) == 2


async def test_fetch_change_order_returns_canonical_values(salesforce: SalesforceStandin) -> None:
    """A re-priced line, an added line and a changed milestone on the mixed deal: every field
    comes back as a canonical value, in the deal's currency, ids as the contract has them."""
    deal = await salesforce.seed(mixed_deal())
    spec = change_order(
        lines=[
            # Named by its 15-character id, as someone may paste it: it comes back as 18.
            ChangeOrderLine(action="Change", line=deal.line_ids[0][:15], rate=Decimal("180.50")),
            ChangeOrderLine(
                action="Add",
                product="QA Testing",
                role="QA Engineer",
                billing_type="Time and Materials",
                rate=Decimal("120"),
                hours=Decimal("40.5"),
            ),
            ChangeOrderLine(action="Remove", line=1),
        ],
        milestones=[
            ChangeOrderMilestone(
                action="Change",
                name="Go-live sign-off",
                milestone=0,
                amount=Decimal("8500.25"),
                planned_date=date(2026, 6, 30),
            ),
        ],
        budget_delta=Decimal("-1500.75"),
        new_end_date=date(2026, 12, 31),
        retroactive=True,
        description="Rates from March",
        approve=True,
        approved_at=datetime(2026, 2, 20, 9, 30, tzinfo=UTC),
    )
    seeded = await salesforce.seed_change_order(deal, spec)
    async with salesforce.client() as sf:
        co = await sf.fetch_change_order(seeded.change_order_id)

    assert (co.id, co.crm, co.opportunity_id) == (
        seeded.change_order_id,
        "salesforce",
        deal.opportunity_id,
    )
    assert (co.name, co.status, co.currency) == (
        "CO-001 rate increase and QA",
        ChangeOrderStatus.APPROVED,
        "USD",
    )
    assert co.effective_date == date(2026, 3, 1)
    assert co.amount_delta == Money.of("7200", "USD")
    assert co.budget_delta == Money.of("-1500.75", "USD")
    assert (co.new_end_date, co.retroactive) == (date(2026, 12, 31), True)
    assert co.approved_at == datetime(2026, 2, 20, 9, 30, tzinfo=UTC)
    assert co.description == "Rates from March"
    assert co.updated_at is not None
    repriced, added, removed = co.lines
    assert (repriced.action, repriced.line_id, repriced.rate) == (
        ChangeAction.CHANGE,
        deal.line_ids[0],
        Money.of("180.50", "USD"),
    )
    assert (repriced.task, repriced.billing_type, repriced.hours) == (None, None, None)
    assert (added.action, added.line_id) == (ChangeAction.ADD, seeded.line_ids[1])
    assert (added.task, added.role, added.billing_type) == (
        "QA Testing",
        "QA Engineer",
        BillingType.TIME_AND_MATERIALS,
    )
    assert (added.rate, added.hours, added.amount) == (
        Money.of("120", "USD"),
        Decimal("40.5"),
        None,
    )
    assert (removed.action, removed.line_id) == (ChangeAction.REMOVE, deal.line_ids[1])
    [moved] = co.milestones
    assert (moved.action, moved.milestone_id, moved.name) == (
        ChangeAction.CHANGE,
        deal.milestone_ids[0],
        "Go-live sign-off",
    )
    assert (moved.amount, moved.planned_date) == (Money.of("8500.25", "USD"), date(2026, 6, 30))
    money = [co.amount_delta, repriced.rate, added.rate, moved.amount]
    assert all(isinstance(m.amount, Decimal) for m in money if m is not None)


async def test_write_back_shows_on_the_change_order(salesforce: SalesforceStandin) -> None:
    deal = await salesforce.seed(mixed_deal())
    seeded = await salesforce.seed_change_order(deal, change_order(approve=True))
    co_id = seeded.change_order_id
    run = "http://localhost:8233/namespaces/default/workflows/change-order:salesforce:x"
    async with salesforce.client() as sf:
        await sf.write_back_change_order(co_id, ChangeOrderStatus.FAILED, "x" * 40_000, run)
        failed = await sf.get("Change_Order__c", co_id)
        await sf.write_back_change_order(co_id, ChangeOrderStatus.APPLIED, None)
        await sf.write_back_change_order(co_id, ChangeOrderStatus.APPLIED, None)
        applied = await sf.get("Change_Order__c", co_id)
        co = await sf.fetch_change_order(co_id)
        with pytest.raises(ValidationFailed, match="not 'approved'") as approving:
            await sf.write_back_change_order(co_id, ChangeOrderStatus.APPROVED, None)

    assert (failed["Status__c"], failed["Q2C_Run_Url__c"]) == ("Failed", run)
    assert len(failed["Q2C_Message__c"]) == 32_000 and failed["Q2C_Message__c"].endswith("…")
    assert (applied["Status__c"], applied["Q2C_Message__c"]) == ("Applied", None)
    assert applied["Q2C_Run_Url__c"] == run  # kept: a later write without a link keeps it
    assert co.status is ChangeOrderStatus.APPLIED
    assert approving.value.field == "Change_Order__c.Status__c"
    # Write-back is not an approval: no new event.
    assert len(salesforce.wait_for_webhooks(for_change_order(co_id), timeout=0.5)) == 1


async def test_change_orders_list_in_approval_order(salesforce: SalesforceStandin) -> None:
    deal = await salesforce.seed(mixed_deal())
    other = await salesforce.seed(mixed_deal())
    t0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    second = await salesforce.seed_change_order(
        deal, change_order(name="second", approve=True, approved_at=t0 + timedelta(hours=1))
    )
    first = await salesforce.seed_change_order(
        deal, change_order(name="first", approve=True, approved_at=t0)
    )
    draft = await salesforce.seed_change_order(deal, change_order(name="draft"))
    await salesforce.seed_change_order(other, change_order(approve=True))
    async with salesforce.client() as sf:
        listed = await sf.list_change_orders(deal.opportunity_id[:15])
        approved = await sf.list_change_orders(
            deal.opportunity_id, status=ChangeOrderStatus.APPROVED
        )
        await sf.write_back_change_order(first.change_order_id, ChangeOrderStatus.APPLIED)
        open_or_done = await sf.list_change_orders(
            deal.opportunity_id, status=[ChangeOrderStatus.APPLIED, ChangeOrderStatus.DRAFT]
        )

    assert [c.id for c in listed] == [
        first.change_order_id,
        second.change_order_id,
        draft.change_order_id,  # never approved: last
    ]
    assert [c.approved_at for c in listed] == [t0, t0 + timedelta(hours=1), None]
    assert [c.status for c in listed] == [ChangeOrderStatus.APPROVED] * 2 + [
        ChangeOrderStatus.DRAFT
    ]
    assert {c.opportunity_id for c in listed} == {deal.opportunity_id}
    assert [c.id for c in approved] == [first.change_order_id, second.change_order_id]
    assert [(c.id, c.status) for c in open_or_done] == [
        (first.change_order_id, ChangeOrderStatus.APPLIED),
        (draft.change_order_id, ChangeOrderStatus.DRAFT),
    ]


async def test_an_invalid_change_order_is_refused_naming_the_field(
    salesforce: SalesforceStandin,
) -> None:
    deal = await salesforce.seed(mixed_deal())
    seeded = await salesforce.seed_change_order(deal, change_order())
    async with salesforce.client() as sf:
        await sf.update(
            "Change_Order_Line__c", seeded.line_ids[1], {"Line_Item_Id__c": deal.line_ids[0]}
        )
        with pytest.raises(ValidationFailed) as added_with_a_line:
            await sf.fetch_change_order(seeded.change_order_id)
        await sf.update("Change_Order_Line__c", seeded.line_ids[1], {"Line_Item_Id__c": None})
        await sf.update("Change_Order_Milestone__c", seeded.milestone_ids[0], {"Amount__c": -5})
        with pytest.raises(ValidationFailed) as negative:
            await sf.fetch_change_order(seeded.change_order_id)

    assert added_with_a_line.value.field == "Change_Order_Line__c.Line_Item_Id__c"
    assert seeded.line_ids[1] in added_with_a_line.value.message
    assert added_with_a_line.value.retryable is False
    assert negative.value.field == "Change_Order_Milestone__c.Amount__c"


async def test_seeding_a_change_order_again_leaves_it_as_the_spec_says(
    salesforce: SalesforceStandin,
) -> None:
    deal = await salesforce.seed(mixed_deal())
    spec = change_order(approve=True)
    seeded = await salesforce.seed_change_order(deal, spec)
    shorter = replace(spec, lines=spec.lines[:1], amount_delta=Decimal("2400"))
    again = await salesforce.seed_change_order(deal, shorter)
    async with salesforce.client() as sf:
        co = await sf.fetch_change_order(seeded.change_order_id)

    assert again.change_order_id == seeded.change_order_id
    assert again.line_ids == seeded.line_ids[:1]
    assert [ln.line_id for ln in co.lines] == [deal.line_ids[0]]  # the added line is gone
    assert co.amount_delta == Money.of("2400", "USD")
    assert co.status is ChangeOrderStatus.APPROVED  # kept; approved once, one event
    assert len(salesforce.wait_for_webhooks(for_change_order(co.id), timeout=0.5)) == 1


async def test_the_org_describes_every_change_order_field_the_connector_reads(
    salesforce: SalesforceStandin,
) -> None:
    async with salesforce.client() as sf:
        described = {
            obj: await sf.describe(obj)
            for obj in ("Change_Order__c", "Change_Order_Line__c", "Change_Order_Milestone__c")
        }
    names = {obj: {f["name"] for f in body["fields"]} for obj, body in described.items()}

    assert set(CHANGE_ORDER_FIELDS) <= names["Change_Order__c"]
    assert set(CHANGE_ORDER_LINE_FIELDS) <= names["Change_Order_Line__c"]
    assert set(CHANGE_ORDER_MILESTONE_FIELDS) <= names["Change_Order_Milestone__c"]
    assert {"Q2C_Message__c", "Q2C_Run_Url__c"} <= names["Change_Order__c"]
