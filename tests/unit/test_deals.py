"""Deal planning: what a won deal becomes downstream, what blocks it, and what finance must see.

The rules are the demo's configuration files, loaded the way the worker loads them, so these
tests also pin what the demo mapping and catalogue promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from canonical import (
    Account,
    Address,
    ApprovalPolicy,
    BillingType,
    Contact,
    ContractLine,
    ContractVersion,
    CountryRule,
    DealPlan,
    DealRules,
    ExpensePolicy,
    FeeRemainder,
    LegalEntity,
    Milestone,
    Money,
    Opportunity,
    OpportunityLine,
    PaymentTerms,
    Project,
    RateCard,
    RateCardEntry,
    Task,
    plan_deal,
    sum_money,
)
from settings import DEMO_RULES, Settings
from settings.rules import load_deal_rules

CLOSE = date(2025, 3, 31)
APPROVERS = ["finance@northwind.example", "cfo@northwind.example"]

ADDRESSES = {
    "US": Address(
        street="500 Congress Ave", city="Austin", postal_code="78701", country="US", region="TX"
    ),
    "GB": Address(street="1 Poultry", city="London", postal_code="EC2R 8EJ", country="GB"),
    "DE": Address(street="Unter den Linden 1", city="Berlin", postal_code="10117", country="DE"),
    "FR": Address(street="1 Rue de Rivoli", city="Paris", postal_code="75001", country="FR"),
    "AU": Address(
        street="1 Martin Pl", city="Sydney", postal_code="2000", country="AU", region="NSW"
    ),
    "CA": Address(
        street="100 King St W", city="Toronto", postal_code="M5X 1A9", country="CA", region="ON"
    ),
    "JP": Address(street="1-1 Marunouchi", city="Tokyo", postal_code="100-0005", country="JP"),
}


# ---------------------------------------------------------------- builders


@pytest.fixture(scope="module")
def rules() -> DealRules:
    """The demo rules with the default policy, stated outright so no Q2C_ variable leaks in."""
    return load_deal_rules(
        Settings(
            legal_entities_file=DEMO_RULES / "legal_entities.toml",
            service_catalogue_file=DEMO_RULES / "service_catalogue.toml",
            approval_threshold=Decimal("250000"),
            max_discount_percent=Decimal("15"),
            standard_net_days=30,
            finance_approvers=APPROVERS,
            approval_remind_after=timedelta(hours=24),
            approval_expire_after=timedelta(days=7),
            correction_deadline=timedelta(days=3),
        )
    )


def money(amount: str, currency: str = "USD") -> Money:
    return Money.of(amount, currency)


def line(
    id: str, service: str, quantity: str, unit_rate: str, currency: str = "USD", **over: Any
) -> OpportunityLine:
    """A time-and-materials line whose role is the product name, as the Salesforce mapper does."""
    return OpportunityLine.model_validate(
        {
            "id": id,
            "service": service,
            "role": service,
            "quantity": quantity,
            "unit_rate": money(unit_rate, currency),
            "billing_type": "time_and_materials",
        }
        | over
    )


def standard_lines(currency: str = "USD") -> list[OpportunityLine]:
    """Two catalogue products (one discounted) and one product the catalogue does not know."""
    return [
        line(
            "L1",
            "Solution Architecture",
            "40",
            "200",
            currency,
            description="Target architecture",
        ),
        line("L2", "Development", "120", "150", currency, discount_percent="10"),
        line("L3", "Change Management Workshop", "3", "1250", currency),
    ]


def opportunity(
    lines: list[OpportunityLine] | None = None, currency: str = "USD", **over: Any
) -> Opportunity:
    lines = standard_lines(currency) if lines is None else lines
    data: dict[str, Any] = {
        "id": "006A",
        "crm": "salesforce",
        "name": "Acme platform rollout",
        "account_id": "001A",
        "stage": "Closed Won",
        "won": True,
        "close_date": CLOSE,
        "currency": currency,
        "lines": lines,
        "amount": sum_money((ln.amount for ln in lines), currency),
        "payment_terms": PaymentTerms(net_days=15),
        "po_number": "PO-4711",
    }
    return Opportunity.model_validate(data | over)


def account(country: str = "US", **over: Any) -> Account:
    data: dict[str, Any] = {
        "id": "001A",
        "name": "Acme Corp",
        "billing_address": ADDRESSES[country],
        "tax_id": "TAX-123",
        "contacts": [Contact(name="Pat Payer", email="ap@acme.example", role="billing")],
    }
    return Account.model_validate(data | over)


def single(service: str, amount: str, currency: str = "USD", **over: Any) -> Opportunity:
    """A one-line deal worth exactly `amount`."""
    return opportunity([line("L1", service, "1", amount, currency)], currency, **over)


def effective_rate(project: Project, task: Task) -> Money:
    """What the PSA charges an hour of this task: its own rate, else the rate card's."""
    if task.rate is not None:
        return task.rate
    assert project.rate_card is not None and task.role is not None
    return project.rate_card.rate_for(task.role, project.start_date)


