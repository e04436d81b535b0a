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
    ChangeAction,
    ChangeOrder,
    ChangeOrderStatus,
    Contact,
    ExpensePolicy,
    FeeRemainder,
    LineChange,
    Milestone,
    MilestoneChange,
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
    ChangeOrderLineRecord,
    ChangeOrderMilestoneRecord,
    ChangeOrderRecord,
    ChangeOrderWriteBack,
    ContactRecord,
    MilestoneRecord,
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
_FEE_SCHEDULES = {
    "on completion": FeeRemainder.ON_COMPLETION,
    "completion": FeeRemainder.ON_COMPLETION,
    "monthly instalments": FeeRemainder.INSTALMENTS,
    "monthly installments": FeeRemainder.INSTALMENTS,
    "instalments": FeeRemainder.INSTALMENTS,
    "installments": FeeRemainder.INSTALMENTS,
}
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
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
    "not_to_exceed": "Not_To_Exceed__c",
    "upfront_percent": "Upfront_Percent__c",
    "end_date": "Contract_End_Date__c",
}
_EXPENSE_POLICY_FIELDS = {
    "billable_categories": "Billable_Expense_Categories__c",
    "markup_percent": "Expense_Markup_Percent__c",
}
_MILESTONE_FIELDS = {
    "id": "Id",
    "name": "Name",
    "amount": "Amount__c",
    "due_date": "Planned_Date__c",
    "line_id": "Line_Item_Id__c",
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
    "fee_remainder": "Fee_Schedule__c",
    "instalments": "Instalments__c",
    "not_to_exceed": "Not_To_Exceed__c",
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


def fee_schedule(value: str | None, *, record_id: str) -> FeeRemainder | None:
    """How a fixed fee's part not invoiced up front is invoiced; blank: on completion."""
    if value is None or not value.strip():
        return None
    key = " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    found = _FEE_SCHEDULES.get(key)
    if found is None:
        raise ValidationFailed(
            f"OpportunityLineItem {record_id}: unknown fee schedule {value!r}; expected "
            "On Completion or Monthly Instalments",
            system=CRM,
            field="OpportunityLineItem.Fee_Schedule__c",
            code="UNKNOWN_FEE_SCHEDULE",
        )
    return found


def whole_number(value: Decimal | None, *, field: str, record_id: str) -> int | None:
    """A Salesforce number field (it arrives as `3.0`) that must hold a whole number."""
    if value is None:
        return None
    if not value.is_finite() or value != value.to_integral_value():
        sobject, _, name = field.partition(".")
        raise ValidationFailed(
            f"{sobject} {record_id}: {name} {value} is not a whole number",
            system=CRM,
            field=field,
            code="NOT_A_WHOLE_NUMBER",
        )
    return int(value)


def multi_select(value: str | None) -> list[str]:
    """A multi-select picklist's values: Salesforce sends them as one string, `"A;B"`."""
    chosen: list[str] = []
    for part in (value or "").split(";"):
        item = part.strip()
        if item and item not in chosen:
            chosen.append(item)
    return chosen


def record_key(record_id: str) -> str | None:
    """A key that is the same for a record's 15- and 18-character ids, in any letter case
    for the 18-character one (that is what the three extra characters are for); None when
    the text is not a record id at all."""
    text = record_id.strip()
    if not _ID_RE.match(text):
        return None
    if len(text) == 18:
        return text.lower()
    suffix = ""
    for chunk in range(3):
        bits = 0
        for pos, char in enumerate(text[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << pos
        suffix += _CHECKSUM_ALPHABET[bits]
    return (text + suffix).lower()


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


def to_line(record: OpportunityLineItemRecord, *, currency: str) -> OpportunityLine:
    """Product name is the service; `Role__c` the role, defaulting to the product name.

    A blank `Billing_Type__c` stays None: the service catalogue decides how that product is
    billed, so the CRM need not repeat it on every line.
    """
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
    remainder = fee_schedule(record.fee_schedule, record_id=record.id)
    count = whole_number(
        record.instalments, field="OpportunityLineItem.Instalments__c", record_id=record.id
    )
    with _refused_as("OpportunityLineItem", record.id, _LINE_FIELDS):
        return OpportunityLine.model_validate(
            {
                "id": record.id,
                "service": service,
                "role": record.role or service,
                "quantity": record.quantity,
                "unit_rate": Money(amount=record.unit_price, currency=currency),
                "billing_type": kind,
                "discount_percent": record.discount or Decimal(0),
                "description": record.description or None,
                "fee_remainder": remainder,
                "instalments": count,
                "not_to_exceed": _money(record.not_to_exceed, currency),
            }
        )


def to_milestone(
    record: MilestoneRecord, *, currency: str, lines: Sequence[OpportunityLine]
) -> Milestone:
    """A `Milestone__c` of the deal. Its `Line_Item_Id__c` must name one of the deal's lines
    (15 or 18 characters); the milestone then carries that line's id as the line has it.

    A lookup child keeps its own currency in a multi-currency org, so a milestone in another
    currency than its deal is refused rather than converted. Whether the line is a milestone
    line and whether its milestones add up to it is for the contract's planning to judge.
    """
    where = f"Milestone__c {record.id}"
    wanted = record_key(record.line_item_id or "")
    line = next((ln for ln in lines if record_key(ln.id) == wanted), None)
    if line is None:
        reason = (
            "is empty; a milestone belongs to one of the deal's line items"
            if not (record.line_item_id or "").strip()
            else f"{record.line_item_id!r} is not a line item of opportunity "
            f"{record.opportunity_id}"
        )
        raise ValidationFailed(
            f"{where}: Line_Item_Id__c {reason}",
            system=CRM,
            field="Milestone__c.Line_Item_Id__c",
            code="UNKNOWN_LINE_ITEM",
        )
    own = (record.currency_iso_code or currency).upper()
    if own != currency:
        raise ValidationFailed(
            f"{where}: amount in {own}, but the opportunity is in {currency}",
            system=CRM,
            field="Milestone__c.CurrencyIsoCode",
            code="CURRENCY_MISMATCH",
        )
    with _refused_as("Milestone__c", record.id, _MILESTONE_FIELDS):
        return Milestone.model_validate(
            {
                "id": record.id,
                "name": record.name or "",
                "amount": _money(record.amount, currency),
                "due_date": record.planned_date,
                "line_id": line.id,
            }
        )


def to_expense_policy(record: OpportunityRecord) -> ExpensePolicy | None:
    """None when the deal says nothing about expenses: the firm's default policy applies."""
    categories = multi_select(record.billable_expense_categories)
    if not categories and record.expense_markup_percent is None:
        return None
    with _refused_as("Opportunity", record.id, _EXPENSE_POLICY_FIELDS):
        return ExpensePolicy.model_validate(
            {
                "billable_categories": categories,
                "markup_percent": record.expense_markup_percent or Decimal(0),
            }
        )


def _money(amount: Decimal | None, currency: str) -> dict[str, Any] | None:
    """Left for the canonical model to check (sign, currency), so its refusal names the field."""
    return None if amount is None else {"amount": amount, "currency": currency}


def to_opportunity(
    record: OpportunityRecord,
    lines: Sequence[OpportunityLineItemRecord],
    milestones: Sequence[MilestoneRecord] = (),
    *,
    default_currency: str,
) -> Opportunity:
    """The deal in its own currency (`CurrencyIsoCode`; the org's corporate one when the org
    is single-currency), with its contract terms: the cap, the upfront share of fixed fees,
    the contract's end, the expense policy and the `Milestone__c` records."""
    currency = (record.currency_iso_code or default_currency).upper()
    canonical_lines = [to_line(line, currency=currency) for line in lines]
    canonical_milestones = [
        to_milestone(m, currency=currency, lines=canonical_lines) for m in milestones
    ]
    expense_policy = to_expense_policy(record)
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
                "milestones": canonical_milestones,
                "not_to_exceed": _money(record.not_to_exceed, currency),
                "upfront_percent": record.upfront_percent or Decimal(0),
                "end_date": record.contract_end_date,
                "expense_policy": expense_policy,
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
    message = _truncated(message)
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


# ---------------------------------------------------------------- change orders

_CHANGE_ORDER_STATUSES = {
    "draft": ChangeOrderStatus.DRAFT,
    "approved": ChangeOrderStatus.APPROVED,
    "applied": ChangeOrderStatus.APPLIED,
    "rejected": ChangeOrderStatus.REJECTED,
    "failed": ChangeOrderStatus.FAILED,
}
#: The outcomes q2c writes back, as `Status__c` labels.
WRITE_BACK_STATUSES = {
    ChangeOrderStatus.APPLIED: "Applied",
    ChangeOrderStatus.REJECTED: "Rejected",
    ChangeOrderStatus.FAILED: "Failed",
}
_CHANGE_ACTIONS = {
    "add": ChangeAction.ADD,
    "remove": ChangeAction.REMOVE,
    "change": ChangeAction.CHANGE,
}
_CHANGE_ORDER_FIELDS = {
    "id": "Id",
    "opportunity_id": "Opportunity__c",
    "name": "Name",
    "status": "Status__c",
    "currency": "CurrencyIsoCode",
    "effective_date": "Effective_Date__c",
    "amount_delta": "Amount_Delta__c",
    "budget_delta": "Budget_Delta__c",
    "new_end_date": "New_End_Date__c",
    "retroactive": "Retroactive__c",
    "approved_at": "Approved_At__c",
    "updated_at": "LastModifiedDate",
    "description": "Description__c",
}
_LINE_CHANGE_FIELDS = {
    "action": "Action__c",
    "line_id": "Line_Item_Id__c",
    "task": "Product__c",
    "role": "Role__c",
    "billing_type": "Billing_Type__c",
    "rate": "Rate__c",
    "amount": "Amount__c",
    "hours": "Hours__c",
}
_MILESTONE_CHANGE_FIELDS = {
    "action": "Action__c",
    "milestone_id": "Milestone__c",
    "line_id": "Line_Item_Id__c",
    "name": "Name",
    "amount": "Amount__c",
    "planned_date": "Planned_Date__c",
}


def canonical_id(record_id: str) -> str | None:
    """The record's 18-character id exactly as Salesforce returns it, from its 15-character
    id or from its 18-character one in any letter case (the last three characters say which
    of the first fifteen are capitals); None when the text is not a record id at all."""
    text = record_id.strip()
    if not _ID_RE.match(text):
        return None
    if len(text) == 15:
        return text + record_key(text)[15:].upper()  # type: ignore[index]
    suffix = text[15:].upper()
    if any(c not in _CHECKSUM_ALPHABET for c in suffix):
        return None
    chars = list(text[:15])
    for chunk, flag in enumerate(suffix):
        bits = _CHECKSUM_ALPHABET.index(flag)
        for pos in range(5):
            i = chunk * 5 + pos
            chars[i] = chars[i].upper() if bits & (1 << pos) else chars[i].lower()
    return "".join(chars) + suffix


def change_order_status(value: str | None, *, record_id: str) -> ChangeOrderStatus:
    found = _CHANGE_ORDER_STATUSES.get((value or "").strip().lower())
    if found is None:
        raise ValidationFailed(
            f"Change_Order__c {record_id}: unknown status {value!r}; expected one of "
            "Draft, Approved, Applied, Rejected, Failed",
            system=CRM,
            field="Change_Order__c.Status__c",
            code="UNKNOWN_STATUS",
        )
    return found


def change_action(value: str | None, *, sobject: str, record_id: str) -> ChangeAction:
    found = _CHANGE_ACTIONS.get((value or "").strip().lower())
    if found is None:
        raise ValidationFailed(
            f"{sobject} {record_id}: unknown action {value!r}; expected Add, Remove or Change",
            system=CRM,
            field=f"{sobject}.Action__c",
            code="UNKNOWN_ACTION",
        )
    return found


def _required(value: object, *, sobject: str, record_id: str, name: str, why: str) -> None:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValidationFailed(
            f"{sobject} {record_id}: {name} is empty; {why}",
            system=CRM,
            field=f"{sobject}.{name}",
            code="REQUIRED_FIELD_MISSING",
        )


def _id_field(value: str | None, *, sobject: str, record_id: str, name: str) -> str | None:
    """An id kept as text (15 or 18 characters), as the record it names has it; None if blank."""
    if value is None or not value.strip():
        return None
    found = canonical_id(value)
    if found is None:
        raise ValidationFailed(
            f"{sobject} {record_id}: {name} {value!r} is not a Salesforce record id "
            "(15 or 18 letters and digits)",
            system=CRM,
            field=f"{sobject}.{name}",
            code="MALFORMED_ID",
        )
    return found


def _same_currency(own: str | None, currency: str, *, sobject: str, record_id: str) -> None:
    """A detail carries its change order's currency; anything else is refused, not converted."""
    if own is not None and own.upper() != currency:
        raise ValidationFailed(
            f"{sobject} {record_id}: amounts in {own.upper()}, but the change order is in "
            f"{currency}",
            system=CRM,
            field=f"{sobject}.CurrencyIsoCode",
            code="CURRENCY_MISMATCH",
        )


def to_line_change(record: ChangeOrderLineRecord, *, currency: str) -> LineChange:
    """A `Change_Order_Line__c`. Removing or re-pricing names the contract line in
    `Line_Item_Id__c` (15 or 18 characters; it comes out as the 18 the line has). An added
    line is its own record: it takes this record's id, leaves `Line_Item_Id__c` empty, and
    names its product or task, its billing type, and a rate or an amount."""
    sobject = "Change_Order_Line__c"
    action = change_action(record.action, sobject=sobject, record_id=record.id)
    line_id = _id_field(
        record.line_item_id, sobject=sobject, record_id=record.id, name="Line_Item_Id__c"
    )
    if action is ChangeAction.ADD:
        if line_id is not None:
            raise ValidationFailed(
                f"{sobject} {record.id}: an added line names no existing line, but "
                f"Line_Item_Id__c is {record.line_item_id!r}; use Action Change to re-price it",
                system=CRM,
                field=f"{sobject}.Line_Item_Id__c",
                code="FIELD_INTEGRITY_EXCEPTION",
            )
        line_id = canonical_id(record.id) or record.id
        why = "an added line needs it"
        _required(record.product, sobject=sobject, record_id=record.id, name="Product__c", why=why)
        _required(
            record.billing_type,
            sobject=sobject,
            record_id=record.id,
            name="Billing_Type__c",
            why=why,
        )
        if record.rate is None and record.amount is None:
            _required(
                None,
                sobject=sobject,
                record_id=record.id,
                name="Rate__c",
                why=why + " (or Amount__c)",
            )
    else:
        _required(
            line_id,
            sobject=sobject,
            record_id=record.id,
            name="Line_Item_Id__c",
            why=f"say which line to {action.value}",
        )
    _same_currency(record.currency_iso_code, currency, sobject=sobject, record_id=record.id)
    kind = billing_type(record.billing_type, sobject=sobject, record_id=record.id)
    with _refused_as(sobject, record.id, _LINE_CHANGE_FIELDS):
        return LineChange.model_validate(
            {
                "action": action,
                "line_id": line_id,
                "task": (record.product or "").strip() or None,
                "role": (record.role or "").strip() or None,
                "billing_type": kind,
                "rate": _money(record.rate, currency),
                "amount": _money(record.amount, currency),
                "hours": record.hours,
            }
        )


def to_milestone_change(record: ChangeOrderMilestoneRecord, *, currency: str) -> MilestoneChange:
    """A `Change_Order_Milestone__c`. Changing or removing names the milestone in
    `Milestone__c` (an id as text); an added one takes this record's id and needs its
    milestone line (`Line_Item_Id__c`) and amount. `Name` is the milestone's name: a change
    that keeps the name repeats it."""
    sobject = "Change_Order_Milestone__c"
    action = change_action(record.action, sobject=sobject, record_id=record.id)
    milestone_id = _id_field(
        record.milestone_id, sobject=sobject, record_id=record.id, name="Milestone__c"
    )
    line_id = _id_field(
        record.line_item_id, sobject=sobject, record_id=record.id, name="Line_Item_Id__c"
    )
    if action is ChangeAction.ADD:
        if milestone_id is not None:
            raise ValidationFailed(
                f"{sobject} {record.id}: an added milestone names no existing one, but "
                f"Milestone__c is {record.milestone_id!r}; use Action Change to change it",
                system=CRM,
                field=f"{sobject}.Milestone__c",
                code="FIELD_INTEGRITY_EXCEPTION",
            )
        milestone_id = canonical_id(record.id) or record.id
        why = "an added milestone needs it"
        _required(line_id, sobject=sobject, record_id=record.id, name="Line_Item_Id__c", why=why)
        _required(record.amount, sobject=sobject, record_id=record.id, name="Amount__c", why=why)
    else:
        _required(
            milestone_id,
            sobject=sobject,
            record_id=record.id,
            name="Milestone__c",
            why=f"say which milestone to {action.value}",
        )
    _same_currency(record.currency_iso_code, currency, sobject=sobject, record_id=record.id)
    with _refused_as(sobject, record.id, _MILESTONE_CHANGE_FIELDS):
        return MilestoneChange.model_validate(
            {
                "action": action,
                "milestone_id": milestone_id,
                "line_id": line_id,
                "name": (record.name or "").strip() or None,
                "amount": _money(record.amount, currency),
                "planned_date": record.planned_date,
            }
        )


def to_change_order(
    record: ChangeOrderRecord,
    lines: Sequence[ChangeOrderLineRecord] = (),
    milestones: Sequence[ChangeOrderMilestoneRecord] = (),
    *,
    default_currency: str,
) -> ChangeOrder:
    """A `Change_Order__c` with its lines and milestones, in its own currency (a lookup
    child of its deal keeps its own; whether it matches the contract's is the change order's
    validation, not the mapping's). A blank `Amount_Delta__c` is refused: "the contract
    value does not change" is stated as 0."""
    sobject = "Change_Order__c"
    currency = (record.currency_iso_code or default_currency).upper()
    status = change_order_status(record.status, record_id=record.id)
    _required(
        record.opportunity_id,
        sobject=sobject,
        record_id=record.id,
        name="Opportunity__c",
        why="a change order amends one opportunity",
    )
    _required(
        record.effective_date,
        sobject=sobject,
        record_id=record.id,
        name="Effective_Date__c",
        why="a change order takes effect on a day",
    )
    _required(
        record.amount_delta,
        sobject=sobject,
        record_id=record.id,
        name="Amount_Delta__c",
        why="enter 0 when the contract value does not change",
    )
    with _refused_as(sobject, record.id, _CHANGE_ORDER_FIELDS):
        Money(amount=Decimal(0), currency=currency)  # its own code first, then its details
    line_changes = [to_line_change(line, currency=currency) for line in lines]
    milestone_changes = [to_milestone_change(m, currency=currency) for m in milestones]
    with _refused_as(sobject, record.id, _CHANGE_ORDER_FIELDS):
        return ChangeOrder.model_validate(
            {
                "id": record.id,
                "crm": CRM,
                "opportunity_id": record.opportunity_id,
                "name": record.name or "",
                "status": status,
                "currency": currency,
                "effective_date": record.effective_date,
                "amount_delta": _money(record.amount_delta, currency),
                "lines": line_changes,
                "milestones": milestone_changes,
                "budget_delta": _money(record.budget_delta, currency),
                "new_end_date": record.new_end_date,
                "retroactive": bool(record.retroactive),
                "approved_at": record.approved_at,
                "updated_at": record.last_modified_date,
                "description": (record.description or "").strip() or None,
            }
        )


def _truncated(message: str | None) -> str | None:
    if message is not None and len(message) > MESSAGE_MAX_CHARS:
        return message[: MESSAGE_MAX_CHARS - 1] + "…"
    return message


def change_order_write_back_fields(
    *, status: ChangeOrderStatus, message: str | None, run_url: str | None
) -> dict[str, Any]:
    """The PATCH body: the outcome and its message always (a stale failure message never
    outlives a later success), the run link only when known."""
    label = WRITE_BACK_STATUSES.get(status)
    if label is None:
        # A caller's mistake, refused for good (not retried): approving is the CRM's.
        raise ValidationFailed(
            f"q2c writes back Applied, Rejected or Failed, not {status.value!r}",
            system=CRM,
            field="Change_Order__c.Status__c",
            code="NOT_A_WRITE_BACK_STATUS",
        )
    fields = ChangeOrderWriteBack.model_validate(
        {"Status__c": label, "Q2C_Message__c": _truncated(message), "Q2C_Run_Url__c": run_url}
    )
    body = fields.model_dump(by_alias=True, exclude_none=True)
    body["Q2C_Message__c"] = fields.message
    return body
