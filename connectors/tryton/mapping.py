"""Canonical <-> Tryton: pure functions, no I/O.

Where q2c keeps its keys in Tryton, and why there:
- Customer external reference: a party identifier without a type whose code is
  `q2c-ref:<external ref>`. Party `code` is the firm's own customer number (from a
  sequence, read-only once saved), identifiers are Tryton's place for "other
  identifiers", writable and searchable (`identifiers.code`).
- Project idempotency key: a `q2c-key: <key>` line in the project's `comment`
  (`project.work` has no reference field); the task's role goes in its comment too.
- Timesheet line key: `[q2c:<hash of the batch key>.<hash of batch key and entry id>]` at
  the end of the line's `description` (its `uuid` field is read-only over RPC). The batch
  part lets one search find every line a batch booked, however large the batch.
- Invoice idempotency key: a `q2c-key: <key>` line in the invoice's `comment`; the billing
  system's invoice number in its `reference`.
- Payment idempotency key: `[q2c-key: <key>]` after the payment reference in the
  description of the payment's move (the move's origin is the invoice).
- Legal entity of a company: an identifier `q2c-legal-entity:<code>` on the company's
  party (companies have no code of their own; their party's identifiers are searchable).
- A customer's legal entities: the companies in which its party has a receivable account
  (`party.party.account`, Tryton's company-dependent party accounts).
- Project budget and opportunity: `q2c-budget: 120000.00 GBP` and `q2c-opportunity: <id>`
  lines in the project's `comment`. `project.work` has no money field that means a budget:
  `list_price` is the hourly price, `effort_duration` planned time, `revenue` computed.
- Contract value: `q2c-contract-value: 120000.00 GBP` in the project's comment, the ERP's
  record of what was sold (canonical `Project.budget` is the contract value today).
- A task's billing type: `q2c-billing: fixed_fee` in the task's comment, next to its role.
- Expense key: `[q2c:<hash of key>]` at the end of the disbursement's description, as on
  timesheet lines.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import ValidationError

from canonical import (
    Address,
    BillingType,
    Contact,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LegalEntity,
    Money,
    PaymentTerms,
    Project,
    TimeEntry,
)
from connectors.errors import ValidationFailed
from connectors.tryton.wire import InvoiceLineRecord, InvoiceRecord, TimesheetLineRecord

REF_PREFIX = "q2c-ref:"
KEY_LABEL = "q2c-key:"
ROLE_LABEL = "q2c-role:"
PROJECT_LABEL = "q2c-project:"
BUDGET_LABEL = "q2c-budget:"
OPPORTUNITY_LABEL = "q2c-opportunity:"
INVOICE_LABEL = "q2c-invoice:"
CONTRACT_VALUE_LABEL = "q2c-contract-value:"
BILLING_LABEL = "q2c-billing:"
#: On a project: what one change of its terms (by key) found before it, as JSON.
TERMS_LABEL = "q2c-terms:"
#: On a credit note or re-bill q2c made to correct an invoice: the corrected invoice's id.
CORRECTS_LABEL = "q2c-corrects:"
LEGAL_ENTITY_PREFIX = "q2c-legal-entity:"
_LINE_TAG = re.compile(r"\s*\[q2c:([0-9a-f.]+)\]\s*$")
_PAYMENT_TAG = re.compile(r"\[q2c-key: (.+)\]$")

DEFAULT_PRODUCT = "Consulting"
#: The service product of invoice lines whose revenue is deferred: account_invoice_defer
#: defers only lines with a service product (the bootstrap makes it, not salable).
FEE_PRODUCT = "Fixed Fee"
#: Roles as CRMs and rate cards name them -> the service product that bills them.
ROLE_PRODUCTS: dict[str, str] = {
    "consultant": "Consulting",
    "senior consultant": "Consulting",
    "consulting": "Consulting",
    "project manager": "Project Management",
    "project management": "Project Management",
    "pm": "Project Management",
    "engagement manager": "Project Management",
    "architect": "Solution Architecture",
    "solution architect": "Solution Architecture",
    "solutions architect": "Solution Architecture",
    "solution architecture": "Solution Architecture",
    "developer": "Development",
    "engineer": "Development",
    "software engineer": "Development",
    "development": "Development",
    "trainer": "Training",
    "training": "Training",
}

#: Which Tryton identifier type validates a tax id, by the customer's country.
EU_COUNTRIES = frozenset(
    {"AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU"}
    | {"IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"}
)
TAX_ID_TYPES: dict[str, str] = {
    "GB": "gb_vat",
    "US": "us_ein",
    "CA": "ca_bn",
    "AU": "au_abn",
    "CH": "ch_vat",
    "NO": "no_mva",
}

#: Tryton invoice states -> canonical lifecycle.
INVOICE_STATUS: dict[str, InvoiceStatus] = {
    "draft": InvoiceStatus.DRAFT,
    "validated": InvoiceStatus.DRAFT,
    "posted": InvoiceStatus.OPEN,
    "paid": InvoiceStatus.PAID,
    "cancelled": InvoiceStatus.VOID,
}

#: Tryton stores quantities as floats; hours are booked to the minute at most.
QUANTITY_PLACES = Decimal("0.0001")
#: Tryton keeps unit prices to 4 decimals (its default `price_decimal`).
PRICE_PLACES = Decimal("0.0001")


def product_for_role(role: str | None, known: set[str]) -> str:
    """The service product for `role`; an unknown role bills as the default product."""
    if role:
        wanted = role.strip().casefold()
        for name in known:
            if name.casefold() == wanted:
                return name
        mapped = ROLE_PRODUCTS.get(wanted)
        if mapped and mapped in known:
            return mapped
    return DEFAULT_PRODUCT


def tax_identifier_type(country: str) -> str | None:
    """The identifier type Tryton validates the tax id with; None stores it unchecked."""
    if country in EU_COUNTRIES:
        return "eu_vat"
    return TAX_ID_TYPES.get(country)


def tax_id_from_identifier(identifier: dict[str, Any] | None) -> str | None:
    """A party's tax id the way invoices and CRMs write it.

    VAT numbers compact with their country prefix (`GB980780684`; Tryton keeps UK ones
    formatted and without it, `980 7806 84`); other tax ids as Tryton formats them
    (`04-2103594`).
    """
    if not identifier or not identifier.get("code"):
        return None
    kind = str(identifier.get("type") or "")
    if not kind.endswith("_vat"):
        return str(identifier["code"])
    compact = str(identifier.get("code_compact") or identifier["code"]).replace(" ", "")
    if kind != "eu_vat" and not compact[:2].isalpha():
        compact = kind.removesuffix("_vat").upper() + compact
    return compact


def same_code(stored: str | None, given: str | None) -> bool:
    """Tryton stores identifiers formatted ("980 7806 84"); compare them compacted."""

    def compact(code: str | None) -> str:
        text = re.sub(r"[^0-9A-Za-z]", "", code or "").upper()
        return text[2:] if len(text) > 2 and text[:2].isalpha() else text

    return compact(stored) == compact(given)


def external_ref_code(external_ref: str) -> str:
    return f"{REF_PREFIX}{external_ref}"


def external_ref_from_code(code: str | None) -> str | None:
    if code and code.startswith(REF_PREFIX):
        return code[len(REF_PREFIX) :]
    return None


def address_key(values: dict[str, Any]) -> tuple[str, str, str, int | None]:
    """Addresses are matched on content: q2c never edits one an invoice may point to."""
    return (
        _norm(values.get("street")),
        _norm(values.get("city")),
        _norm(values.get("postal_code")),
        values.get("country"),
    )


def address_values(address: Address, country_id: int | None) -> dict[str, Any]:
    street = address.street if not address.street2 else f"{address.street}\n{address.street2}"
    return {
        "street": street,
        "city": address.city,
        "postal_code": address.postal_code or "",
        "country": country_id,
    }


def email_values(contact: Contact) -> dict[str, Any]:
    """A contact's email; billing contacts are the ones Tryton sends invoices to."""
    return {
        "type": "email",
        "value": contact.email,
        "name": contact.name,
        "invoice": (contact.role or "").casefold() == "billing",
    }