def negotiated(entries: dict[str, str], currency: str = "USD") -> RateCard:
    """The customer's MSA rates, negotiated before the deal."""
    return RateCard(
        currency=currency,
        name="Acme MSA 2025",
        entries=[
            RateCardEntry(role=role, rate=money(rate, currency), effective_from=date(2025, 1, 1))
            for role, rate in entries.items()
        ],
    )


# ---------------------------------------------------------------- a clean deal


def test_a_clean_us_deal_becomes_a_customer_and_a_project(rules: DealRules) -> None:
    plan = plan_deal(opportunity(), account(), rules)

    assert plan.issues == [] and plan.risks == [] and plan.ready
    customer, project = plan.customer, plan.project
    assert customer is not None and project is not None

    assert customer.id == "salesforce:001A"
    assert customer.name == "Acme Corp"
    assert (customer.legal_entity.code, customer.legal_entity.name) == (
        "NW-US",
        "Northwind Consulting Inc.",
    )
    assert customer.legal_entity.tax_regime == "US-SALES-TAX"
    assert customer.currency == "USD"
    assert customer.addresses == [ADDRESSES["US"]]
    assert customer.billing_address.city == "Austin"
    assert customer.tax_id == "TAX-123"
    assert customer.payment_terms == PaymentTerms(net_days=15)
    assert [c.email for c in customer.billing_contacts()] == ["ap@acme.example"]
    assert customer.external_ids == {"salesforce": "001A"}

    assert project.id == "salesforce:006A"
    assert project.name == "Acme platform rollout"
    assert project.customer_id == customer.id
    assert project.legal_entity_code == "NW-US"
    assert project.currency == "USD"
    assert project.billing_type is BillingType.TIME_AND_MATERIALS
    assert project.start_date == CLOSE
    assert (project.opportunity_id, project.po_number) == ("006A", "PO-4711")
    assert project.external_ids == {"salesforce": "006A"}
    # 40 x 200 + 120 x 150 less 10 % + 3 x 1250: the discount is in the budget, not the rate.
    assert project.budget == money("27950.00")

    assert [(t.name, t.role, t.planned_hours, t.rate) for t in project.tasks] == [
        ("Target architecture", "Solution Architect", Decimal("40"), money("200")),
        ("Development", "Developer", Decimal("120"), money("150")),
        # Not in the catalogue: a role of its own name, by the hour at the line's price.
        ("Change Management Workshop", "Change Management Workshop", Decimal("3"), money("1250")),
    ]

    card = project.rate_card
    assert card is not None and card.currency == "USD"
    assert {e.role: e.rate for e in card.entries} == {
        "Solution Architect": money("200"),
        "Developer": money("150"),
        "Change Management Workshop": money("1250"),
    }
    assert all(e.effective_from == CLOSE and e.effective_to is None for e in card.entries)
    assert card.rate_for("Developer", date(2026, 1, 1)) == money("150")


def test_a_deal_without_payment_terms_gets_the_standard_net_30(rules: DealRules) -> None:
    plan = plan_deal(opportunity(payment_terms=None), account(), rules)

    assert plan.issues == [] and plan.risks == []
    assert plan.customer is not None
    assert plan.customer.payment_terms == PaymentTerms(net_days=30)
    assert plan.customer.payment_terms.label == "Net 30"


def test_the_contract_is_sold_on_the_terms_the_customer_gets(rules: DealRules) -> None:
    for terms, expected in ((PaymentTerms(net_days=20), 20), (None, 30)):
        plan = plan_deal(opportunity(payment_terms=terms), account(), rules)

        assert plan.customer is not None and plan.contract is not None
        assert plan.customer.payment_terms == PaymentTerms(net_days=expected)
        assert plan.contract.payment_terms == plan.customer.payment_terms


def test_the_catalogue_decides_the_role_whatever_the_crm_line_says(rules: DealRules) -> None:
    # A CRM that knows no roles (role None) and one that names its own: the PSA gets the
    # catalogue's role for a known product and the product's name for an unknown one.
    lines = [
        line("L1", "Consulting", "10", "180", role=None),
        line("L2", "Development", "20", "150", role="Senior Dev"),
        line("L3", "Cloud Audit", "5", "300", role=None),
    ]
    plan = plan_deal(opportunity(lines), account(), rules)

    assert plan.issues == []
    assert plan.project is not None
    assert [t.role for t in plan.project.tasks] == ["Consultant", "Developer", "Cloud Audit"]
    assert plan.project.rate_card is not None
    assert plan.project.rate_card.roles() == {"Consultant", "Developer", "Cloud Audit"}


