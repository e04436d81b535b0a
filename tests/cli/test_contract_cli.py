"""`q2c contract show`: the contract as provisioned, read from q2c's store."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner, Result

from activities.contracts import ContractActivities, RecordContractInput
from canonical import (
    BilledItem,
    BillingPeriod,
    BillingType,
    ContractLine,
    ContractMilestone,
    ContractVersion,
    ExpensePolicy,
    FeeRemainder,
    FeeSchedule,
    ItemKind,
    Money,
    RatedPeriod,
)
from canonical.party import PaymentTerms
from cli.app import app
from store import InvoiceDraft, Store
from tests.fixtures.change_orders import (
    CHANGE_ORDER_ID,
    OPPORTUNITY_ID,
    PROJECT_ID,
    contract_after_rate_increase,
)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def mixed_contract() -> ContractVersion:
    return ContractVersion(
        contract_id="salesforce:006MIXED",
        version=1,
        effective_from=date(2026, 11, 2),
        source="opportunity:006MIXED",
        currency="USD",
        start_date=date(2026, 11, 2),
        end_date=date(2027, 1, 31),
        lines=[
            ContractLine(
                id="00kDEV",
                task="Development",
                role="Developer",
                billing_type=BillingType.TIME_AND_MATERIALS,
                rate=usd("150"),
                hours=Decimal(100),
                amount=usd("15000"),
                not_to_exceed=usd("12000"),
            ),
            ContractLine(
                id="00kTRN",
                task="Training",
                billing_type=BillingType.FIXED_FEE,
                amount=usd("3000"),
                schedule=FeeSchedule(
                    upfront_percent=Decimal(20), remainder=FeeRemainder.INSTALMENTS
                ),
            ),
            ContractLine(
                id="00kGOL",
                task="Go-live",
                billing_type=BillingType.MILESTONE,
                amount=usd("5000"),
            ),
        ],
        milestones=[
            ContractMilestone(
                id="a01",
                name="Cut-over",
                amount=usd("5000"),
                line_id="00kGOL",
                planned_date=date(2027, 1, 15),
            )
        ],
        expense_policy=ExpensePolicy(billable_categories=["Travel"], markup_percent=Decimal(10)),
        payment_terms=PaymentTerms(net_days=30),
        value=usd("23000"),
    )


def show(tmp_path: Path, store_url: str, *args: str) -> Result:
    env = {"Q2C_DATABASE_URL": store_url, "Q2C_STATE_DIR": str(tmp_path), "COLUMNS": "200"}
    return CliRunner().invoke(app, ["contract", "show", *args], env=env)


async def test_show_prints_the_contract_as_provisioned(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    recorded = await ContractActivities(store).record_contract(
        RecordContractInput(
            contract=mixed_contract(),
            project_id="41",
            task_ids={"Development": "42", "Training": "43", "Go-live": "44"},
        )
    )
    assert (recorded.version, recorded.created) == (1, True)

    result = await asyncio.to_thread(show, tmp_path, store_url, "41")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "salesforce:006MIXED (project 41)" in out
    assert "23,000.00 USD" in out and "net 30 days" in out
    assert "Development (#42)" in out and "150.00/h" in out and "hourly, cap 12,000.00" in out
    assert "20 % upfront, rest in 3 monthly instalments" in out
    assert "Cut-over" in out and "2027-01-15" in out and "1 milestones" in out
    assert "Travel billed at 10 % markup" in out
    assert "Billed: nothing yet" in out

    # Once invoices are issued, what each billed is listed against the contract.
    period = RatedPeriod(
        period=BillingPeriod(year=2026, month=11),
        currency="USD",
        time_net={"00kDEV": Decimal("1500.00")},
        billed_items=[
            BilledItem(
                key="upfront:00kTRN",
                kind=ItemKind.UPFRONT,
                line_id="00kTRN",
                net=usd("600.00"),
                version=1,
            )
        ],
        overage=usd("0"),
    )
    await store.save_draft(
        InvoiceDraft(
            id="d-1",
            workflow_id="time-to-invoice:41:2026-11",
            project_id="41",
            period="2026-11",
            currency="USD",
            status="billed",
            invoice_number="INV2026-0007",
            rated={"period": period.model_dump(mode="json")},
        )
    )
    listed = await asyncio.to_thread(show, tmp_path, store_url, "41")
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert ["time:", "Development", "-", "INV2026-0007", "2026-11", "1,500.00"] in rows
    assert ["upfront:", "Training", "v1", "INV2026-0007", "2026-11", "600.00"] in rows
    assert "Cut-over" in listed.stdout

    as_json = await asyncio.to_thread(show, tmp_path, store_url, "salesforce:006MIXED", "--json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert body["project_id"] == "41" and [v["version"] for v in body["versions"]] == [1]
    lines = body["versions"][0]["lines"]
    assert {ln["task"]: ln["task_id"] for ln in lines} == {
        "Development": "42",
        "Training": "43",
        "Go-live": "44",
    }


async def test_show_names_a_project_without_a_contract(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    result = await asyncio.to_thread(show, tmp_path, store_url, "99")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: 99: no contract recorded (one is kept when a deal is provisioned)"
    )


async def test_history_shows_each_version_with_what_made_it_and_what_it_changed(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    first, second = contract_after_rate_increase()
    for version in (first, second):
        await ContractActivities(store).record_contract(
            RecordContractInput(
                contract=version,
                project_id=PROJECT_ID,
                task_ids={"Development": "101", "Project Management": "102"},
            )
        )

    result = await asyncio.to_thread(show, tmp_path, store_url, PROJECT_ID, "--history")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert f"v1 from 2026-10-01: opportunity:{OPPORTUNITY_ID}" in lines
    assert "as sold: 2 lines, value 19,500.00 USD" in lines
    assert f"v2 from 2027-01-01: change-order:salesforce:{CHANGE_ORDER_ID}" in lines
    v2 = lines.index(f"v2 from 2027-01-01: change-order:salesforce:{CHANGE_ORDER_ID}")
    assert lines[v2 + 1 :] == [
        "Development rate: 165.00 → 180.00 USD",
        "Development amount: 16500.00 → 18000.00 USD",
        "Contract value: 19500.00 → 21000.00 USD",
        "Contract budget: 19500.00 → 44500.00 USD",
    ]

    as_json = await asyncio.to_thread(show, tmp_path, store_url, PROJECT_ID, "--history", "--json")
    assert as_json.exit_code == 0, as_json.output
    versions = json.loads(as_json.stdout)
    assert [(v["version"], v["source"], v["change_order"]) for v in versions] == [
        (1, f"opportunity:{OPPORTUNITY_ID}", None),
        (2, f"change-order:salesforce:{CHANGE_ORDER_ID}", f"salesforce:{CHANGE_ORDER_ID}"),
    ]
    assert versions[0]["changes"] == []
    rate = next(c for c in versions[1]["changes"] if c["field"] == "rate")
    assert (rate["subject"], rate["before"], rate["after"], rate["unit"]) == (
        "Development",
        "165.00",
        "180.00",
        "USD",
    )
    assert versions[1]["terms"]["lines"][0]["rate"]["amount"] == "180.00"