def _norm(value: Any) -> str:
    return " ".join(str(value or "").split()).casefold()


# -- keys in comments and descriptions ---------------------------------------------------------


def with_label(comment: str | None, label: str, value: str) -> str:
    """`comment` with a `label value` line set (replacing an earlier one)."""
    lines = [ln for ln in (comment or "").splitlines() if not ln.startswith(label)]
    lines.append(f"{label} {value}")
    return "\n".join(lines)


def without_label(comment: str | None, label: str) -> str:
    """`comment` without its `label value` line."""
    return "\n".join(ln for ln in (comment or "").splitlines() if not ln.startswith(label))


def terms_label(idempotency_key: str) -> str:
    """The label of the record of one change of a project's terms (`=` ends the key, so one
    key that is a prefix of another never reads the other's record)."""
    return f"{TERMS_LABEL} {idempotency_key} ="


def added_task_number(project_number: str, idempotency_key: str, position: int) -> str:
    """Tasks a change of terms adds are numbered from its key: a retry finds them, and
    Tryton's unique number refuses a concurrent second create."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    return f"{project_number}/{digest}.{position}"


def label_value(comment: str | None, label: str) -> str | None:
    for line in (comment or "").splitlines():
        if line.startswith(label):
            return line[len(label) :].strip()
    return None


def project_number(idempotency_key: str) -> str:
    """The number of the project q2c creates under `idempotency_key` (unique in Tryton)."""
    return f"{KEY_LABEL}{idempotency_key}"


def task_number(project_number: str, position: int) -> str:
    """Tasks are numbered after their project, so creating them takes no sequence either."""
    return f"{project_number}/{position}"


def project_comment(project: Project, idempotency_key: str) -> str:
    """The project's comment: its key, the q2c project id, its budget, contract value and
    opportunity."""
    comment = with_label(None, KEY_LABEL, idempotency_key)
    comment = with_label(comment, PROJECT_LABEL, project.id)
    comment = with_label(comment, BUDGET_LABEL, format_money(project.budget))
    comment = with_label(comment, CONTRACT_VALUE_LABEL, format_money(project.budget))
    if project.opportunity_id:
        comment = with_label(comment, OPPORTUNITY_LABEL, project.opportunity_id)
    return comment


def format_money(money: Money) -> str:
    """`120000.00 GBP`: to the minor unit when that loses nothing, else as given."""
    rounded = money.rounded()
    return str(rounded if rounded.amount == money.amount else money)


def parse_money(text: str) -> Money:
    amount, currency = text.split()
    return Money.of(amount, currency)


def task_comment(role: str, billing_type: BillingType) -> str:
    """A task's comment: the role it bills and how its line is billed."""
    return with_label(with_label(None, ROLE_LABEL, role), BILLING_LABEL, billing_type.value)