def test_fixed_fee_products_are_planned_without_hours_or_rates(rules: DealRules) -> None:
    lines = [
        line("L1", "Consulting", "10", "180"),
        # The CRM leaves the billing type to the catalogue, which sells these as fixed fees.
        line("L2", "Implementation Package", "1", "40000", billing_type=None),
        line("L3", "Training", "2", "3000", billing_type=None),
    ]
    plan = plan_deal(opportunity(lines), account(), rules)

    assert plan.issues == []
    project = plan.project
    assert project is not None
    assert [(t.role, t.planned_hours, t.rate) for t in project.tasks] == [
        ("Consultant", Decimal("10"), money("180")),
        ("Implementation Team", None, None),
        ("Trainer", None, None),
    ]
    # Only hourly roles need a rate; the fixed fees carry most of the value.
    assert project.rate_card is not None and project.rate_card.roles() == {"Consultant"}
    assert project.billing_type is BillingType.FIXED_FEE  # a summary; it decides nothing
    assert [t.billing_type for t in project.tasks] == [
        BillingType.TIME_AND_MATERIALS,
        BillingType.FIXED_FEE,
        BillingType.FIXED_FEE,
    ]
    assert project.budget == money("47800.00")


def test_a_deal_of_fixed_fees_alone_needs_no_rate_card(rules: DealRules) -> None:
    deal = opportunity([line("L1", "Implementation Package", "1", "40000", billing_type=None)])
    plan = plan_deal(deal, account(), rules)

    assert plan.issues == []
    assert plan.project is not None
    assert plan.project.rate_card is None
    assert plan.project.billing_type is BillingType.FIXED_FEE


def test_a_contract_rate_card_prices_the_work_not_the_line_prices(rules: DealRules) -> None:
    card = {"Solution Architect": "220", "Developer": "160", "Change Management Workshop": "1100"}
    lines = standard_lines()
    # A line at no list price is fine when the contract prices its role.
    lines[1] = lines[1].model_copy(update={"unit_rate": money("0")})
    plan = plan_deal(opportunity(lines, rate_card=negotiated(card)), account(), rules)

    assert plan.issues == []
    project = plan.project
    assert project is not None and project.rate_card is not None
    assert project.rate_card.name == "Acme MSA 2025"
    assert {t.role: effective_rate(project, t) for t in project.tasks} == {
        role: money(rate) for role, rate in card.items()
    }
    # The contract bills each line's hours at the negotiated rate too.
    assert plan.contract is not None
    assert {ln.role: ln.rate for ln in plan.contract.lines} == {
        role: money(rate) for role, rate in card.items()
    }


# ---------------------------------------------------------------- countries


@pytest.mark.parametrize(
    ("country", "currency", "entity", "tax_regime"),
    [
        ("US", "USD", "NW-US", "US-SALES-TAX"),
        ("GB", "GBP", "NW-UK", "GB-VAT"),
        ("DE", "EUR", "NW-DE", "EU-VAT"),
        ("FR", "EUR", "NW-DE", "EU-VAT-REVERSE-CHARGE"),
        ("AU", "AUD", "NW-AU", "AU-GST"),
        ("CA", "CAD", "NW-CA", "CA-GST-HST"),
    ],
)
def test_each_demo_country_maps_to_its_legal_entity_and_currency(
    rules: DealRules, country: str, currency: str, entity: str, tax_regime: str
) -> None:
    plan = plan_deal(opportunity(currency=currency), account(country), rules)

    assert plan.issues == []
    customer, project = plan.customer, plan.project
    assert customer is not None and project is not None
    assert customer.legal_entity.code == entity
    assert customer.legal_entity.tax_regime == tax_regime
    assert customer.currency == currency
    assert customer.billing_address.country == country
    assert project.legal_entity_code == entity
    assert project.currency == currency
    assert project.budget == money("27950.00", currency)
    assert project.rate_card is not None and project.rate_card.currency == currency
    # Only France, served across the border by the German entity, needs finance's eye.
    if country == "FR":
        assert plan.risks == [
            "deals billed to FR through NW-DE under EU-VAT-REVERSE-CHARGE need review"
        ]
    else:
        assert plan.risks == []


