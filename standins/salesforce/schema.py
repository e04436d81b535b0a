"""The slice of a Salesforce org q2c talks to: objects, fields, and how the org validates them.

Field API names, types, key prefixes and error codes follow Salesforce; the custom fields
and objects (`__c`) are the ones a q2c installation adds to the org. Values are kept as JSON:
money, quantities and percentages as numbers (20 is 20 %), dates as `YYYY-MM-DD`, datetimes
as `YYYY-MM-DDThh:mm:ss.000+0000`, multi-select picklists as one string of values separated
by `;`, as the REST API renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

#: ISO 4217 codes enabled in the stand-in org (a multi-currency org; USD is the corporate one).
ORG_CURRENCIES = ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "JPY", "SEK", "NOK", "DKK")
CORPORATE_CURRENCY = "USD"

#: Standard opportunity stages with their default probability, in sales-process order.
STAGES: dict[str, int] = {
    "Prospecting": 10,
    "Qualification": 10,
    "Needs Analysis": 20,
    "Value Proposition": 50,
    "Id. Decision Makers": 60,
    "Perception Analysis": 70,
    "Proposal/Price Quote": 75,
    "Negotiation/Review": 90,
    "Closed Won": 100,
    "Closed Lost": 0,
}
CLOSED_WON = "Closed Won"
CLOSED_STAGES = frozenset({"Closed Won", "Closed Lost"})

SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")

_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


class SalesforceError(Exception):
    """One entry of Salesforce's error list, with the HTTP status it travels with."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # id string textarea url email picklist multipicklist date datetime double
    #          currency percent boolean reference
    label: str = ""
    length: int = 255
    required: bool = False
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: str | None = None
    relationship: str | None = None
    #: A lookup's name as seen from the parent (`Opportunity.Milestones__r`), in describe.
    child_relationship: str | None = None
    precision: int = 18
    scale: int = 2
    #: What a create that leaves the field out stores (a picklist's default, a checkbox's
    #: unchecked state); shown as the picklist's `defaultValue` in describe.
    default: Any = None

    @property
    def writable(self) -> bool:
        return self.createable or self.updateable


@dataclass(frozen=True)
class SObject:
    name: str
    key_prefix: str
    label: str
    fields: tuple[Field, ...]
    by_lower: dict[str, Field] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.by_lower.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> Field | None:
        return self.by_lower.get(name.lower())

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    def relationship(self, name: str) -> Field | None:
        lowered = name.lower()
        for f in self.fields:
            if f.relationship and f.relationship.lower() == lowered:
                return f
        return None


def _system_fields() -> tuple[Field, ...]:
    return (
        Field("Id", "id", "Record ID", length=18, createable=False, updateable=False),
        Field("IsDeleted", "boolean", "Deleted", createable=False, updateable=False),
        Field("CreatedDate", "datetime", "Created Date", createable=False, updateable=False),
        Field(
            "LastModifiedDate",
            "datetime",
            "Last Modified Date",
            createable=False,
            updateable=False,
        ),
        Field("SystemModstamp", "datetime", "System Modstamp", createable=False, updateable=False),
    )


def _ext_id() -> Field:
    return Field("Q2C_External_Id__c", "string", "q2c External ID", length=255, external_id=True)


def _currency_iso() -> Field:
    return Field(
        "CurrencyIsoCode",
        "picklist",
        "Currency ISO Code",
        length=3,
        picklist=ORG_CURRENCIES,
        restricted=True,
    )


def _read_only_currency() -> Field:
    """A detail record's currency: its master's, as Salesforce keeps it."""
    return Field(
        "CurrencyIsoCode",
        "picklist",
        "Currency ISO Code",
        length=3,
        picklist=ORG_CURRENCIES,
        createable=False,
        updateable=False,
    )