def task_billing_type(comment: str | None) -> BillingType:
    """A task's billing type; tasks made before q2c recorded one are time and materials."""
    value = label_value(comment, BILLING_LABEL)
    try:
        return BillingType(value) if value else BillingType.TIME_AND_MATERIALS
    except ValueError:
        raise ValidationFailed(
            f"unknown billing type {value!r} in a task's comment",
            system="tryton",
            field="billing_type",
        ) from None


def expense_key(idempotency_key: str) -> str:
    """The tag a disbursement booked under `idempotency_key` carries (see `tag_description`)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def like_pattern(text: str) -> str:
    """A LIKE pattern containing `text`; callers re-check matches exactly (`_` is a wildcard)."""
    return f"%{text.replace('%', '_')}%"


def batch_key(idempotency_key: str) -> str:
    """What every line of one booking batch carries: one LIKE finds them all."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]


def line_key(idempotency_key: str, entry_id: str) -> str:
    """The per-line key: the same entry under the same batch key always gives the same tag."""
    entry = hashlib.sha256(f"{idempotency_key}\x00{entry_id}".encode()).hexdigest()[:16]
    return f"{batch_key(idempotency_key)}.{entry}"


def batch_pattern(idempotency_key: str) -> str:
    """A LIKE pattern matching the descriptions of every line booked under the batch key."""
    return f"%[q2c:{batch_key(idempotency_key)}.%"


def tag_description(description: str | None, key: str) -> str:
    text = (description or "").strip()
    return f"{text} [q2c:{key}]" if text else f"[q2c:{key}]"


def split_description(description: str | None) -> tuple[str | None, str | None]:
    """(free text, line key) from a tagged description."""
    if not description:
        return None, None
    match = _LINE_TAG.search(description)
    if not match:
        return description, None
    text = description[: match.start()].strip()
    return text or None, match.group(1)


def payment_description(reference: str, idempotency_key: str) -> str:
    return f"{reference} [q2c-key: {idempotency_key}]"


def payment_key(description: str | None) -> str | None:
    match = _PAYMENT_TAG.search(description or "")
    return match.group(1) if match else None


# -- to Tryton ---------------------------------------------------------------------------------


def invoice_line_values(line: InvoiceLine) -> tuple[float, Decimal, str]:
    """Quantity, unit price and description for Tryton, whose product is q2c's net exactly.

    Tryton multiplies quantity (a float) by unit price (4 decimals) and rounds half to
    even; q2c rounds each line half up. Where that could differ (a product ending in a
    half minor unit, a quantity a float cannot hold, a price finer than Tryton keeps), the
    line goes as one unit at q2c's net, its quantity and price named in the description.
    """
    quantity = line.quantity
    price = line.unit_price.amount
    net = line.net.amount
    as_float = float(quantity)
    fits = (
        Decimal(str(as_float)) == quantity
        and price == price.quantize(PRICE_PLACES)
        and (Decimal(str(as_float)) * price).quantize(net, rounding=ROUND_HALF_EVEN) == net
    )
    if fits:
        return as_float, price, line.description
    return 1.0, net, f"{line.description} ({quantity.normalize():f} x {price:f})"