@pytest.mark.parametrize(
    ("country", "currency", "needs_tax_id"),
    [
        ("US", "USD", False),
        ("GB", "GBP", True),
        ("DE", "EUR", True),
        ("FR", "EUR", True),
        ("AU", "AUD", False),
        ("CA", "CAD", False),
    ],
)
@pytest.mark.parametrize("tax_id", [None, ""])
def test_vat_countries_need_a_tax_id_on_the_account(
    rules: DealRules, country: str, currency: str, needs_tax_id: bool, tax_id: str | None
) -> None:
    plan = plan_deal(opportunity(currency=currency), account(country, tax_id=tax_id), rules)

    if needs_tax_id:
        assert len(plan.issues) == 1
        assert plan.issues[0].startswith("account.tax_id: ")
        assert "VAT" in plan.issues[0]
        assert plan.customer is None and plan.project is None
    else:
        assert plan.issues == []
        assert plan.customer is not None and plan.customer.tax_id in (None, "")


# ---------------------------------------------------------------- issues


def _no_address() -> tuple[Opportunity, Account]:
    return opportunity(), account(billing_address=None)


def _unmapped_country() -> tuple[Opportunity, Account]:
    return opportunity(currency="JPY"), account("JP")


def _wrong_currency() -> tuple[Opportunity, Account]:
    return opportunity(currency="EUR"), account("US")


def _zero_rate() -> tuple[Opportunity, Account]:
    lines = standard_lines()
    lines[1] = lines[1].model_copy(update={"unit_rate": money("0")})
    return opportunity(lines), account()


def _two_rates_for_one_role() -> tuple[Opportunity, Account]:
    lines = [*standard_lines(), line("L4", "Development", "40", "165", description="Phase 2")]
    return opportunity(lines), account()


def _contract_card_lacks_a_role() -> tuple[Opportunity, Account]:
    card = negotiated({"Solution Architect": "220", "Developer": "160"})
    return opportunity(rate_card=card), account()


def _not_won() -> tuple[Opportunity, Account]:
    return opportunity(won=False, stage="Negotiation"), account()


def _no_lines() -> tuple[Opportunity, Account]:
    return opportunity([]), account()


def _other_account() -> tuple[Opportunity, Account]:
    return opportunity(account_id="001B"), account()


@pytest.mark.parametrize(
    ("make", "field", "mentions"),
    [
        pytest.param(_no_address, "account.billing_address", [], id="no-billing-address"),
        pytest.param(_unmapped_country, "account.billing_address.country", ["JP"], id="JP"),
        pytest.param(_wrong_currency, "opportunity.currency", ["EUR", "USD", "NW-US"], id="ccy"),
        pytest.param(_zero_rate, "lines[1].unit_rate", ["'Developer'"], id="zero-rate"),
        pytest.param(
            _two_rates_for_one_role, "lines.unit_rate", ["'Developer'", "150", "165"], id="2-rates"
        ),
        pytest.param(
            _contract_card_lacks_a_role,
            "lines[2].role",
            ["'Change Management Workshop'"],
            id="contract-card",
        ),
        pytest.param(_not_won, "won", ["Negotiation"], id="not-won"),
        pytest.param(_no_lines, "lines", [], id="no-lines"),
        pytest.param(_other_account, "opportunity.account_id", ["001B", "001A"], id="account"),
    ],
)
def test_a_deal_that_cannot_be_booked_names_the_field_to_fix(
    rules: DealRules,
    make: Callable[[], tuple[Opportunity, Account]],
    field: str,
    mentions: list[str],
) -> None:
    plan = plan_deal(*make(), rules)

    assert len(plan.issues) == 1, plan.issues
    issue = plan.issues[0]
    assert issue.startswith(f"{field}: "), issue
    for fragment in mentions:
        assert fragment in issue, issue
    assert plan.customer is None and plan.project is None and not plan.ready
    assert plan.risks == []


def test_every_issue_is_reported_at_once(rules: DealRules) -> None:
    lines = [*standard_lines(), line("L4", "Consulting", "8", "0")]
    deal = opportunity(lines, won=False, stage="Proposal", account_id="001Z")
    plan = plan_deal(deal, account(billing_address=None), rules)

    assert sorted(i.split(": ", 1)[0] for i in plan.issues) == [
        "account.billing_address",
        "lines[3].unit_rate",
        "opportunity.account_id",
        "won",
    ]
    assert plan.customer is None and plan.project is None and not plan.ready


def test_country_and_rate_issues_come_together(rules: DealRules) -> None:
    lines = [
        *standard_lines("EUR"),
        line("L4", "Development", "10", "99", "EUR", description="Phase 2"),
    ]
    plan = plan_deal(opportunity(lines, "EUR"), account("GB", tax_id=None), rules)

    assert sorted(i.split(": ", 1)[0] for i in plan.issues) == [
        "account.tax_id",
        "lines.unit_rate",
        "opportunity.currency",
    ]


