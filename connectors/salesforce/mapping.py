"""Salesforce records to canonical models, and q2c's write-back to Salesforce fields.

When a record cannot become a canonical model, the error names the Salesforce field a
person has to fix (`Opportunity.Payment_Terms__c`, `OpportunityLineItem.Quantity`), not the
canonical one, because the fix happens in Salesforce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from canonical import (
    Account,
    Address,
    BillingType,
    Contact,
    Money,
    Opportunity,
    OpportunityLine,
    PaymentTerms,
    explain,
    sum_money,
)
from connectors.errors import ValidationFailed
from connectors.salesforce.wire import (
    AccountRecord,
    ContactRecord,
    OpportunityLineItemRecord,
    OpportunityRecord,
    WriteBack,
)

#: The name of this CRM in canonical models (`Opportunity.crm`) and in errors.
CRM = "salesforce"

#: Long-text limit of `Q2C_Message__c` (and of any long text area): a long failure
#: message is cut rather than making the write-back itself fail.
MESSAGE_MAX_CHARS = 32_000

_BILLING_TYPES = {
    "time and materials": BillingType.TIME_AND_MATERIALS,
    "time & materials": BillingType.TIME_AND_MATERIALS,
    "t&m": BillingType.TIME_AND_MATERIALS,
    "fixed fee": BillingType.FIXED_FEE,
    "fixed price": BillingType.FIXED_FEE,
    "milestone": BillingType.MILESTONE,
    "milestones": BillingType.MILESTONE,
}
_NET_DAYS = re.compile(r"^net\s*(\d{1,3})(?:\s*days?)?$", re.IGNORECASE)
_DUE_NOW = frozenset({"due on receipt", "due upon receipt", "immediate", "net 0"})

_ACCOUNT_FIELDS = {
    "id": "Id",
    "name": "Name",
    "billing_address": "BillingAddress",
    "tax_id": "Tax_Id__c",
    "currency": "CurrencyIsoCode",
    "website": "Website",
}
_ADDRESS_FIELDS = {
    "street": "BillingStreet",
    "street2": "BillingStreet",
    "city": "BillingCity",
    "postal_code": "BillingPostalCode",
    "country": "BillingCountryCode",
    "region": "BillingState",
}
_CONTACT_FIELDS = {"name": "LastName", "email": "Email", "phone": "Phone"}
_OPPORTUNITY_FIELDS = {
    "id": "Id",
    "name": "Name",
    "account_id": "AccountId",
    "stage": "StageName",
    "close_date": "CloseDate",
    "currency": "CurrencyIsoCode",
    "amount": "Amount",
    "payment_terms": "Payment_Terms__c",
    "po_number": "PO_Number__c",
    "probability": "Probability",
}
_LINE_FIELDS = {
    "id": "Id",
    "service": "Product2Id",
    "role": "Role__c",
    "quantity": "Quantity",
    "unit_rate": "UnitPrice",
    "billing_type": "Billing_Type__c",
    "discount_percent": "Discount",
    "description": "Description",
}


@contextmanager
def _refused_as(sobject: str, record_id: str, fields: Mapping[str, str]) -> Iterator[None]:
    """Turn a canonical validation error into `ValidationFailed` naming the Salesforce field."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]["loc"]
        sf_field = fields.get(str(first[0]), str(first[0])) if first else None
        raise ValidationFailed(
            f"{sobject} {record_id} cannot be used: " + "; ".join(explain(exc)),
            system=CRM,
            field=f"{sobject}.{sf_field}" if sf_field else sobject,
            code="CANONICAL_VALIDATION",
        ) from exc


def billing_type(value: str | None, *, sobject: str, record_id: str) -> BillingType | None:
    if value is None or not value.strip():
        return None
    key = " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    try:
        return _BILLING_TYPES.get(key) or BillingType(key.replace(" ", "_"))
    except ValueError:
        raise ValidationFailed(
            f"{sobject} {record_id}: unknown billing type {value!r}; expected one of "
            "Time and Materials, Fixed Fee, Milestone",
            system=CRM,
            field=f"{sobject}.Billing_Type__c",
            code="UNKNOWN_BILLING_TYPE",
        ) from None


def payment_terms(value: str | None, *, record_id: str) -> PaymentTerms | None:
    """`"Net 45"` is 45 days; "Due on Receipt" is 0; blank means the deal does not say."""
    if value is None or not value.strip():
        return None
    text = " ".join(value.split())
    if text.lower() in _DUE_NOW:
        return PaymentTerms(net_days=0)
    match = _NET_DAYS.match(text)
    if match is None or int(match.group(1)) > 365:
        raise ValidationFailed(
            f"Opportunity {record_id}: payment terms {value!r} are not 'Net <days>' "
            "or 'Due on Receipt'",
            system=CRM,
            field="Opportunity.Payment_Terms__c",
            code="UNKNOWN_PAYMENT_TERMS",
        )
    return PaymentTerms(net_days=int(match.group(1)))