BILLING_TYPES = ("Time and Materials", "Fixed Fee", "Milestone")
PAYMENT_TERMS = ("Due on Receipt", "Net 15", "Net 30", "Net 45", "Net 60", "Net 90")
FEE_SCHEDULES = ("On Completion", "Monthly Instalments")
#: The values an admin set up; the picklist is not restricted, so others are kept as sent.
EXPENSE_CATEGORIES = ("Travel", "Lodging", "Meals", "Mileage", "Software", "Equipment", "Other")
#: `Change_Order__c.Status__c`; moving a change order to Approved notifies q2c.
CHANGE_ORDER_STATUSES = ("Draft", "Approved", "Applied", "Rejected", "Failed")
CHANGE_ORDER_APPROVED = "Approved"
CHANGE_ACTIONS = ("Add", "Remove", "Change")
#: Salesforce's limit on a multi-select picklist's stored text ("A;B;C").
MULTIPICKLIST_LENGTH = 4099

SOBJECTS: dict[str, SObject] = {
    o.name: o
    for o in (
        SObject(
            "Account",
            "001",
            "Account",
            (
                *_system_fields(),
                Field("Name", "string", "Account Name", required=True),
                Field(
                    "Type",
                    "picklist",
                    "Account Type",
                    length=40,
                    picklist=(
                        "Prospect",
                        "Customer - Direct",
                        "Customer - Channel",
                        "Partner",
                        "Other",
                    ),
                ),
                Field("Industry", "picklist", "Industry", length=40),
                Field("Phone", "string", "Account Phone", length=40),
                Field("Description", "textarea", "Account Description", length=32000),
                Field("BillingStreet", "textarea", "Billing Street"),
                Field("BillingCity", "string", "Billing City", length=40),
                Field("BillingPostalCode", "string", "Billing Zip/Postal Code", length=20),
                Field("BillingState", "string", "Billing State/Province", length=80),
                Field("BillingCountry", "string", "Billing Country", length=80),
                Field("BillingCountryCode", "picklist", "Billing Country Code", length=10),
                Field("Website", "url", "Website"),
                _currency_iso(),
                Field("Tax_Id__c", "string", "Tax ID", length=40),
                _ext_id(),
            ),
        ),
        SObject(
            "Contact",
            "003",
            "Contact",
            (
                *_system_fields(),
                Field(
                    "Name", "string", "Full Name", length=121, createable=False, updateable=False
                ),
                Field("FirstName", "string", "First Name", length=40),
                Field("LastName", "string", "Last Name", length=80, required=True),
                Field("Email", "email", "Email", length=80),
                Field("Phone", "string", "Business Phone", length=40),
                Field("Title", "string", "Title", length=128),
                Field(
                    "AccountId",
                    "reference",
                    "Account ID",
                    length=18,
                    reference_to="Account",
                    relationship="Account",
                    child_relationship="Contacts",
                ),
                _currency_iso(),
                _ext_id(),
            ),
        ),
        SObject(
            "Product2",
            "01t",
            "Product",
            (
                *_system_fields(),
                Field("Name", "string", "Product Name", required=True),
                Field("ProductCode", "string", "Product Code"),
                Field("Family", "picklist", "Product Family", length=40),
                Field("Description", "textarea", "Product Description", length=4000),
                Field("IsActive", "boolean", "Active"),
                _currency_iso(),
                _ext_id(),
            ),
        ),
        SObject(
            "Opportunity",
            "006",
            "Opportunity",
            (
                *_system_fields(),
                Field("Name", "string", "Name", length=120, required=True),
                Field(
                    "StageName",
                    "picklist",
                    "Stage",
                    length=40,
                    required=True,
                    picklist=tuple(STAGES),
                    restricted=True,
                ),
                Field("CloseDate", "date", "Close Date", required=True),
                Field(
                    "AccountId",
                    "reference",
                    "Account ID",
                    length=18,
                    reference_to="Account",
                    relationship="Account",
                    child_relationship="Opportunities",
                ),
                Field("Amount", "currency", "Amount"),
                _currency_iso(),
                Field("Probability", "percent", "Probability (%)", precision=3, scale=0),
                Field("Description", "textarea", "Description", length=32000),
                Field(
                    "Type",
                    "picklist",
                    "Opportunity Type",
                    length=40,
                    picklist=(
                        "New Customer",
                        "Existing Customer - Upgrade",
                        "Existing Customer - Replacement",
                        "Existing Customer - Downgrade",
                    ),
                ),
                Field("NextStep", "string", "Next Step"),
                Field("IsClosed", "boolean", "Closed", createable=False, updateable=False),
                Field("IsWon", "boolean", "Won", createable=False, updateable=False),
                Field(
                    "HasOpportunityLineItem",
                    "boolean",
                    "Has Line Item",
                    createable=False,
                    updateable=False,
                ),
                Field(
                    "Payment_Terms__c",
                    "picklist",
                    "Payment Terms",
                    length=40,
                    picklist=PAYMENT_TERMS,
                ),
                Field("PO_Number__c", "string", "PO Number", length=80),
                Field("Discount_Percent__c", "percent", "Discount (%)", precision=5, scale=2),
                Field("Not_To_Exceed__c", "currency", "Not To Exceed"),
                Field("Upfront_Percent__c", "percent", "Upfront (%)", precision=5, scale=2),
                Field("Contract_End_Date__c", "date", "Contract End Date"),
                Field(
                    "Expense_Markup_Percent__c",
                    "percent",
                    "Expense Markup (%)",
                    precision=5,
                    scale=2,
                ),
                Field(
                    "Billable_Expense_Categories__c",
                    "multipicklist",
                    "Billable Expense Categories",
                    length=MULTIPICKLIST_LENGTH,
                    picklist=EXPENSE_CATEGORIES,
                ),
                Field("Contract_Rate_Card__c", "textarea", "Contract Rate Card", length=32768),
                Field("Q2C_Status__c", "string", "q2c Status", length=40),
                Field("Q2C_Project_Id__c", "string", "q2c Project ID", length=80),
                Field("Q2C_Billing_Customer_Id__c", "string", "q2c Billing Customer ID", length=80),
                Field("Q2C_Run_Url__c", "url", "q2c Run URL"),
                Field("Q2C_Message__c", "textarea", "q2c Message", length=32768),
                Field("Q2C_Invoice_Number__c", "string", "q2c Last Invoice Number", length=80),
                Field("Q2C_Invoice_Amount__c", "currency", "q2c Last Invoice Amount"),
                Field("Q2C_Invoice_Status__c", "string", "q2c Last Invoice Status", length=40),
                _ext_id(),
            ),
        ),
        SObject(
            "OpportunityLineItem",
            "00k",
            "Opportunity Product",
            (
                *_system_fields(),
                Field(
                    "Name",
                    "string",
                    "Opportunity Product Name",
                    length=376,
                    createable=False,
                    updateable=False,
                ),
                Field(
                    "OpportunityId",
                    "reference",
                    "Opportunity ID",
                    length=18,
                    required=True,
                    updateable=False,
                    reference_to="Opportunity",
                    relationship="Opportunity",
                    child_relationship="OpportunityLineItems",
                ),
                Field(
                    "Product2Id",
                    "reference",
                    "Product ID",
                    length=18,
                    required=True,
                    updateable=False,
                    reference_to="Product2",
                    relationship="Product2",
                ),
                Field("ProductCode", "string", "Product Code", createable=False, updateable=False),
                Field("Quantity", "double", "Quantity", required=True, precision=12, scale=2),
                Field("UnitPrice", "currency", "Sales Price", required=True),
                Field("TotalPrice", "currency", "Total Price", createable=False, updateable=False),
                Field("Discount", "percent", "Discount", precision=5, scale=2),
                Field("Description", "string", "Line Description"),
                Field("ServiceDate", "date", "Date"),
                Field(
                    "CurrencyIsoCode",
                    "picklist",
                    "Currency ISO Code",
                    length=3,
                    picklist=ORG_CURRENCIES,
                    createable=False,
                    updateable=False,
                ),
                Field("Role__c", "string", "Role", length=80),
                Field(
                    "Billing_Type__c",
                    "picklist",
                    "Billing Type",
                    length=40,
                    picklist=BILLING_TYPES,
                    restricted=True,
                ),
                Field(
                    "Fee_Schedule__c",
                    "picklist",
                    "Fee Schedule",
                    length=40,
                    picklist=FEE_SCHEDULES,
                    restricted=True,
                ),
                Field("Instalments__c", "double", "Instalments", precision=3, scale=0),
                Field("Not_To_Exceed__c", "currency", "Not To Exceed"),
                _ext_id(),
            ),
        ),
        SObject(
            # A custom object: a lookup (not master-detail) to Opportunity, so it keeps its own
            # currency and outlives a deleted deal with the lookup cleared. Salesforce cannot
            # look up an OpportunityLineItem, so the line's id is kept as text.
            "Milestone__c",
            "a05",
            "Milestone",
            (
                *_system_fields(),
                Field("Name", "string", "Milestone Name", length=80, required=True),
                Field(
                    "Opportunity__c",
                    "reference",
                    "Opportunity",
                    length=18,
                    reference_to="Opportunity",
                    relationship="Opportunity__r",
                    child_relationship="Milestones__r",
                ),
                Field("Line_Item_Id__c", "string", "Line Item ID", length=18),
                Field("Amount__c", "currency", "Amount"),
                Field("Planned_Date__c", "date", "Planned Date"),
                _currency_iso(),
                _ext_id(),
            ),
        ),
        SObject(
            # A change order signed with the customer: a lookup to its deal, like Milestone__c,
            # so it keeps its own currency. Moving Status__c to Approved notifies q2c (the
            # change-order webhook), which writes Applied, Rejected or Failed back with its
            # message and run link.
            "Change_Order__c",
            "a06",
            "Change Order",
            (
                *_system_fields(),
                Field("Name", "string", "Change Order Name", length=80, required=True),
                Field(
                    "Opportunity__c",
                    "reference",
                    "Opportunity",
                    length=18,
                    reference_to="Opportunity",
                    relationship="Opportunity__r",
                    child_relationship="Change_Orders__r",
                ),
                Field("Amount_Delta__c", "currency", "Amount Change"),
                Field("Effective_Date__c", "date", "Effective Date"),
                Field("Budget_Delta__c", "currency", "Budget Change"),
                Field("New_End_Date__c", "date", "New End Date"),
                Field("Retroactive__c", "boolean", "Retroactive", default=False),
                Field(
                    "Status__c",
                    "picklist",
                    "Status",
                    length=40,
                    picklist=CHANGE_ORDER_STATUSES,
                    restricted=True,
                    default="Draft",
                ),
                Field("Approved_At__c", "datetime", "Approved At"),
                Field("Q2C_Message__c", "textarea", "q2c Message", length=32768),
                Field("Q2C_Run_Url__c", "url", "q2c Run URL"),
                _currency_iso(),
                Field("Description__c", "textarea", "Description", length=32768),
                _ext_id(),
            ),
        ),
        SObject(
            # A line the change order adds, removes or re-prices: master-detail to the change
            # order, so it is deleted with it and carries its currency (read-only). The line it
            # removes or re-prices is named by id as text: an OpportunityLineItem cannot be
            # looked up, and a line added by an earlier change order is one of these records.
            "Change_Order_Line__c",
            "a07",
            "Change Order Line",
            (
                *_system_fields(),
                Field(
                    "Name",
                    "string",
                    "Change Order Line Number",
                    length=80,
                    createable=False,
                    updateable=False,
                ),
                Field(
                    "Change_Order__c",
                    "reference",
                    "Change Order",
                    length=18,
                    required=True,
                    updateable=False,
                    reference_to="Change_Order__c",
                    relationship="Change_Order__r",
                    child_relationship="Change_Order_Lines__r",
                ),
                Field(
                    "Action__c",
                    "picklist",
                    "Action",
                    length=40,
                    required=True,
                    picklist=CHANGE_ACTIONS,
                    restricted=True,
                ),
                Field("Line_Item_Id__c", "string", "Line Item ID", length=18),
                Field("Product__c", "string", "Product or Task", length=255),
                Field("Role__c", "string", "Role", length=80),
                Field(
                    "Billing_Type__c",
                    "picklist",
                    "Billing Type",
                    length=40,
                    picklist=BILLING_TYPES,
                    restricted=True,
                ),
                Field("Rate__c", "currency", "Rate"),
                Field("Amount__c", "currency", "Amount"),
                Field("Hours__c", "double", "Hours", precision=12, scale=2),
                _read_only_currency(),
                _ext_id(),
            ),
        ),
        SObject(
            # A milestone the change order adds, removes or changes; master-detail like the
            # lines. The milestone changed or removed is named by id as text (`Milestone__c`):
            # one added by an earlier change order is a Change_Order_Milestone__c, which a
            # lookup to Milestone__c could not hold.
            "Change_Order_Milestone__c",
            "a08",
            "Change Order Milestone",
            (
                *_system_fields(),
                Field("Name", "string", "Milestone Name", length=80, required=True),
                Field(
                    "Change_Order__c",
                    "reference",
                    "Change Order",
                    length=18,
                    required=True,
                    updateable=False,
                    reference_to="Change_Order__c",
                    relationship="Change_Order__r",
                    child_relationship="Change_Order_Milestones__r",
                ),
                Field(
                    "Action__c",
                    "picklist",
                    "Action",
                    length=40,
                    required=True,
                    picklist=CHANGE_ACTIONS,
                    restricted=True,
                ),
                Field("Milestone__c", "string", "Milestone ID", length=18),
                Field("Line_Item_Id__c", "string", "Line Item ID", length=18),
                Field("Amount__c", "currency", "Amount"),
                Field("Planned_Date__c", "date", "Planned Date"),
                _read_only_currency(),
                _ext_id(),
            ),
        ),
    )
}