def test_the_same_role_at_the_same_rate_twice_is_one_rate(rules: DealRules) -> None:
    lines = [*standard_lines(), line("L4", "Development", "40", "150", description="Phase 2")]
    plan = plan_deal(opportunity(lines), account(), rules)

    assert plan.issues == []
    assert plan.project is not None and plan.project.rate_card is not None
    assert [e.role for e in plan.project.rate_card.entries].count("Developer") == 1
    assert len(plan.project.tasks) == 4


# ---------------------------------------------------------------- risks


@pytest.mark.parametrize("currency", ["USD", "GBP", "EUR", "AUD", "CAD"])
def test_the_threshold_is_in_the_deals_own_currency_and_exclusive(
    rules: DealRules, currency: str
) -> None:
    country = {"USD": "US", "GBP": "GB", "EUR": "DE", "AUD": "AU", "CAD": "CA"}[currency]

    at = plan_deal(single("Consulting", "250000.00", currency), account(country), rules)
    over = plan_deal(single("Consulting", "250000.01", currency), account(country), rules)

    assert at.issues == [] and at.risks == []
    assert over.issues == [] and over.ready
    assert over.risks == [
        f"amount 250,000.01 {currency} exceeds the approval threshold 250,000.00 {currency}"
    ]


def test_the_threshold_weighs_line_amounts_after_discount(rules: DealRules) -> None:
    # 300,000 list, 240,000 after a 20 % discount: the discount is the risk, not the amount.
    deal = opportunity([line("L1", "Consulting", "1000", "300", discount_percent="20")])
    plan = plan_deal(deal, account(), rules)

    assert plan.risks == ["lines[0] discount 20% exceeds the 15% limit"]


@pytest.mark.parametrize(("discount", "risky"), [("15", False), ("15.5", True), ("0", False)])
def test_a_discount_over_the_limit_is_a_risk(rules: DealRules, discount: str, risky: bool) -> None:
    lines = standard_lines()
    lines[2] = lines[2].model_copy(update={"discount_percent": Decimal(discount)})
    plan = plan_deal(opportunity(lines), account(), rules)

    assert plan.issues == []
    assert plan.risks == ([f"lines[2] discount {discount}% exceeds the 15% limit"] if risky else [])


@pytest.mark.parametrize(("net_days", "risky"), [(0, False), (30, False), (31, True), (90, True)])
def test_payment_terms_longer_than_standard_are_a_risk(
    rules: DealRules, net_days: int, risky: bool
) -> None:
    plan = plan_deal(opportunity(payment_terms=PaymentTerms(net_days=net_days)), account(), rules)

    assert plan.issues == []
    assert plan.risks == (
        [f"payment terms net {net_days} days exceed the standard 30 days"] if risky else []
    )


def test_long_standard_terms_from_the_rules_are_a_risk_too(rules: DealRules) -> None:
    lenient = rules.model_copy(update={"default_payment_terms": PaymentTerms(net_days=60)})
    plan = plan_deal(opportunity(payment_terms=None), account(), lenient)

    assert plan.risks == ["payment terms net 60 days exceed the standard 30 days"]
    assert plan.contract is not None and plan.contract.payment_terms.net_days == 60


def test_several_risks_are_all_listed_and_the_deal_is_still_planned(rules: DealRules) -> None:
    lines = [
        line("L1", "Solution Architecture", "1000", "250", "EUR"),
        line("L2", "Development", "500", "200", "EUR", discount_percent="25"),
    ]
    deal = opportunity(lines, "EUR", payment_terms=PaymentTerms(net_days=60))
    plan = plan_deal(deal, account("FR"), rules)

    assert plan.issues == [] and plan.ready
    assert plan.risks == [
        "amount 325,000.00 EUR exceeds the approval threshold 250,000.00 EUR",
        "lines[1] discount 25% exceeds the 15% limit",
        "payment terms net 60 days exceed the standard 30 days",
        "deals billed to FR through NW-DE under EU-VAT-REVERSE-CHARGE need review",
    ]
    assert plan.project is not None and plan.project.budget == money("325000.00", "EUR")


def test_a_lower_threshold_from_the_rules_applies(rules: DealRules) -> None:
    strict = rules.model_copy(
        update={"approval": rules.approval.model_copy(update={"amount_threshold": Decimal(1000)})}
    )
    plan = plan_deal(single("Consulting", "1000.01"), account(), strict)

    assert plan.risks == ["amount 1,000.01 USD exceeds the approval threshold 1,000.00 USD"]


# ---------------------------------------------------------------- the rules themselves


def _us_entity() -> LegalEntity:
    return LegalEntity(code="NW-US", name="Northwind Consulting Inc.", country="US", currency="USD")


