"""Loading the deal rules: the demo files, settings that shape the policy, and files gone wrong.

A mistake in a mapping file must stop the worker with the file and the entry named, rather
than surface later as a deal that cannot be planned.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from canonical import BillingType, ExpensePolicy, PaymentTerms
from settings import DEMO_RULES, Settings
from settings.rules import RulesFileError, load_deal_rules

DEMO_ENTITIES = DEMO_RULES / "legal_entities.toml"
DEMO_CATALOGUE = DEMO_RULES / "service_catalogue.toml"

GOOD_ENTITIES = """
[entities.NW-US]
name = "Northwind Consulting Inc."
country = "US"
currency = "USD"

[countries.US]
legal_entity = "NW-US"
tax_regime = "US-SALES-TAX"
currency = "USD"
"""

GOOD_CATALOGUE = """
[products."Go-live Support"]
role = "Support Engineer"
billing_type = "milestone"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("Q2C_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def files(
    tmp_path: Path, entities: str = GOOD_ENTITIES, catalogue: str = GOOD_CATALOGUE
) -> Settings:
    return Settings(
        legal_entities_file=write(tmp_path / "entities.toml", entities),
        service_catalogue_file=write(tmp_path / "catalogue.toml", catalogue),
    )


# ---------------------------------------------------------------- the demo configuration


def test_the_demo_files_are_the_default_and_load() -> None:
    rules = load_deal_rules(Settings())

    assert set(rules.countries) == {"US", "GB", "DE", "FR", "AU", "CA"}
    assert set(rules.legal_entities) == {"NW-US", "NW-CA", "NW-UK", "NW-DE", "NW-AU"}
    assert all(code == e.code for code, e in rules.legal_entities.items())
    assert {c: r.legal_entity for c, r in rules.countries.items()} == {
        "US": "NW-US",
        "GB": "NW-UK",
        "DE": "NW-DE",
        "FR": "NW-DE",
        "AU": "NW-AU",
        "CA": "NW-CA",
    }
    assert {c for c, r in rules.countries.items() if r.review} == {"FR"}
    assert rules.legal_entities["NW-UK"].name == "Northwind Consulting Ltd"
    assert rules.legal_entities["NW-DE"].country == "DE"

    assert {p: (e.role, e.billing_type) for p, e in rules.catalogue.items()} == {
        "Solution Architecture": ("Solution Architect", BillingType.TIME_AND_MATERIALS),
        "Project Management": ("Project Manager", BillingType.TIME_AND_MATERIALS),
        "Development": ("Developer", BillingType.TIME_AND_MATERIALS),
        "Consulting": ("Consultant", BillingType.TIME_AND_MATERIALS),
        "Data Migration": ("Data Engineer", BillingType.TIME_AND_MATERIALS),
        "Training": ("Trainer", BillingType.FIXED_FEE),
        "Implementation Package": ("Implementation Team", BillingType.FIXED_FEE),
    }


def test_each_demo_country_defaults_to_the_currency_its_entity_contracts_in() -> None:
    # Otherwise every deal in a country's own default currency would be refused.
    rules = load_deal_rules(Settings())

    for country, rule in rules.countries.items():
        entity = rules.legal_entities[rule.legal_entity]
        assert rule.currency == entity.currency, country
        if rule.legal_entity != "NW-DE":  # NW-DE also serves France, cross-border
            assert entity.country == country


def test_the_default_policy_is_the_issues() -> None:
    rules = load_deal_rules(Settings())

    assert rules.approval.amount_threshold == Decimal("250000")
    assert rules.approval.max_discount_percent == Decimal("15")
    assert rules.approval.standard_net_days == 30
    assert rules.approval.approvers == ["finance@northwind.example", "cfo@northwind.example"]
    assert rules.approval.remind_after == timedelta(hours=24)
    assert rules.approval.expire_after == timedelta(days=7)
    assert rules.default_payment_terms == PaymentTerms(net_days=30)
    assert rules.correction_deadline == timedelta(days=3)


# ---------------------------------------------------------------- settings reach the rules


def test_settings_shape_the_approval_policy() -> None:
    rules = load_deal_rules(
        Settings(
            approval_threshold=Decimal("100000"),
            max_discount_percent=Decimal("10"),
            standard_net_days=45,
            finance_approvers=["controller@northwind.example"],
            approval_remind_after=timedelta(hours=4),
            approval_expire_after=timedelta(days=2),
            correction_deadline=timedelta(hours=36),
        )
    )

    assert rules.approval.amount_threshold == Decimal("100000")
    assert rules.approval.max_discount_percent == Decimal("10")
    assert rules.approval.standard_net_days == 45
    assert rules.approval.approvers == ["controller@northwind.example"]
    assert rules.approval.may_decide("Controller@Northwind.Example")
    assert not rules.approval.may_decide("finance@northwind.example")
    assert rules.approval.remind_after == timedelta(hours=4)
    assert rules.approval.expire_after == timedelta(days=2)
    # The standard terms are also what a deal without terms gets.
    assert rules.default_payment_terms == PaymentTerms(net_days=45)
    assert rules.correction_deadline == timedelta(hours=36)