PREFIX_TO_SOBJECT = {o.key_prefix: o.name for o in SOBJECTS.values()}


def sobject(name: str) -> SObject:
    """Salesforce matches object names case-insensitively in URLs."""
    for candidate in SOBJECTS.values():
        if candidate.name.lower() == name.lower():
            return candidate
    raise SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


# ---------------------------------------------------------------- ids


def id_checksum(id15: str) -> str:
    """The three-character suffix that makes a 15-character id case-insensitive."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for pos, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << pos
        suffix += _CHECKSUM_ALPHABET[bits]
    return suffix


def make_id(prefix: str, serial: int) -> str:
    """`<prefix><pod "5g"><serial in base 62, 10 chars>` plus checksum: 18 characters."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    digits = ""
    n = serial
    while n:
        n, rem = divmod(n, 62)
        digits = alphabet[rem] + digits
    id15 = f"{prefix}5g{digits.rjust(10, '0')}"
    return id15 + id_checksum(id15)


def normalize_id(value: str) -> str | None:
    """The 18-character form of a well-formed id, or None when it is not an id at all."""
    if not _ID_RE.match(value):
        return None
    if len(value) == 18:
        return value[:15] + id_checksum(value[:15])
    return value + id_checksum(value)


# ---------------------------------------------------------------- values