def test_rules_refuse_a_country_naming_an_unknown_legal_entity() -> None:
    with pytest.raises(ValidationError) as exc:
        DealRules(
            legal_entities={"NW-US": _us_entity()},
            countries={
                "US": CountryRule(legal_entity="NW-US", tax_regime="US-SALES-TAX", currency="USD"),
                "JP": CountryRule(legal_entity="NW-JP", tax_regime="JP-CT", currency="JPY"),
            },
            approval=ApprovalPolicy(approvers=APPROVERS),
        )
    assert "countries.JP.legal_entity: unknown legal entity 'NW-JP'" in str(exc.value)


def test_rules_refuse_a_country_that_is_not_iso() -> None:
    with pytest.raises(ValidationError, match="ZZ"):
        DealRules(
            legal_entities={"NW-US": _us_entity()},
            countries={"ZZ": CountryRule(legal_entity="NW-US", tax_regime="X", currency="USD")},
            approval=ApprovalPolicy(approvers=APPROVERS),
        )


def test_an_approval_policy_needs_an_approver() -> None:
    with pytest.raises(ValidationError, match="approvers"):
        ApprovalPolicy(approvers=[])


def test_approval_policy_defaults_follow_the_issue() -> None:
    policy = ApprovalPolicy(approvers=APPROVERS)
    assert policy.amount_threshold == Decimal("250000")
    assert policy.max_discount_percent == Decimal("15")
    assert policy.standard_net_days == 30


@pytest.mark.parametrize(
    ("who", "may"),
    [
        ("finance@northwind.example", True),
        ("Finance@Northwind.Example", True),
        ("  CFO@NORTHWIND.EXAMPLE ", True),
        ("intern@northwind.example", False),
        ("finance@northwind.example.evil", False),
        ("", False),
    ],
)
def test_who_may_decide_ignores_case(who: str, may: bool) -> None:
    policy = ApprovalPolicy(approvers=["Finance@Northwind.example", "cfo@northwind.example"])
    assert policy.may_decide(who) is may


# ---------------------------------------------------------------- determinism


def _risky_fr_deal() -> tuple[Opportunity, Account]:
    lines = [*standard_lines("EUR"), line("L4", "Consulting", "2000", "140", "EUR")]
    return opportunity(lines, "EUR", payment_terms=PaymentTerms(net_days=45)), account("FR")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (opportunity(), account()), id="clean"),
        pytest.param(_risky_fr_deal, id="risky"),
        pytest.param(_two_rates_for_one_role, id="issues"),
    ],
)
def test_the_same_deal_gives_an_equal_plan_that_survives_json(
    rules: DealRules, make: Callable[[], tuple[Opportunity, Account]]
) -> None:
    first = plan_deal(*make(), rules)
    again = plan_deal(*make(), rules)

    assert first == again
    assert first.model_dump_json() == again.model_dump_json()
    assert DealPlan.model_validate_json(first.model_dump_json()) == first


_PLAN_IN_A_FRESH_PROCESS = """
import json, sys
from canonical import Account, DealRules, Opportunity, plan_deal
data = json.load(sys.stdin)
plan = plan_deal(
    Opportunity.model_validate(data["opportunity"]),
    Account.model_validate(data["account"]),
    DealRules.model_validate(data["rules"]),
)
sys.stdout.write(plan.model_dump_json())
"""


def test_the_plan_is_the_same_on_another_worker(rules: DealRules) -> None:
    """A replay may run on another process, where set and dict-of-str orders differ."""
    lines = [
        *standard_lines(),
        line("L4", "Development", "40", "165"),
        line("L5", "Consulting", "8", "0"),
        line("L6", "Cloud Audit", "5", "300"),
        line("L7", "Cloud Audit", "5", "310"),
    ]
    deals = [(opportunity(), account()), (opportunity(lines), account())]
    for deal, acct in deals:
        expected = plan_deal(deal, acct, rules).model_dump_json()
        payload = json.dumps(
            {
                "opportunity": deal.model_dump(mode="json"),
                "account": acct.model_dump(mode="json"),
                "rules": rules.model_dump(mode="json"),
            }
        )
        for seed in ("1", "2"):
            out = subprocess.run(
                [sys.executable, "-c", _PLAN_IN_A_FRESH_PROCESS],
                input=payload,
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
                timeout=60,
            )
            assert out.stdout == expected


# ---------------------------------------------------------------- the contract as sold


def globex_lines() -> list[OpportunityLine]:
    """The demo's mixed deal: Development and Project Management by the hour, Training a fee
    the CRM leaves to the catalogue."""
    return [
        line("L1", "Development", "100", "150"),
        line("L2", "Project Management", "20", "120"),
        line("L3", "Training", "1", "4000", billing_type=None),
    ]


