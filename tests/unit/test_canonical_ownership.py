"""Ownership as data: who owns which field, and how a record survives a sync."""

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from canonical import (
    ENTITY_OWNERS,
    FIELD_OWNERS,
    Address,
    Contact,
    Customer,
    Entity,
    LegalEntity,
    Money,
    PaymentTerms,
    Project,
    RateCard,
    System,
    Task,
    UnknownOwnership,
    owner_of,
    survive,
)

UK = LegalEntity(code="UK01", name="Firm Ltd", country="GB", currency="GBP")
FR = LegalEntity(code="FR01", name="Firm SAS", country="FR", currency="EUR")


def customer(**over: Any) -> Customer:
    return Customer.model_validate(
        {
            "id": "cust-1",
            "name": "Globex Ltd",
            "legal_entity": UK,
            "addresses": [Address(street="1 King St", city="London", country="GB")],
            "tax_id": "GB123",
            "currency": "GBP",
            "payment_terms": PaymentTerms(net_days=30),
            "external_ids": {"erp": "42"},
        }
        | over
    )


@pytest.mark.parametrize(
    ("entity", "field", "owner"),
    [
        ("customer", "name", System.CRM),
        ("customer", "addresses", System.CRM),
        ("customer", "contacts", System.CRM),
        ("customer", "tax_id", System.ERP),
        ("customer", "legal_entity", System.ERP),
        ("customer", "payment_terms", System.ERP),
        ("customer", "id", System.ERP),  # not listed: follows the entity's owner
        ("opportunity", "amount", System.CRM),
        ("project", "tasks", System.PSA),
        ("project", "budget", System.PSA),
        ("project", "rate_card", System.CRM),
        ("time_entry", "hours", System.PSA),
        ("time_entry", "billed", System.BILLING),
        ("invoice", "status", System.BILLING),
        ("invoice", "number", System.BILLING),
        (Entity.INVOICE, "customer_id", System.ERP),
    ],
)
def test_owner_of_reads_the_table(entity: str, field: str, owner: System) -> None:
    assert owner_of(entity, field) is owner


def test_every_entity_has_an_owner_and_overrides_name_known_entities() -> None:
    assert set(ENTITY_OWNERS) == set(Entity)
    assert {entity for entity, _ in FIELD_OWNERS} <= set(Entity)


def test_unknown_entity_is_refused_by_name() -> None:
    with pytest.raises(UnknownOwnership, match="no owning system declared for vendor"):
        owner_of("vendor", "name")


def test_crm_update_changes_only_what_the_crm_owns() -> None:
    current = customer()
    incoming = customer(
        name="Globex UK Ltd",
        addresses=[Address(street="2 Queen St", city="Leeds", country="GB")],
        contacts=[Contact(name="Ana", email="ana@globex.example")],
        legal_entity=FR,
        tax_id="GB999",
        currency="EUR",
        payment_terms=PaymentTerms(net_days=60),
        external_ids={"crm": "001A"},
    )
    merged = survive("customer", current, incoming, System.CRM)
    assert merged.name == "Globex UK Ltd"
    assert merged.addresses[0].city == "Leeds"
    assert [c.name for c in merged.contacts] == ["Ana"]
    # finance facts stay as the ERP has them
    assert (merged.legal_entity, merged.tax_id, merged.currency) == (UK, "GB123", "GBP")
    assert merged.payment_terms.net_days == 30
    assert merged.external_ids == {"erp": "42", "crm": "001A"}


def test_erp_update_changes_only_what_the_erp_owns() -> None:
    current = customer(contacts=[Contact(name="Ana", email="ana@globex.example")])
    incoming = customer(
        name="GLOBEX LTD",
        legal_entity=FR,
        tax_id="FR1",
        currency="EUR",
        payment_terms=PaymentTerms(net_days=45),
    )
    merged = survive(Entity.CUSTOMER, current, incoming, "erp")
    assert merged.name == "Globex Ltd"
    assert [c.name for c in merged.contacts] == ["Ana"]  # the ERP knows no contacts
    assert (merged.legal_entity, merged.tax_id, merged.currency) == (FR, "FR1", "EUR")
    assert merged.payment_terms.net_days == 45


def test_a_non_owner_fills_a_gap_but_never_erases() -> None:
    merged = survive("customer", customer(tax_id=None), customer(tax_id="GB777"), System.CRM)
    assert merged.tax_id == "GB777"
    merged = survive("customer", customer(), customer(tax_id=None), System.ERP)
    assert merged.tax_id is None  # the owner may clear its own field


def test_survive_projects_by_field_owner() -> None:
    def project(**over: Any) -> Project:
        return Project.model_validate(
            {
                "id": "P",
                "name": "P",
                "customer_id": "c",
                "legal_entity_code": "UK01",
                "currency": "GBP",
                "budget": Money.of("100", "GBP"),
                "billing_type": "fixed_fee",
                "start_date": date(2025, 1, 1),
            }
            | over
        )

    current = project(tasks=[Task(name="a")])
    incoming = project(
        tasks=[Task(name="b")], budget=Money.of("200", "GBP"), billing_type="time_and_materials"
    )
    from_psa = survive("project", current, incoming, System.PSA)
    assert ([t.name for t in from_psa.tasks], from_psa.budget.amount) == (["b"], Decimal(200))
    assert from_psa.billing_type == "fixed_fee"  # commercial, owned by the CRM
    from_crm = survive("project", current, incoming, System.CRM)
    assert ([t.name for t in from_crm.tasks], from_crm.billing_type) == (
        ["a"],
        "time_and_materials",
    )


def test_the_merged_record_is_validated() -> None:
    def project(currency: str, **over: Any) -> Project:
        return Project.model_validate(
            {
                "id": "P",
                "name": "P",
                "customer_id": "c",
                "legal_entity_code": "UK01",
                "currency": currency,
                "budget": Money.of("100", currency),
                "billing_type": "fixed_fee",
                "start_date": date(2025, 1, 1),
            }
            | over
        )

    # the CRM owns the rate card, the PSA the currency: a merge that would mix them is refused
    current = project("GBP")
    incoming = project("EUR", rate_card=RateCard(currency="EUR"))
    with pytest.raises(ValidationError) as exc:
        survive("project", current, incoming, System.CRM)
    assert [e["loc"] for e in exc.value.errors()] == [("rate_card",)]
    not_a_customer: Any = Contact(name="a", email="a@b.example")
    with pytest.raises(TypeError, match="cannot merge a Contact into a Customer"):
        survive("customer", customer(), not_a_customer, System.CRM)


def test_survive_refuses_an_unknown_source() -> None:
    with pytest.raises(ValueError, match="'ledger' is not a valid System"):
        survive("customer", customer(), customer(), "ledger")


def test_results_stay_frozen() -> None:
    merged = survive("customer", customer(), customer(), System.CRM)
    with pytest.raises(ValidationError):
        merged.name = "x"  # type: ignore[misc]
