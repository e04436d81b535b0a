"""The reference data a q2c Tryton is set up with: currencies, countries, companies'
addresses, people, service products, payment terms, the accounts and journals q2c books
to, and the settings files (legal entities, tax rates) read at bootstrap.

A change here changes what the bootstrap makes, so it is part of `inputs_digest`.
"""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path

import settings
from canonical import LegalEntity
from connectors.tryton import mapping
from settings import Settings
from settings.rules import load_tax_rates as load_tax_rates_by_country

#: The firm's legal entities, one Tryton company each (the dev stack may pass another file).
DEFAULT_LEGAL_ENTITIES = Path(settings.__file__).parent / "demo" / "legal_entities.toml"
#: Currencies a deal may be priced in: name, symbol, demo rate against USD (units per USD).
CURRENCIES: dict[str, tuple[str, str, Decimal]] = {
    "USD": ("US Dollar", "$", Decimal(1)),
    "EUR": ("Euro", "€", Decimal("0.92")),
    "GBP": ("Pound Sterling", "£", Decimal("0.79")),
    "CAD": ("Canadian Dollar", "$", Decimal("1.37")),
    "AUD": ("Australian Dollar", "$", Decimal("1.52")),
}
#: Where a company of each country has its office (street, city, postal code).
COMPANY_ADDRESSES: dict[str, tuple[str, str, str]] = {
    "US": ("1 Market Street", "San Francisco", "94105"),
    "CA": ("100 King Street West", "Toronto", "M5X 1A9"),
    "GB": ("10 Finsbury Square", "London", "EC2A 1AF"),
    "DE": ("Friedrichstraße 68", "Berlin", "10117"),
    "AU": ("1 Macquarie Place", "Sydney", "2000"),
}
#: The demo's people, two per legal entity.
EMPLOYEES: dict[str, tuple[str, ...]] = {
    "NW-US": ("Ada Lovelace", "Grace Hopper"),
    "NW-CA": ("Beatrice Worsley", "Calvin Gotlieb"),
    "NW-UK": ("Alan Turing", "Karen Sparck Jones"),
    "NW-DE": ("Edsger Dijkstra", "Konrad Zuse"),
    "NW-AU": ("Trevor Pearcey", "Maston Beard"),
}
#: Service products, billed by the hour; list prices in USD, converted for other companies.
SERVICE_PRODUCTS: dict[str, Decimal] = {
    "Consulting": Decimal("150"),
    "Project Management": Decimal("140"),
    "Solution Architecture": Decimal("190"),
    "Development": Decimal("160"),
    "Training": Decimal("120"),
}
DEFAULT_PRODUCT = "Consulting"
#: Expense products, one per expense category (a project disbursement's category); not
#: salable, so they never price a task. Which categories a customer pays for is the
#: contract's expense policy: Entertainment is one a contract would not bill.
EXPENSE_PRODUCTS = ("Travel", "Lodging", "Meals", "Entertainment")
EXPENSE_CATEGORY = "Project Expenses"
#: The service product of fixed fees whose revenue is deferred (account_invoice_defer
#: defers only lines with a service product); not salable.
FEE_PRODUCT = mapping.FEE_PRODUCT
#: Employees' hourly cost in USD (timesheet_cost), converted for other companies like
#: list prices; from `COST_PRICE_FROM`, so time booked on any recent date has a cost.
EMPLOYEE_COSTS: dict[str, Decimal] = {
    "Ada Lovelace": Decimal("85"),
    "Grace Hopper": Decimal("80"),
}
DEFAULT_EMPLOYEE_COST = Decimal("70")
COST_PRICE_FROM = date(2020, 1, 1)
#: Where the revenue of deferred invoice lines waits (universal chart: Deferred Income).
DEFERRED_REVENUE_CODE = "2.2.2"
#: The payment journal of expense reimbursements (a disbursement, once approved, is a
#: payment to the employee who paid it).
REIMBURSEMENT_JOURNAL = "Expense reimbursements"
PAYMENT_TERMS = {"Net 30": 30, "Net 45": 45, "Net 60": 60}
#: The country list is not loaded by `trytond-admin`; addresses need the countries q2c sells to.
COUNTRIES = {
    "US": "United States",
    "CA": "Canada",
    "GB": "United Kingdom",
    "IE": "Ireland",
    "DE": "Germany",
    "FR": "France",
    "NL": "Netherlands",
    "ES": "Spain",
    "IT": "Italy",
    "CH": "Switzerland",
    "SE": "Sweden",
    "AU": "Australia",
}
PRODUCT_CATEGORY = "Professional Services"
REVENUE_CODE = "4.2.2"
EXPENSE_CODE = "5.1.3"
#: Where customer taxes are booked, and where customers' payments arrive (universal chart).
TAX_PAYABLE_CODE = "2.2.3"
CASH_CODE = "1.1.1"
#: Customer taxes are created in this group so the connector tells them from purchase taxes.
SALE_TAX_GROUP = ("Sales taxes", "SALE")
BANK_JOURNAL = ("Bank", "BANK")
PAYMENT_METHOD = "Bank transfer"
#: Tax on services by customer country; one Tryton tax per distinct rate in every company.
DEFAULT_TAX_RATES = Path(settings.__file__).parent / "demo" / "tax_rates.toml"


def load_legal_entities(path: Path = DEFAULT_LEGAL_ENTITIES) -> dict[str, LegalEntity]:
    """The firm's legal entities (`[entities.<code>]` of the file), in the file's order."""
    with path.open("rb") as f:
        document = tomllib.load(f)
    entities = {
        str(code): LegalEntity.model_validate({"code": code, **values})
        for code, values in document.get("entities", {}).items()
    }
    if not entities:
        raise ValueError(f"{path}: no [entities.<code>] table")
    return entities


def load_tax_rates(path: Path = DEFAULT_TAX_RATES) -> list[Decimal]:
    """The distinct tax rates (fractions) of the tax rates file, lowest first."""
    return sorted(set(load_tax_rates_by_country(Settings(tax_rates_file=path)).values()))


def tax_name(rate: Decimal) -> str:
    """`Tax 20%` for 0.20, `Tax 7.5%` for 0.075."""
    percent = (rate * 100).normalize()
    return f"Tax {percent:f}%"


def employees_of(code: str) -> tuple[str, ...]:
    """The demo people of a legal entity; an entity the demo does not know gets two."""
    return EMPLOYEES.get(code, (f"{code} Consultant", f"{code} Project Manager"))


def employee_cost(name: str, currency: str) -> Decimal:
    """An employee's hourly cost in `currency`, at the demo rate."""
    return list_price(EMPLOYEE_COSTS.get(name, DEFAULT_EMPLOYEE_COST), currency)


def list_price(usd_price: Decimal, currency: str) -> Decimal:
    """A service's list price in `currency`: the USD price at the demo rate, whole units."""
    rate = CURRENCIES.get(currency, ("", "", Decimal(1)))[2]
    return (usd_price * rate).quantize(Decimal(1))