def test_a_line_is_billed_the_way_it_was_sold(rules: DealRules) -> None:
    # The catalogue sells Training as a fixed fee and Consulting by the hour; the lines say
    # otherwise, and the lines win.
    lines = [
        line("L1", "Training", "16", "120"),
        line("L2", "Consulting", "1", "9000", billing_type="fixed_fee"),
        line("L3", "Implementation Package", "1", "40000", billing_type=None),
    ]
    plan = plan_deal(opportunity(lines), account(), rules)

    assert plan.issues == [] and plan.contract is not None and plan.project is not None
    kinds = [ln.billing_type for ln in plan.contract.lines]
    assert kinds == [
        BillingType.TIME_AND_MATERIALS,
        BillingType.FIXED_FEE,
        BillingType.FIXED_FEE,
    ]
    assert [t.billing_type for t in plan.project.tasks] == kinds
    assert [(ln.rate, ln.hours) for ln in plan.contract.lines] == [
        (money("120"), Decimal("16")),
        (None, None),
        (None, None),
    ]


def test_the_mixed_deal_becomes_version_1_of_its_contract(rules: DealRules) -> None:
    deal = opportunity(globex_lines(), upfront_percent="20", end_date=date(2025, 9, 30))
    plan = plan_deal(deal, account(), rules)

    assert plan.ready and plan.project is not None
    contract = plan.contract
    assert contract is not None
    assert (contract.contract_id, contract.version, contract.source) == (
        plan.project.id,
        1,
        "opportunity:006A",
    )
    assert (contract.effective_from, contract.start_date, contract.end_date) == (
        CLOSE,
        CLOSE,
        date(2025, 9, 30),
    )
    assert contract.value == deal.total() == money("21400.00")
    assert contract.po_number == "PO-4711" and contract.currency == "USD"
    dev, pm, training = contract.lines
    assert (dev.task, dev.role, dev.rate, dev.amount) == (
        "Development",
        "Developer",
        money("150"),
        money("15000.00"),
    )
    assert (pm.role, pm.rate) == ("Project Manager", money("120"))
    assert training.billing_type is BillingType.FIXED_FEE and training.rate is None
    assert training.schedule is not None and training.schedule.upfront_percent == 20
    assert contract.upfront(training) == money("800.00")
    assert contract.remainder(training) == money("3200.00")
    # The firm's default expense policy passes nothing on.
    assert contract.expense_policy == ExpensePolicy()
    assert contract.expense_policy.billable("travel") is False


def test_the_deal_sets_caps_expenses_and_instalments(rules: DealRules) -> None:
    lines = [
        line("L1", "Development", "100", "150", not_to_exceed=money("12000")),
        line("L2", "Training", "1", "6000", billing_type=None, instalments=3),
    ]
    policy = ExpensePolicy(billable_categories=["Travel"], markup_percent="10")
    deal = opportunity(lines, not_to_exceed=money("20000"), expense_policy=policy)
    plan = plan_deal(deal, account(), rules)

    assert plan.issues == [] and plan.contract is not None
    contract = plan.contract
    assert contract.not_to_exceed == money("20000")
    assert contract.lines[0].not_to_exceed == money("12000")
    assert contract.expense_policy == policy
    instalments = contract.instalments(contract.lines[1])
    assert [(i.due, i.amount) for i in instalments] == [
        (date(2025, 3, 1), money("2000.00")),
        (date(2025, 4, 1), money("2000.00")),
        (date(2025, 5, 1), money("2000.00")),
    ]


def test_the_firms_expense_policy_applies_when_the_deal_states_none(rules: DealRules) -> None:
    firm = ExpensePolicy(billable_categories=["travel", "lodging"], markup_percent="5")
    plan = plan_deal(opportunity(), account(), rules.model_copy(update={"expense_policy": firm}))

    assert plan.contract is not None and plan.contract.expense_policy == firm


def test_milestones_are_sold_on_their_milestone_line(rules: DealRules) -> None:
    lines = [*globex_lines(), line("L4", "Go-live", "1", "10000", billing_type="milestone")]
    milestones = [
        Milestone(id="M1", name="Cut-over", amount=money("6000"), line_id="L4"),
        Milestone(
            id="M2",
            name="Hypercare",
            amount=money("4000"),
            line_id="L4",
            due_date=date(2025, 6, 30),
        ),
    ]
    plan = plan_deal(opportunity(lines, milestones=milestones), account(), rules)

    assert plan.issues == [] and plan.contract is not None
    assert [(m.id, m.line_id, m.amount, m.planned_date) for m in plan.contract.milestones] == [
        ("M1", "L4", money("6000"), None),
        ("M2", "L4", money("4000"), date(2025, 6, 30)),
    ]


def _milestone_on_an_hourly_line() -> Opportunity:
    lines = [*globex_lines(), line("L4", "Go-live", "1", "5000", billing_type="milestone")]
    return opportunity(
        lines,
        milestones=[
            Milestone(id="M1", name="Cut-over", amount=money("5000"), line_id="L4"),
            Milestone(id="M2", name="Sprint 1", amount=money("1000"), line_id="L1"),
        ],
    )