def test_environment_variables_reach_the_rules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("Q2C_LEGAL_ENTITIES_FILE", str(write(tmp_path / "e.toml", GOOD_ENTITIES)))
    monkeypatch.setenv("Q2C_SERVICE_CATALOGUE_FILE", str(write(tmp_path / "c.toml", "")))
    monkeypatch.setenv("Q2C_APPROVAL_THRESHOLD", "75000")
    monkeypatch.setenv("Q2C_FINANCE_APPROVERS", '["ap@northwind.example"]')

    rules = load_deal_rules(Settings())

    assert set(rules.countries) == {"US"}
    assert rules.catalogue == {}
    assert rules.approval.amount_threshold == Decimal("75000")
    assert rules.approval.approvers == ["ap@northwind.example"]


def test_files_of_ones_own_replace_the_demo(tmp_path: Path) -> None:
    rules = load_deal_rules(files(tmp_path))

    assert set(rules.legal_entities) == {"NW-US"}
    assert rules.legal_entities["NW-US"].code == "NW-US"
    assert rules.legal_entities["NW-US"].tax_regime is None
    assert set(rules.catalogue) == {"Go-live Support"}
    assert rules.catalogue["Go-live Support"].billing_type is BillingType.MILESTONE
    assert rules.expense_policy == ExpensePolicy()  # nothing passed on unless configured


def test_the_catalogue_sets_the_firms_expense_policy(tmp_path: Path) -> None:
    catalogue = GOOD_CATALOGUE + '\n[expenses]\nbillable_categories = ["Travel", "lodging"]\n'
    rules = load_deal_rules(files(tmp_path, catalogue=catalogue + "markup_percent = 7.5\n"))

    assert rules.expense_policy == ExpensePolicy(
        billable_categories=["Travel", "lodging"], markup_percent=Decimal("7.5")
    )
    assert rules.expense_policy.billable("travel")


# ---------------------------------------------------------------- files gone wrong


def test_a_broken_toml_file_is_named(tmp_path: Path) -> None:
    settings = files(tmp_path, entities='[entities.NW-US\nname = "Northwind"\n')

    with pytest.raises(RulesFileError) as exc:
        load_deal_rules(settings)
    message = str(exc.value)
    assert message.startswith(f"{settings.legal_entities_file}: not valid TOML")


@pytest.mark.parametrize("which", ["legal_entities_file", "service_catalogue_file"])
def test_a_missing_file_is_named(tmp_path: Path, which: str) -> None:
    missing = tmp_path / "nowhere" / "rules.toml"
    settings = files(tmp_path).model_copy(update={which: missing})

    with pytest.raises(RulesFileError) as exc:
        load_deal_rules(settings)
    assert str(exc.value).startswith(f"{missing}: cannot read")


def test_a_country_naming_an_unknown_entity_is_named(tmp_path: Path) -> None:
    settings = files(
        tmp_path,
        entities=GOOD_ENTITIES
        + '\n[countries.JP]\nlegal_entity = "NW-JP"\ntax_regime = "JP-CT"\ncurrency = "JPY"\n',
    )

    with pytest.raises(RulesFileError) as exc:
        load_deal_rules(settings)
    message = str(exc.value)
    assert str(settings.legal_entities_file) in message
    assert "countries.JP.legal_entity: unknown legal entity 'NW-JP'" in message


@pytest.mark.parametrize(
    ("entities", "catalogue", "entry"),
    [
        pytest.param(
            GOOD_ENTITIES.replace('currency = "USD"\n\n', 'currency = "USX"\n\n'),
            GOOD_CATALOGUE,
            "legal_entities.NW-US.currency: ",
            id="entity-currency",
        ),
        pytest.param(
            GOOD_ENTITIES.replace('country = "US"', 'contry = "US"'),
            GOOD_CATALOGUE,
            "legal_entities.NW-US.contry: ",
            id="misspelt-key",
        ),
        pytest.param(
            GOOD_ENTITIES.replace("[countries.US]", "[countries.UK]"),
            GOOD_CATALOGUE,
            "countries.UK.[key]: Value error, 'UK' is not an ISO 3166-1",
            id="UK-is-not-iso",
        ),
        pytest.param(
            GOOD_ENTITIES + '\n[countries.CA]\nlegal_entity = "NW-US"\ncurrency = "CAD"\n',
            GOOD_CATALOGUE,
            "countries.CA.tax_regime: ",
            id="country-without-tax-regime",
        ),
        pytest.param(
            GOOD_ENTITIES,
            GOOD_CATALOGUE.replace('"milestone"', '"retainer"'),
            "catalogue.Go-live Support.billing_type: ",
            id="billing-type",
        ),
        pytest.param(
            GOOD_ENTITIES,
            '[products."Go-live Support"]\n',
            "catalogue.Go-live Support.role: ",
            id="product-without-role",
        ),
        pytest.param(
            GOOD_ENTITIES + '[entities]\nNW-CA = "Northwind Canada"\n',
            GOOD_CATALOGUE,
            "legal_entities.NW-CA: ",
            id="entity-not-a-table",
        ),
        pytest.param(
            'entities = ["NW-US"]\n', GOOD_CATALOGUE, "legal_entities: ", id="entities-not-a-table"
        ),
    ],
)
def test_a_bad_entry_is_named(tmp_path: Path, entities: str, catalogue: str, entry: str) -> None:
    settings = files(tmp_path, entities, catalogue)

    with pytest.raises(RulesFileError) as exc:
        load_deal_rules(settings)
    message = str(exc.value)
    assert str(settings.legal_entities_file) in message
    assert str(settings.service_catalogue_file) in message
    assert entry in message, message
