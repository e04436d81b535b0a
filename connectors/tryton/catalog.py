"""The reference data q2c looks up in Tryton: legal entities, products, terms, employees.

Loaded once per connector and kept: these change rarely, and a stale entry only costs a
failed lookup that `refresh()` cures. A legal entity is a Tryton company whose party
carries the identifier `q2c-legal-entity:<code>` (the dev-stack bootstrap puts it there;
a production Tryton needs it on each company q2c invoices from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from connectors.errors import PermanentError, ValidationFailed
from connectors.tryton.client import SYSTEM, TrytonClient
from connectors.tryton.mapping import DEFAULT_PRODUCT, LEGAL_ENTITY_PREFIX


@dataclass
class Company:
    """One legal entity of the firm, as a Tryton company."""

    code: str
    company_id: int
    party_id: int
    name: str
    country: str | None
    currency: str
    employees: dict[str, int]
    #: Loaded on first use: list prices of the service products in this company.
    product_prices: dict[str, Decimal | None] | None = None
    receivable_account_id: int | None = None
    revenue_account_id: int | None = None
    payment_method_id: int | None = None
    #: Customer taxes of this company by rate (a fraction, as Tryton and q2c keep it).
    taxes: dict[Decimal, int] = field(default_factory=dict)

    def employee_id(self, name: str) -> int:
        try:
            return self.employees[name]
        except KeyError:
            raise ValidationFailed(
                f"no employee named {name!r} in {self.code} ({self.name})",
                system=SYSTEM,
                field="employee",
            ) from None


@dataclass
class Catalog:
    #: Legal entity code -> company, in company id order.
    companies: dict[str, Company]
    currency_ids: dict[str, int]
    product_ids: dict[str, int]
    _payment_terms: dict[int, int] = field(default_factory=dict)
    _countries: dict[str, int] = field(default_factory=dict)
    _done_status: int | None = None
    _revenue_journal: int | None = None

    @classmethod
    async def load(cls, client: TrytonClient) -> Catalog:
        if client.user_id is None:
            await client.login()
        identifiers = await client.search_read(
            "party.identifier",
            [("code", "like", f"{LEGAL_ENTITY_PREFIX}%")],
            ["party", "code"],
        )
        codes = {int(i["party"]): str(i["code"])[len(LEGAL_ENTITY_PREFIX) :] for i in identifiers}
        rows = await client.search_read(
            "company.company",
            [("party", "in", list(codes))],
            ["party", "party.name", "currency.code"],
            order=[("id", "ASC")],
        )
        if not rows:
            raise PermanentError(
                "no Tryton company is a q2c legal entity (no party identifier "
                f"{LEGAL_ENTITY_PREFIX}<code>): bootstrap the database first",
                system=SYSTEM,
                code="no_legal_entity",
            )
        if len(rows) > 1 and client.context.get("company_filter") != "all":
            # Tryton 8.2 hides other companies' records from a user whose filter is
            # "Current" whatever company a call names: every other entity's call would fail.
            raise PermanentError(
                f"the Tryton user {client.login_name!r} must see all companies: set its "
                "Company Filter preference to All",
                system=SYSTEM,
                code="company_filter",
            )
        addresses = await client.search_read(
            "party.address",
            [("party", "in", [int(r["party"]) for r in rows]), ("country", "!=", None)],
            ["party", "country.code"],
            order=[("sequence", "ASC"), ("id", "ASC")],
        )
        countries: dict[int, str] = {}
        for a in addresses:
            countries.setdefault(int(a["party"]), str(a["country."]["code"]))
        employees = await client.search_read(
            "company.employee",
            [("company", "in", [int(r["id"]) for r in rows])],
            ["company", "party.name"],
            order=[("id", "ASC")],
        )
        staff: dict[int, dict[str, int]] = {int(r["id"]): {} for r in rows}
        for e in employees:
            staff[int(e["company"])][str(e["party."]["name"])] = int(e["id"])
        currencies = await client.search_read("currency.currency", [], ["code"])
        products = await client.search_read(
            "product.product",
            [("type", "=", "service"), ("salable", "=", True)],
            ["template.name"],
        )
        taxes = await client.search_read(
            "account.tax",
            [
                ("company", "in", list(staff)),
                ("type", "=", "percentage"),
                ("parent", "=", None),
                ["OR", ("group", "=", None), ("group.kind", "in", ["sale", "both"])],
            ],
            ["company", "rate", "group"],
            order=[("id", "ASC")],
        )
        by_rate: dict[int, dict[Decimal, int]] = {cid: {} for cid in staff}
        # A tax of a customer tax group wins over one in no group at the same rate.
        for t in sorted(taxes, key=lambda t: t["group"] is None):
            by_rate[int(t["company"])].setdefault(Decimal(t["rate"]), int(t["id"]))
        companies = {}
        for r in rows:
            party = int(r["party"])
            companies[codes[party]] = Company(
                code=codes[party],
                company_id=int(r["id"]),
                party_id=party,
                name=str(r["party."]["name"]),
                country=countries.get(party),
                currency=str(r["currency."]["code"]),
                employees=staff[int(r["id"])],
                taxes=by_rate[int(r["id"])],
            )
        return cls(
            companies=companies,
            currency_ids={str(c["code"]): int(c["id"]) for c in currencies},
            product_ids={str(p["template."]["name"]): int(p["id"]) for p in products},
        )

    def company(self, code: str, *, field: str = "legal_entity") -> Company:
        try:
            return self.companies[code]
        except KeyError:
            raise ValidationFailed(
                f"no Tryton company for legal entity {code!r} "
                f"(known: {', '.join(self.companies) or 'none'})",
                system=SYSTEM,
                field=field,
            ) from None

    def company_by_id(self, company_id: int) -> Company:
        for company in self.companies.values():
            if company.company_id == company_id:
                return company
        raise ValidationFailed(
            f"Tryton company {company_id} is not one of q2c's legal entities",
            system=SYSTEM,
            field="company",
        )

    def tax_id(self, company_code: str, rate: Decimal) -> int:
        """The company's customer tax at `rate` (0.20 for 20 %)."""
        company = self.company(company_code)
        try:
            return company.taxes[rate]
        except KeyError:
            known = ", ".join(f"{r:%}" for r in sorted(company.taxes)) or "none"
            raise ValidationFailed(
                f"{company.code} ({company.name}) has no customer tax at {rate:%} (has: {known})",
                system=SYSTEM,
                field="tax_rate",
            ) from None

    async def revenue_account(self, client: TrytonClient, company: Company) -> int:
        """Where the company books service revenue: the default service product's account."""
        if company.revenue_account_id is None:
            product = self.product_ids.get(DEFAULT_PRODUCT)
            in_company = client.for_company(company.company_id)
            # Company-dependent: the accounting category's revenue account in this company.
            rows = (
                await in_company.read(
                    "product.product", [product], ["account_category.account_revenue"]
                )
                if product is not None
                else []
            )
            category = rows[0].get("account_category.") if rows else None
            if not category or not category["account_revenue"]:
                raise ValidationFailed(
                    f"{company.code} ({company.name}) has no revenue account for "
                    f"{DEFAULT_PRODUCT!r}",
                    system=SYSTEM,
                    field="account_revenue",
                )
            company.revenue_account_id = int(category["account_revenue"])
        return company.revenue_account_id

    async def revenue_journal(self, client: TrytonClient) -> int:
        """The journal customer invoices are posted in (Tryton's client picks the same)."""
        if self._revenue_journal is None:
            found = await client.search(
                "account.journal",
                [("type", "=", "revenue")],
                order=[("matching_sequence", "ASC"), ("id", "ASC")],
                limit=1,
            )
            if not found:
                raise ValidationFailed(
                    "Tryton has no revenue journal", system=SYSTEM, field="journal"
                )
            self._revenue_journal = found[0]
        return self._revenue_journal

    async def payment_method(self, client: TrytonClient, company: Company) -> int:
        """How the company records customer payments: its first active payment method."""
        if company.payment_method_id is None:
            found = await client.search(
                "account.invoice.payment.method",
                [("company", "=", company.company_id)],
                order=[("id", "ASC")],
                limit=1,
            )
            if not found:
                raise ValidationFailed(
                    f"{company.code} ({company.name}) has no invoice payment method",
                    system=SYSTEM,
                    field="payment_method",
                )
            company.payment_method_id = found[0]
        return company.payment_method_id

    async def product_prices(
        self, client: TrytonClient, company: Company
    ) -> dict[str, Decimal | None]:
        """List prices are company-dependent in Tryton: each company has its own (or none)."""
        if company.product_prices is None:
            rows = await client.for_company(company.company_id).search_read(
                "product.product",
                [("id", "in", list(self.product_ids.values()))],
                ["template.name", "list_price_used"],
            )
            company.product_prices = {
                str(p["template."]["name"]): p["list_price_used"] for p in rows
            }
        return company.product_prices

    async def receivable_account(self, client: TrytonClient, company: Company) -> int:
        """The company's default receivable account (set with its chart of accounts)."""
        if company.receivable_account_id is None:
            (config,) = await client.for_company(company.company_id).read(
                "account.configuration", [1], ["default_account_receivable"]
            )
            if not config["default_account_receivable"]:
                raise ValidationFailed(
                    f"{company.code} ({company.name}) has no default receivable account",
                    system=SYSTEM,
                    field="account_receivable",
                )
            company.receivable_account_id = int(config["default_account_receivable"])
        return company.receivable_account_id

    async def done_status(self, client: TrytonClient) -> int:
        """The work status "Done" (Tryton 8.2 has statuses, not states, on project works)."""
        if self._done_status is None:
            self._done_status = int(
                await client.model("ir.model.data", "get_id", "project", "work_done_status")
            )
        return self._done_status

    async def payment_term(self, client: TrytonClient, net_days: int) -> int:
        """The payment term "Net N"; created when missing, so any CRM term can be honoured."""
        if net_days in self._payment_terms:
            return self._payment_terms[net_days]
        name = "Upon Receipt" if net_days == 0 else f"Net {net_days}"
        found = await client.search(
            "account.invoice.payment_term", [("name", "in", [name, f"{name} days"])], limit=1
        )
        if found:
            term = found[0]
        else:
            term = await client.create_one(
                "account.invoice.payment_term",
                {
                    "name": name,
                    "lines": [
                        [
                            "create",
                            [
                                {
                                    "type": "remainder",
                                    "relativedeltas": [["create", [{"days": net_days}]]],
                                }
                            ],
                        ]
                    ],
                },
            )
        self._payment_terms[net_days] = term
        return term

    async def country(self, client: TrytonClient, code: str) -> int:
        """The country by ISO code; a database without the country list gets the one it needs."""
        if code in self._countries:
            return self._countries[code]
        found = await client.search("country.country", [("code", "=", code)], limit=1)
        country = (
            found[0]
            if found
            else await client.create_one("country.country", {"code": code, "name": code})
        )
        self._countries[code] = country
        return country