def _milestones_short_of_their_line() -> Opportunity:
    lines = [*globex_lines(), line("L4", "Go-live", "1", "5000", billing_type="milestone")]
    return opportunity(
        lines, milestones=[Milestone(id="M1", name="Cut-over", amount=money("4000"), line_id="L4")]
    )


def _milestone_line_without_milestones() -> Opportunity:
    return opportunity(
        [*globex_lines(), line("L4", "Go-live", "1", "5000", billing_type="milestone")]
    )


def _milestone_naming_no_line() -> Opportunity:
    lines = [*globex_lines(), line("L4", "Go-live", "1", "5000", billing_type="milestone")]
    return opportunity(
        lines,
        milestones=[
            Milestone(id="M1", name="Cut-over", amount=money("5000"), line_id="L4"),
            Milestone(id="M2", name="Extra", amount=money("5")),
        ],
    )


def _instalments_without_an_end_date() -> Opportunity:
    lines = globex_lines()
    lines[2] = lines[2].model_copy(update={"fee_remainder": FeeRemainder.INSTALMENTS})
    return opportunity(lines)


def _cap_on_a_fixed_fee() -> Opportunity:
    lines = globex_lines()
    lines[2] = lines[2].model_copy(update={"not_to_exceed": money("5000")})
    return opportunity(lines)


def _instalments_on_an_hourly_line() -> Opportunity:
    lines = globex_lines()
    lines[0] = lines[0].model_copy(update={"instalments": 3})
    return opportunity(lines, end_date=date(2025, 12, 31))


def _two_lines_one_task() -> Opportunity:
    return opportunity([*globex_lines(), line("L4", "Development", "10", "150")])


def _ends_before_it_starts() -> Opportunity:
    return opportunity(globex_lines(), end_date=date(2025, 1, 31))


@pytest.mark.parametrize(
    ("make", "field", "mentions"),
    [
        pytest.param(
            _milestone_on_an_hourly_line,
            "milestones[1].line_id",
            ["'Sprint 1'", "L1", "time_and_materials"],
            id="milestone-on-t&m",
        ),
        pytest.param(
            _milestones_short_of_their_line,
            "lines[3].milestones",
            ["add up to 4000", "5000.00"],
            id="milestones-short",
        ),
        pytest.param(
            _milestone_line_without_milestones, "lines[3].milestones", ["L4"], id="no-milestones"
        ),
        pytest.param(_milestone_naming_no_line, "milestones[1].line_id", ["'Extra'"], id="no-line"),
        pytest.param(
            _instalments_without_an_end_date, "lines[2].schedule", ["end_date"], id="no-term"
        ),
        pytest.param(_cap_on_a_fixed_fee, "lines[2].not_to_exceed", ["fixed_fee"], id="ff-cap"),
        pytest.param(
            _instalments_on_an_hourly_line, "lines[0].schedule", ["fixed-fee"], id="t&m-schedule"
        ),
        pytest.param(_two_lines_one_task, "lines[3].task", ["'Development'"], id="one-task"),
        pytest.param(_ends_before_it_starts, "end_date", ["2025-01-31"], id="end-date"),
    ],
)
def test_a_contract_that_cannot_be_billed_names_the_field(
    rules: DealRules, make: Callable[[], Opportunity], field: str, mentions: list[str]
) -> None:
    plan = plan_deal(make(), account(), rules)

    assert len(plan.issues) == 1, plan.issues
    issue = plan.issues[0]
    assert issue.startswith(f"{field}: "), issue
    for fragment in mentions:
        assert fragment in issue, issue
    assert plan.contract is None and plan.project is None and not plan.ready


def test_the_contracts_own_rules_say_the_same_when_it_is_made() -> None:
    """The deal's issues are `ContractVersion.problems`: made directly, it refuses alike."""
    sold = ContractLine(
        id="L1",
        task="Go-live",
        billing_type=BillingType.MILESTONE,
        amount=money("5000"),
    )
    with pytest.raises(ValidationError, match=r"lines\[0\]\.milestones: milestone line L1"):
        ContractVersion(
            contract_id="salesforce:006A",
            version=1,
            effective_from=CLOSE,
            source="opportunity:006A",
            currency="USD",
            start_date=CLOSE,
            lines=[sold],
            payment_terms=PaymentTerms(net_days=30),
            value=money("5000"),
        )
    with pytest.raises(ValidationError, match="rate: a time-and-materials line needs a rate"):
        ContractLine(id="L2", task="Dev", billing_type="time_and_materials", amount=money("1"))