def expected_taxes(lines: list[InvoiceLine], tax_ids: list[int]) -> dict[tuple[int, bool], Decimal]:
    """q2c's tax per (Tryton tax, base not negative): how Tryton groups its invoice taxes."""
    expected: dict[tuple[int, bool], Decimal] = {}
    for line, tax_id in zip(lines, tax_ids, strict=True):
        key = (tax_id, line.net.amount >= 0)
        expected[key] = expected.get(key, Decimal(0)) + line.tax.amount
    return expected


# -- to canonical ------------------------------------------------------------------------------


def hours(duration: timedelta) -> Decimal:
    return (Decimal(str(duration.total_seconds())) / Decimal(3600)).quantize(QUANTITY_PLACES)


def to_time_entry(
    line: TimesheetLineRecord,
    *,
    project_id: int,
    task_id: int | None,
    employee: str,
    role: str,
) -> TimeEntry:
    # Tryton has no approval step: a booked line is invoiceable, so it counts as approved.
    text, _ = split_description(line.description)
    return TimeEntry(
        id=str(line.id),
        project_id=str(project_id),
        task_id=str(task_id) if task_id is not None else None,
        employee=employee,
        role=role,
        work_date=line.date,
        hours=hours(line.duration),
        billable=True,
        approved=True,
        billed=line.invoice_line is not None,
        description=text,
    )


def to_customer(
    *,
    party_id: int,
    name: str,
    legal_entity: LegalEntity,
    currency: str,
    addresses: list[dict[str, Any]],
    tax_id: str | None,
    net_days: int,
    mechanisms: list[dict[str, Any]],
    external_ref: str | None,
) -> Customer:
    """The party as a customer. Its id is the external reference q2c gave it, if any.

    The tax id is returned as Tryton stores it (formatted, e.g. `980 7806 84` for a UK
    VAT number): compare tax ids with `same_code`.
    """
    ordered = sorted(
        (a for a in addresses if a.get("country.")),
        key=lambda a: (not a["invoice"], a["sequence"] is None, a["sequence"] or 0, a["id"]),
    )
    if not ordered:
        raise ValidationFailed(
            f"party {party_id} has no address with a country", system="tryton", field="addresses"
        )
    contacts = []
    for m in mechanisms:
        if m["type"] != "email":
            continue
        try:
            contacts.append(
                Contact(
                    name=m["name"] or name,
                    email=m["value"],
                    role="billing" if m.get("invoice") else None,
                    id=str(m["id"]),
                )
            )
        except ValidationError:
            continue  # Tryton does not validate emails; a malformed one is no contact
    return Customer(
        id=external_ref or f"tryton-party:{party_id}",
        name=name,
        legal_entity=legal_entity,
        addresses=[_to_address(a) for a in ordered],
        tax_id=tax_id or None,
        currency=currency,
        payment_terms=PaymentTerms(net_days=net_days),
        contacts=contacts,
        external_ids={"tryton": str(party_id)},
    )


def _to_address(row: dict[str, Any]) -> Address:
    street, _, street2 = str(row["street"] or "").partition("\n")
    return Address(
        street=street.strip() or "-",
        street2=street2.strip() or None,
        city=str(row["city"] or "").strip() or "-",
        postal_code=row["postal_code"] or None,
        country=row["country."]["code"],
    )


def to_invoice(
    record: InvoiceRecord,
    lines: list[InvoiceLineRecord],
    *,
    currency: str,
    legal_entity_code: str | None = None,
    customer_id: str,
    tax_rates: dict[int, Decimal],
    due_date: date | None,
) -> Invoice:
    status = INVOICE_STATUS.get(record.state, InvoiceStatus.DRAFT)
    issued_at = (
        datetime.combine(record.invoice_date, time(0), tzinfo=UTC)
        if record.invoice_date and status is not InvoiceStatus.DRAFT
        else None
    )
    canonical_lines = [
        InvoiceLine(
            id=str(line.id),
            description=line.description or "(no description)",
            quantity=Decimal(str(line.quantity or 0)).quantize(QUANTITY_PLACES).normalize(),
            unit_price=Money(amount=line.unit_price or Decimal(0), currency=currency),
            tax_rate=sum((tax_rates.get(t, Decimal(0)) for t in line.taxes), Decimal(0)),
        )
        for line in lines
        if line.type == "line"
    ]
    return Invoice(
        id=str(record.id),
        customer_id=customer_id,
        currency=currency,
        lines=canonical_lines,
        status=status,
        number=record.number,
        issued_at=issued_at,
        due_date=due_date if issued_at else None,
        memo=record.description,
        legal_entity_code=legal_entity_code,
        external_ids={"tryton": str(record.id)},
    )