def format_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def coerce(obj: SObject, f: Field, value: Any) -> Any:
    """Check one incoming value against its field type; return the value to store."""
    if value is None:
        if f.required:
            raise SalesforceError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{f.name}]", [f.name]
            )
        return None
    kind = f.type
    if kind == "multipicklist":
        return _multipicklist(f, value)
    if kind in ("string", "textarea", "url", "email", "picklist"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _deserialize_error(f, value, "string")
        text = str(value)
        if len(text) > f.length:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{f.label or f.name}: data value too large: {text[:40]} (max length={f.length})",
                [f.name],
            )
        if kind == "email" and text and not _EMAIL_RE.match(text):
            raise SalesforceError(
                400, "INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name]
            )
        if kind == "picklist" and f.restricted and text not in f.picklist:
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f.label}: bad value for restricted picklist field: {text}",
                [f.name],
            )
        if f.name == "BillingCountryCode" and not re.fullmatch(r"[A-Z]{2}", text):
            raise SalesforceError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                f"A country/territory must be specified using an ISO code: {text}",
                [f.name],
            )
        if f.required and text == "":
            raise SalesforceError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{f.name}]", [f.name]
            )
        return text
    if kind in ("double", "currency", "percent"):
        if isinstance(value, bool):
            raise _deserialize_error(f, value, "double")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise _deserialize_error(f, value, "double") from None
        if not number.is_finite():
            raise _deserialize_error(f, value, "double")
        integer_digits = len(str(abs(number).to_integral_value()).lstrip("0"))
        if integer_digits > f.precision - f.scale:
            raise SalesforceError(
                400,
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{f.label}: value outside of valid range on numeric field: {value}",
                [f.name],
            )
        rounded = round(number, f.scale)
        return int(rounded) if f.scale == 0 else float(rounded)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _deserialize_error(f, value, "boolean")
        return value
    if kind == "date":
        if not isinstance(value, str) or not _DATE_RE.match(value):
            raise _deserialize_error(f, value, "date")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise _deserialize_error(f, value, "date") from None
        return value
    if kind == "datetime":
        moment = _datetime(value) if isinstance(value, str) else None
        if moment is None:
            raise _deserialize_error(f, value, "datetime")
        return format_datetime(moment)
    if kind == "reference":
        if not isinstance(value, str):
            raise _deserialize_error(f, value, "string")
        if value == "":
            return None
        normalized = normalize_id(value)
        if normalized is None:
            raise SalesforceError(
                400,
                "MALFORMED_ID",
                f"{f.label}: id value of incorrect type: {value}",
                [f.name],
            )
        return normalized
    raise SalesforceError(
        400,
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {f.name}.",
        [f.name],
    )