def to_address(record: AccountRecord) -> Address | None:
    """The billing address, or None while the account lacks street, city or country.

    Street lines after the first go to `street2`. The country is the ISO code field
    (`BillingCountryCode`, present when State and Country picklists are on), else a
    two-letter `BillingCountry`.
    """
    country = record.billing_country_code or (
        record.billing_country
        if record.billing_country and len(record.billing_country.strip()) == 2
        else None
    )
    street_lines = [s.strip() for s in (record.billing_street or "").splitlines() if s.strip()]
    if not street_lines or not record.billing_city or not country:
        return None
    with _refused_as("Account", record.id, _ADDRESS_FIELDS):
        return Address(
            street=street_lines[0],
            street2=", ".join(street_lines[1:]) or None,
            city=record.billing_city,
            postal_code=record.billing_postal_code or None,
            country=country,
            region=record.billing_state or None,
        )


def to_contact(record: ContactRecord) -> Contact | None:
    """None for a contact without email: nobody can be invoiced or notified through it."""
    if not record.email:
        return None
    name = " ".join(p for p in (record.first_name, record.last_name) if p)
    with _refused_as("Contact", record.id, _CONTACT_FIELDS):
        return Contact(id=record.id, name=name, email=record.email, phone=record.phone)


def to_account(record: AccountRecord, contacts: Sequence[ContactRecord] = ()) -> Account:
    address = to_address(record)
    people = [c for c in (to_contact(r) for r in contacts) if c is not None]
    with _refused_as("Account", record.id, _ACCOUNT_FIELDS):
        return Account(
            id=record.id,
            name=record.name,
            billing_address=address,
            tax_id=record.tax_id or None,
            currency=record.currency_iso_code,
            website=record.website or None,
            industry=record.industry or None,
            contacts=people,
            updated_at=record.last_modified_date,
        )


def to_line(
    record: OpportunityLineItemRecord, *, currency: str, default_billing: BillingType
) -> OpportunityLine:
    """Product name is the service; `Role__c` the role, defaulting to the product name."""
    product = record.product
    service = (product.name if product else None) or (product.product_code if product else None)
    if not service:
        raise ValidationFailed(
            f"OpportunityLineItem {record.id} has no product name",
            system=CRM,
            field="OpportunityLineItem.Product2Id",
            code="CANONICAL_VALIDATION",
        )
    kind = billing_type(record.billing_type, sobject="OpportunityLineItem", record_id=record.id)
    with _refused_as("OpportunityLineItem", record.id, _LINE_FIELDS):
        return OpportunityLine(
            id=record.id,
            service=service,
            role=record.role or service,
            quantity=record.quantity,
            unit_rate=Money(amount=record.unit_price, currency=currency),
            billing_type=kind or default_billing,
            discount_percent=record.discount or Decimal(0),
            description=record.description or None,
        )


def to_opportunity(
    record: OpportunityRecord,
    lines: Sequence[OpportunityLineItemRecord],
    *,
    default_currency: str,
) -> Opportunity:
    """The deal in its own currency (`CurrencyIsoCode`; the org's corporate one when the org
    is single-currency). A line's billing type falls back to the deal's, then to T&M."""
    currency = (record.currency_iso_code or default_currency).upper()
    deal_billing = (
        billing_type(record.billing_type, sobject="Opportunity", record_id=record.id)
        or BillingType.TIME_AND_MATERIALS
    )
    canonical_lines = [
        to_line(line, currency=currency, default_billing=deal_billing) for line in lines
    ]
    if record.amount is not None:
        amount_value: Money | dict[str, Any] = {"amount": record.amount, "currency": currency}
    else:
        amount_value = sum_money((ln.amount for ln in canonical_lines), currency)
    if not record.account_id:
        raise ValidationFailed(
            f"Opportunity {record.id} has no account",
            system=CRM,
            field="Opportunity.AccountId",
            code="REQUIRED_FIELD_MISSING",
        )
    terms = payment_terms(record.payment_terms, record_id=record.id)
    with _refused_as("Opportunity", record.id, _OPPORTUNITY_FIELDS):
        return Opportunity.model_validate(
            {
                "id": record.id,
                "crm": CRM,
                "name": record.name,
                "account_id": record.account_id,
                "stage": record.stage_name,
                "close_date": record.close_date,
                "currency": currency,
                "lines": canonical_lines,
                "amount": amount_value,
                "payment_terms": terms,
                "po_number": record.po_number or None,
                "won": record.is_won,
                "probability": record.probability,
                "description": record.description or None,
                "updated_at": record.last_modified_date,
            }
        )


def write_back_fields(
    *,
    status: str,
    project_id: str | None,
    billing_customer_id: str | None,
    run_url: str | None,
    message: str | None,
) -> dict[str, Any]:
    """The PATCH body. Status and message are always written, so a stale failure message
    never outlives a later success; ids and the run link only when known, so a later
    status-only update cannot erase them."""
    if message is not None and len(message) > MESSAGE_MAX_CHARS:
        message = message[: MESSAGE_MAX_CHARS - 1] + "…"
    fields = WriteBack(
        status=status,
        project_id=project_id,
        billing_customer_id=billing_customer_id,
        run_url=run_url,
        message=message,
    )
    body = fields.model_dump(by_alias=True, exclude_none=True)
    body["Q2C_Message__c"] = message
    return body
