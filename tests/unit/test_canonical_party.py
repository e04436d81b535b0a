"""Parties: addresses, legal entities, CRM accounts, contacts and the customer master."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from canonical import (
    Account,
    Address,
    Contact,
    Customer,
    LegalEntity,
    PaymentTerms,
    explain,
)


def first_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


def address(**over: Any) -> Address:
    return Address.model_validate(
        {"street": "1 Rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
        | over
    )


def entity() -> LegalEntity:
    return LegalEntity(
        code="FR01", name="Conseil SAS", country="FR", currency="EUR", tax_regime="EU-VAT"
    )


def customer_data(**over: Any) -> dict[str, Any]:
    return {
        "id": "cust-1",
        "name": "Globex SA",
        "legal_entity": entity(),
        "addresses": [address()],
        "tax_id": "FR40303265045",
        "currency": "EUR",
        "payment_terms": PaymentTerms(net_days=30),
        "contacts": [Contact(name="Ana Ruiz", email="ana@globex.example", role="billing")],
        "external_ids": {"crm": "001A"},
    } | over


def test_customer_happy_path() -> None:
    customer = Customer.model_validate(customer_data())
    assert customer.billing_address.city == "Paris"
    assert [c.name for c in customer.billing_contacts()] == ["Ana Ruiz"]
    assert customer.payment_terms.label == "Net 30"


def test_missing_legal_entity_is_named_in_the_error() -> None:
    data = customer_data()
    del data["legal_entity"]
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(data)
    err = first_error(exc)
    assert err["loc"] == ("legal_entity",)
    assert err["type"] == "missing"
    assert "legal_entity" in str(exc.value)
    assert explain(exc.value) == ["legal_entity: Field required"]


def test_customer_needs_an_address() -> None:
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(customer_data(addresses=[]))
    err = first_error(exc)
    assert err["loc"] == ("addresses",)
    assert "at least 1 item" in err["msg"]


def test_customer_currency_is_checked() -> None:
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(customer_data(currency="EURO"))
    assert first_error(exc)["loc"] == ("currency",)


def test_nested_errors_name_the_path() -> None:
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(
            customer_data(addresses=[address(), {"street": "x", "city": "y", "country": "ZZ"}])
        )
    err = first_error(exc)
    assert err["loc"] == ("addresses", 1, "country")
    assert explain(exc.value) == [
        "addresses[1].country: Value error, 'ZZ' is not an ISO 3166-1 alpha-2 country code"
    ]


def test_country_is_upper_cased_alpha_2() -> None:
    assert address(country="de").country == "DE"
    for bad in ("UK", "FRA", "F1", ""):
        with pytest.raises(ValidationError) as exc:
            address(country=bad)
        assert first_error(exc)["loc"] == ("country",)


def test_address_requires_street_and_city() -> None:
    with pytest.raises(ValidationError) as exc:
        address(street="  ")
    err = first_error(exc)
    assert err["loc"] == ("street",)
    assert err["type"] == "string_too_short"


def test_legal_entity_checks_country_and_currency() -> None:
    with pytest.raises(ValidationError) as exc:
        LegalEntity(code="X", name="X", country="FR", currency="FRF")
    assert first_error(exc)["loc"] == ("currency",)
    with pytest.raises(ValidationError) as exc:
        LegalEntity(code="X", name="X", country="France", currency="EUR")
    assert first_error(exc)["loc"] == ("country",)


@pytest.mark.parametrize("days", [-1, 366])
def test_payment_terms_net_days_within_a_year(days: int) -> None:
    with pytest.raises(ValidationError) as exc:
        PaymentTerms(net_days=days)
    assert first_error(exc)["loc"] == ("net_days",)
    assert PaymentTerms(net_days=0).label == "Due on receipt"
    assert PaymentTerms(net_days=365).net_days == 365


@pytest.mark.parametrize("email", ["ana", "ana@globex", "ana @globex.example", "@globex.example"])
def test_contact_email_is_checked(email: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Contact(name="Ana", email=email)
    err = first_error(exc)
    assert err["loc"] == ("email",)
    assert "is not an email address" in err["msg"]


def test_account_as_the_crm_sees_it() -> None:
    account = Account(
        id="001A", name="Globex SA", currency="eur", updated_at=datetime(2025, 1, 2, tzinfo=UTC)
    )
    assert (account.currency, account.billing_address, account.tax_id) == ("EUR", None, None)
    with pytest.raises(ValidationError) as exc:
        Account(id="001A", name="Globex", updated_at=datetime(2025, 1, 2))
    assert first_error(exc)["loc"] == ("updated_at",)
    assert first_error(exc)["type"] == "timezone_aware"


def test_unknown_fields_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(customer_data(vat_number="FR1"))
    err = first_error(exc)
    assert (err["loc"], err["type"]) == (("vat_number",), "extra_forbidden")


def test_customers_are_frozen() -> None:
    customer = Customer.model_validate(customer_data())
    with pytest.raises(ValidationError):
        customer.name = "Other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "model",
    [
        address(region="IDF", street2="Bât. B"),
        entity(),
        PaymentTerms(net_days=45),
        Contact(name="Ana", email="ana@globex.example", phone="+33 1 23", role="sponsor", id="c1"),
        Account(
            id="001A",
            name="Globex",
            billing_address=address(),
            tax_id="FR1",
            currency="EUR",
            website="https://globex.example",
            industry="Manufacturing",
            contacts=[Contact(name="Ana", email="ana@globex.example")],
            updated_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        ),
        Customer.model_validate(customer_data()),
    ],
    ids=lambda m: type(m).__name__,
)
def test_json_round_trip(model: Any) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model