def _datetime(text: str) -> datetime | None:
    """`2026-12-01T10:00:00Z`, `...000+0000`, `...+01:00`; without an offset, UTC."""
    if not _DATETIME_RE.match(text):
        return None
    try:
        moment = datetime.fromisoformat(re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _multipicklist(f: Field, value: Any) -> str | None:
    """`"Travel;Lodging"`: Salesforce drops blanks and repeats, and stores the values in the
    order the picklist defines them (values it does not define go last, as sent)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise _deserialize_error(f, value, "string")
    chosen: list[str] = []
    for part in value.split(";"):
        item = part.strip()
        if item and item not in chosen:
            chosen.append(item)
    unknown = [v for v in chosen if v not in f.picklist]
    if f.restricted and unknown:
        raise SalesforceError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{f.label}: bad value for restricted picklist field: {unknown[0]}",
            [f.name],
        )
    ordered = [v for v in f.picklist if v in chosen] + unknown
    text = ";".join(ordered)
    if len(text) > f.length:
        raise SalesforceError(
            400,
            "STRING_TOO_LONG",
            f"{f.label}: data value too large: {text[:40]} (max length={f.length})",
            [f.name],
        )
    return text or None


def _deserialize_error(f: Field, value: Any, java_type: str) -> SalesforceError:
    shown = value if isinstance(value, str) else repr(value)
    return SalesforceError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {java_type} from VALUE_STRING value {shown} "
        f"or request may be missing a required field ({f.name})",
        [f.name],
    )
