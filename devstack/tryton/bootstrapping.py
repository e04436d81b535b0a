"""Set a Tryton database up for q2c: companies with their books, taxes, products, people.

Every step finds what exists before it creates anything, so a second run (a newer q2c,
other settings files) reuses and completes a database instead of duplicating it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from canonical import LegalEntity
from connectors.tryton.client import TrytonClient
from connectors.tryton.mapping import LEGAL_ENTITY_PREFIX
from devstack.tryton.reference import (
    BANK_JOURNAL,
    CASH_CODE,
    COMPANY_ADDRESSES,
    COST_PRICE_FROM,
    COUNTRIES,
    CURRENCIES,
    DEFAULT_LEGAL_ENTITIES,
    DEFAULT_TAX_RATES,
    DEFERRED_REVENUE_CODE,
    EXPENSE_CATEGORY,
    EXPENSE_CODE,
    EXPENSE_PRODUCTS,
    FEE_PRODUCT,
    PAYMENT_METHOD,
    PAYMENT_TERMS,
    PRODUCT_CATEGORY,
    REIMBURSEMENT_JOURNAL,
    REVENUE_CODE,
    SALE_TAX_GROUP,
    SERVICE_PRODUCTS,
    TAX_PAYABLE_CODE,
    employee_cost,
    employees_of,
    list_price,
    load_legal_entities,
    load_tax_rates,
    tax_name,
)
from devstack.tryton.result import BootstrapResult, CompanyResult
from devstack.tryton.snapshots import (
    inputs_digest,
    is_bootstrapped,
    mark_bootstrapped,
    read_bootstrap,
)


async def bootstrap(
    url: str,
    database: str,
    admin_password: str,
    *,
    login: str = "admin",
    today: date | None = None,
    legal_entities: Path = DEFAULT_LEGAL_ENTITIES,
    tax_rates: Path = DEFAULT_TAX_RATES,
) -> BootstrapResult:
    """Make a fresh database usable for q2c; a second run finds and reuses everything."""
    entities = load_legal_entities(legal_entities)
    rates = load_tax_rates(tax_rates)
    async with TrytonClient(url, database, login, admin_password) as client:
        await client.login()
        result = await _Bootstrap(
            client, today or datetime.now().astimezone().date(), entities, rates
        ).run()
    return replace(result, inputs_sha256=inputs_digest(legal_entities, tax_rates))


class _Bootstrap:
    def __init__(
        self,
        client: TrytonClient,
        today: date,
        entities: dict[str, LegalEntity],
        tax_rates: list[Decimal],
    ) -> None:
        self.c = client
        self.today = today
        self.entities = entities
        self.tax_rates = tax_rates

    async def run(self) -> BootstrapResult:
        currency_ids = await self.currencies()
        countries = await self.countries()
        company_ids = {
            code: await self.company(entity, currency_ids[entity.currency], countries)
            for code, entity in self.entities.items()
        }
        await self.user_companies([cid for cid, _ in company_ids.values()])
        move_type, invoice_type = await self.sequence_types()
        tax_group = await self.sale_tax_group()
        bank_journal = await self.bank_journal()
        companies: dict[str, CompanyResult] = {}
        for code, (company_id, party_id) in company_ids.items():
            accounts = await self.chart(company_id)
            await self.tax_rounding(company_id)
            years = [self.today.year, self.today.year + 1]
            currency = self.entities[code].currency
            employee_ids = {
                name: await self.employee(company_id, name) for name in employees_of(code)
            }
            costs = {name: employee_cost(name, currency) for name in employee_ids}
            for name, employee_id in employee_ids.items():
                await self.employee_cost_price(employee_id, costs[name])
            deferred = await self._account_by_code(company_id, DEFERRED_REVENUE_CODE)
            await self.deferred_revenue_account(company_id, deferred)
            companies[code] = CompanyResult(
                company_id=company_id,
                party_id=party_id,
                currency=self.entities[code].currency,
                employee_ids=employee_ids,
                revenue_account_id=accounts["revenue"],
                expense_account_id=accounts["expense"],
                receivable_account_id=accounts["receivable"],
                payable_account_id=accounts["payable"],
                tax_account_id=accounts["tax"],
                cash_account_id=accounts["cash"],
                payment_method_id=await self.payment_method(
                    company_id, bank_journal, accounts["cash"]
                ),
                fiscal_year_ids={
                    y: await self.fiscal_year(code, company_id, y, move_type, invoice_type)
                    for y in years
                },
                tax_ids={
                    str(rate): await self.tax(company_id, rate, tax_group, accounts["tax"])
                    for rate in self.tax_rates
                },
                deferred_revenue_account_id=deferred,
                reimbursement_journal_id=await self.reimbursement_journal(
                    company_id, currency_ids[currency]
                ),
                employee_costs={name: str(cost) for name, cost in costs.items()},
            )
        hour = int(await self.c.model("ir.model.data", "get_id", "product", "uom_hour"))
        category = await self.category(companies)
        product_ids = await self.products(category, hour, companies)
        unit = int(await self.c.model("ir.model.data", "get_id", "product", "uom_unit"))
        expense_category = await self.category(companies, EXPENSE_CATEGORY)
        expense_product_ids = {
            name: await self.plain_product(name, unit, expense_category)
            for name in EXPENSE_PRODUCTS
        }
        fee_product = await self.plain_product(FEE_PRODUCT, unit, category)
        payment_term_ids = {
            name: await self.payment_term(name, days) for name, days in PAYMENT_TERMS.items()
        }
        return BootstrapResult(
            companies=companies,
            currency_ids=currency_ids,
            product_ids=product_ids,
            payment_term_ids=payment_term_ids,
            hour_uom_id=hour,
            bank_journal_id=bank_journal,
            expense_product_ids=expense_product_ids,
            fee_product_id=fee_product,
        )

    async def currencies(self) -> dict[str, int]:
        wanted = dict.fromkeys([*CURRENCIES, *(e.currency for e in self.entities.values())])
        rows = await self.c.search_read(
            "currency.currency", [("code", "in", list(wanted))], ["code"]
        )
        ids = {str(r["code"]): int(r["id"]) for r in rows}
        missing = [code for code in wanted if code not in ids]
        if missing:
            values = []
            for code in missing:
                name, symbol, rate = CURRENCIES.get(code, (code, code, None))
                rates = [{"date": date(self.today.year, 1, 1), "rate": rate}] if rate else []
                values.append(
                    {
                        "name": name,
                        "code": code,
                        "symbol": symbol,
                        "rounding": Decimal("0.01"),
                        "digits": 2,
                        "rates": [["create", rates]],
                    }
                )
            created = await self.c.create("currency.currency", values)
            ids.update(zip(missing, created, strict=True))
        return {code: ids[code] for code in wanted}

    async def countries(self) -> dict[str, int]:
        wanted = {e.country: e.country for e in self.entities.values()} | COUNTRIES
        rows = await self.c.search_read("country.country", [], ["code"])
        ids = {str(r["code"]): int(r["id"]) for r in rows}
        missing = [code for code in wanted if code not in ids]
        if missing:
            created = await self.c.create(
                "country.country", [{"code": code, "name": wanted[code]} for code in missing]
            )
            ids.update(zip(missing, created, strict=True))
        return ids

    async def company(
        self, entity: LegalEntity, currency_id: int, countries: dict[str, int]
    ) -> tuple[int, int]:
        """The entity's company, found by the identifier on its party (else by name)."""
        identifier = f"{LEGAL_ENTITY_PREFIX}{entity.code}"
        fields = ["party", "currency"]
        found = await self.c.search_read(
            "company.company", [("party.identifiers.code", "=", identifier)], fields, limit=1
        )
        if not found:
            # A company made by hand under the entity's name is adopted, not duplicated.
            found = await self.c.search_read(
                "company.company", [("party.name", "=", entity.name)], fields, limit=1
            )
            if found:
                await self.c.write(
                    "party.party",
                    [int(found[0]["party"])],
                    {"identifiers": [["create", [{"type": None, "code": identifier}]]]},
                )
        if found:
            if found[0]["currency"] != currency_id:
                # A company's currency is fixed once it has books: a person must decide.
                raise RuntimeError(
                    f"Tryton company {found[0]['id']} of legal entity {entity.code} does not "
                    f"keep its books in {entity.currency}"
                )
            return int(found[0]["id"]), int(found[0]["party"])
        street, city, postal_code = COMPANY_ADDRESSES.get(entity.country, ("Head Office", "-", ""))
        party_id = await self.c.create_one(
            "party.party",
            {
                "name": entity.name,
                "addresses": [
                    [
                        "create",
                        [
                            {
                                "street": street,
                                "city": city,
                                "postal_code": postal_code,
                                "country": countries[entity.country],
                            }
                        ],
                    ]
                ],
                "identifiers": [["create", [{"type": None, "code": identifier}]]],
            },
        )
        company_id = await self.c.create_one(
            "company.company", {"party": party_id, "currency": currency_id}
        )
        return company_id, party_id

    async def user_companies(self, company_ids: list[int]) -> None:
        """Give the user every company, working in the first, seeing the records of all.

        Tryton 8.2 filters records by the companies of `res.user.get_companies()`, cached
        per user whatever the context says: with the filter on "Current" a call made for
        another company would not see that company's records.
        """
        assert self.c.user_id is not None
        (user,) = await self.c.read(
            "res.user", [self.c.user_id], ["companies", "company", "company_filter"]
        )
        values: dict[str, Any] = {}
        missing = [cid for cid in company_ids if cid not in user["companies"]]
        if missing:
            values["companies"] = [["add", missing]]
        if user["company"] not in company_ids:
            values["company"] = company_ids[0]
        if user["company_filter"] != "all":
            values["company_filter"] = "all"
        if values:
            await self.c.model("res.user", "write", [self.c.user_id], values)
            await self.c.refresh_context()

    async def sequence_types(self) -> tuple[int, int]:
        move_type = await self.c.model(
            "ir.model.data", "get_id", "account", "sequence_type_account_move"
        )
        invoice_type = await self.c.model(
            "ir.model.data", "get_id", "account_invoice", "sequence_type_account_invoice"
        )
        return int(move_type), int(invoice_type)

    async def chart(self, company_id: int) -> dict[str, int]:
        existing = await self.c.search("account.account", [("company", "=", company_id)], limit=1)
        if not existing:
            template = await self.c.model(
                "ir.model.data", "get_id", "account", "account_template_root_en"
            )
            wizard = "wizard.account.create_chart"
            context = {"company": company_id}
            session, _, _ = await self.c.call(f"{wizard}.create", context=context)
            try:
                await self.c.call(f"{wizard}.execute", session, {}, "account", context=context)
                await self.c.call(
                    f"{wizard}.execute",
                    session,
                    {"account": {"company": company_id, "account_template": template}},
                    "create_account",
                    context=context,
                )
                receivable, payable = await self._party_accounts(company_id)
                await self.c.call(
                    f"{wizard}.execute",
                    session,
                    {
                        "properties": {
                            "company": company_id,
                            "account_receivable": receivable,
                            "account_payable": payable,
                        }
                    },
                    "create_properties",
                    context=context,
                )
            finally:
                await self.c.call(f"{wizard}.delete", session, context=context)
        receivable, payable = await self._party_accounts(company_id)
        return {
            "receivable": receivable,
            "payable": payable,
            # Services recognised over time, and their cost, in the universal chart.
            "revenue": await self._account(company_id, "type.revenue", code=REVENUE_CODE),
            "expense": await self._account(company_id, "type.expense", code=EXPENSE_CODE),
            "tax": await self._account_by_code(company_id, TAX_PAYABLE_CODE),
            "cash": await self._account_by_code(company_id, CASH_CODE),
        }

    async def _account_by_code(self, company_id: int, code: str) -> int:
        found = await self.c.search(
            "account.account",
            [("company", "=", company_id), ("code", "=", code), ("closed", "!=", True)],
            limit=1,
        )
        if not found:
            raise RuntimeError(f"no account {code} in the chart of company {company_id}")
        return found[0]

    async def tax_rounding(self, company_id: int) -> None:
        """Tax rounded per line, as q2c and the billing system do, so the totals agree."""
        company = self.c.for_company(company_id)
        (config,) = await company.read("account.configuration", [1], ["tax_rounding"])
        if config["tax_rounding"] != "line":
            await company.write("account.configuration", [1], {"tax_rounding": "line"})

    async def sale_tax_group(self) -> int:
        name, code = SALE_TAX_GROUP
        found = await self.c.search("account.tax.group", [("code", "=", code)], limit=1)
        if found:
            return found[0]
        return await self.c.create_one(
            "account.tax.group", {"name": name, "code": code, "kind": "sale"}
        )

    async def tax(self, company_id: int, rate: Decimal, group: int, account: int) -> int:
        """The company's customer tax at `rate` (percentage type; Tryton's rate is a fraction)."""
        name = tax_name(rate)
        found = await self.c.search(
            "account.tax",
            [("company", "=", company_id), ("name", "=", name), ("group", "=", group)],
            limit=1,
        )
        if found:
            return found[0]
        return await self.c.for_company(company_id).create_one(
            "account.tax",
            {
                "name": name,
                "description": name,
                "company": company_id,
                "group": group,
                "type": "percentage",
                "rate": rate,
                "invoice_account": account,
                "credit_note_account": account,
            },
        )

    async def bank_journal(self) -> int:
        """Journals are shared by all companies in Tryton; their moves are numbered per year."""
        name, code = BANK_JOURNAL
        found = await self.c.search("account.journal", [("code", "=", code)], limit=1)
        if found:
            return found[0]
        return await self.c.create_one(
            "account.journal", {"name": name, "code": code, "type": "cash"}
        )

    async def payment_method(self, company_id: int, journal: int, cash_account: int) -> int:
        """How customers' payments are recorded in the company: into its cash account."""
        found = await self.c.search(
            "account.invoice.payment.method",
            [("company", "=", company_id), ("name", "=", PAYMENT_METHOD)],
            limit=1,
        )
        if found:
            return found[0]
        return await self.c.for_company(company_id).create_one(
            "account.invoice.payment.method",
            {
                "name": PAYMENT_METHOD,
                "company": company_id,
                "journal": journal,
                "debit_account": cash_account,
                "credit_account": cash_account,
            },
        )

    async def _party_accounts(self, company_id: int) -> tuple[int, int]:
        receivable = await self._account(company_id, "type.receivable", party_required=True)
        payable = await self._account(company_id, "type.payable", party_required=True)
        return receivable, payable

    async def _account(
        self,
        company_id: int,
        flag: str,
        *,
        party_required: bool = False,
        code: str | None = None,
    ) -> int:
        domain: list[Any] = [
            ("company", "=", company_id),
            (flag, "=", True),
            ("closed", "!=", True),
        ]
        if party_required:
            domain.append(("party_required", "=", True))
        if code is not None:
            found = await self.c.search("account.account", [*domain, ("code", "=", code)], limit=1)
            if found:
                return found[0]
        found = await self.c.search("account.account", domain, limit=1, order=[("code", "ASC")])
        if not found:
            raise RuntimeError(f"no account with {flag} in the chart of company {company_id}")
        return found[0]

    async def fiscal_year(
        self, code: str, company_id: int, year: int, move_type: int, invoice_type: int
    ) -> int:
        """The company's fiscal year `year`; its numbers carry the entity code."""
        start, end = date(year, 1, 1), date(year, 12, 31)
        found = await self.c.search(
            "account.fiscalyear",
            [("company", "=", company_id), ("start_date", "=", start)],
            limit=1,
        )
        if found:
            return found[0]
        context = {"company": company_id}
        kinds = {
            "move": (f"{code} moves {year}", f"{code}-MV{year}-", move_type),
            "out_invoice": (f"{code} customer invoices {year}", f"{code}-INV{year}-", invoice_type),
            "out_credit_note": (
                f"{code} customer credit notes {year}",
                f"{code}-CN{year}-",
                invoice_type,
            ),
            "in_invoice": (f"{code} supplier invoices {year}", f"{code}-SINV{year}-", invoice_type),
            "in_credit_note": (
                f"{code} supplier credit notes {year}",
                f"{code}-SCN{year}-",
                invoice_type,
            ),
        }
        sequence_ids = await self.c.create(
            "ir.sequence.strict",
            [
                {
                    "name": name,
                    "sequence_type": type_id,
                    "company": company_id,
                    "prefix": prefix,
                    "padding": 4,
                }
                for name, prefix, type_id in kinds.values()
            ],
            context=context,
        )
        seq = dict(zip(kinds, sequence_ids, strict=True))
        fy = await self.c.create_one(
            "account.fiscalyear",
            {
                "name": f"{code} {year}",
                "company": company_id,
                "start_date": start,
                "end_date": end,
                "move_sequence": seq["move"],
                "invoice_sequences": [
                    [
                        "create",
                        [
                            {
                                "company": company_id,
                                "out_invoice_sequence": seq["out_invoice"],
                                "out_credit_note_sequence": seq["out_credit_note"],
                                "in_invoice_sequence": seq["in_invoice"],
                                "in_credit_note_sequence": seq["in_credit_note"],
                            }
                        ],
                    ]
                ],
            },
            context=context,
        )
        await self.c.model("account.fiscalyear", "create_period", [fy], context=context)
        return fy

    async def category(
        self, companies: dict[str, CompanyResult], name: str = PRODUCT_CATEGORY
    ) -> int:
        """A products' category, with revenue and expense accounts in every company."""
        found = await self.c.search("product.category", [("name", "=", name)], limit=1)
        category = (
            found[0]
            if found
            else await self.c.create_one("product.category", {"name": name, "accounting": True})
        )
        await self._per_company(
            "product.category",
            category,
            "accounts",
            {
                c.company_id: {
                    "account_revenue": c.revenue_account_id,
                    "account_expense": c.expense_account_id,
                }
                for c in companies.values()
            },
        )
        return category

    async def products(
        self, category: int, hour: int, companies: dict[str, CompanyResult]
    ) -> dict[str, int]:
        """The service products, shared, with a list price per company in its currency."""
        product_ids: dict[str, int] = {}
        for name, usd_price in SERVICE_PRODUCTS.items():
            found = await self.c.search_read(
                "product.product",
                [("template.name", "=", name), ("type", "=", "service")],
                ["template"],
                limit=1,
            )
            if found:
                product_ids[name] = int(found[0]["id"])
                template = int(found[0]["template"])
            else:
                template = await self.c.create_one(
                    "product.template",
                    {
                        "name": name,
                        "type": "service",
                        "default_uom": hour,
                        "sale_uom": hour,
                        "salable": True,
                        "account_category": category,
                        "products": [["create", [{}]]],
                    },
                )
                (row,) = await self.c.read("product.template", [template], ["products"])
                product_ids[name] = int(row["products"][0])
            await self._per_company(
                "product.template",
                template,
                "list_prices",
                {
                    c.company_id: {"list_price": list_price(usd_price, c.currency)}
                    for c in companies.values()
                },
                keep_existing=True,
            )
        return product_ids

    async def plain_product(self, name: str, unit: int, category: int) -> int:
        """A service product sold by the unit that prices no task (not salable): an expense
        category, or the fixed fee whose revenue is deferred."""
        found = await self.c.search(
            "product.product", [("template.name", "=", name), ("type", "=", "service")], limit=1
        )
        if found:
            return found[0]
        template = await self.c.create_one(
            "product.template",
            {
                "name": name,
                "type": "service",
                "default_uom": unit,
                "salable": False,
                "account_category": category,
                "products": [["create", [{}]]],
            },
        )
        (row,) = await self.c.read("product.template", [template], ["products"])
        return int(row["products"][0])

    async def employee_cost_price(self, employee_id: int, cost: Decimal) -> None:
        """The employee's hourly cost from `COST_PRICE_FROM` (timesheet_cost); a cost
        someone set by hand on that date is left alone."""
        found = await self.c.search(
            "company.employee_cost_price",
            [("employee", "=", employee_id), ("date", "=", COST_PRICE_FROM)],
            limit=1,
        )
        if not found:
            await self.c.create(
                "company.employee_cost_price",
                [{"employee": employee_id, "date": COST_PRICE_FROM, "cost_price": cost}],
            )

    async def deferred_revenue_account(self, company_id: int, account: int) -> None:
        """Where account_invoice_defer moves the revenue it defers, in this company."""
        company = self.c.for_company(company_id)
        (config,) = await company.read("account.configuration", [1], ["deferred_account_revenue"])
        if config["deferred_account_revenue"] != account:
            await company.write("account.configuration", [1], {"deferred_account_revenue": account})

    async def reimbursement_journal(self, company_id: int, currency_id: int) -> int:
        """The company's payment journal for approved expenses (paid by hand)."""
        found = await self.c.search(
            "account.payment.journal",
            [("company", "=", company_id), ("name", "=", REIMBURSEMENT_JOURNAL)],
            limit=1,
        )
        if found:
            return found[0]
        return await self.c.for_company(company_id).create_one(
            "account.payment.journal",
            {
                "name": REIMBURSEMENT_JOURNAL,
                "company": company_id,
                "currency": currency_id,
                "process_method": "manual",
            },
        )

    async def _per_company(
        self,
        model: str,
        record_id: int,
        values_field: str,
        wanted: dict[int, dict[str, Any]],
        *,
        keep_existing: bool = False,
    ) -> None:
        """Set company-dependent values (Tryton's "MultiValue" fields) in every company.

        They live in a child model, one row per company, that RPC reads only through its
        parent. Creating the parent may already have made an empty row for the current
        company: rows are completed, not duplicated. `keep_existing` leaves values someone
        set (a price edited by hand) alone.
        """
        names = sorted({name for values in wanted.values() for name in values})
        (row,) = await self.c.read(
            model, [record_id], [f"{values_field}.{n}" for n in ["company", *names]]
        )
        by_company: dict[int, dict[str, Any]] = {}
        for existing in row[f"{values_field}."]:
            if existing["company"] is not None:
                by_company.setdefault(int(existing["company"]), existing)
        actions: list[Any] = []
        missing = []
        for company_id, values in wanted.items():
            current = by_company.get(company_id)
            if current is None:
                missing.append({"company": company_id, **values})
                continue
            stale = {
                k: v
                for k, v in values.items()
                if current[k] != v and not (keep_existing and current[k] is not None)
            }
            if stale:
                actions.append(["write", [current["id"]], stale])
        if missing:
            actions.append(["create", missing])
        if actions:
            await self.c.write(model, [record_id], {values_field: actions})

    async def payment_term(self, name: str, days: int) -> int:
        found = await self.c.search("account.invoice.payment_term", [("name", "=", name)], limit=1)
        if found:
            return found[0]
        return await self.c.create_one(
            "account.invoice.payment_term",
            {
                "name": name,
                "lines": [
                    [
                        "create",
                        [
                            {
                                "type": "remainder",
                                "relativedeltas": [["create", [{"days": days}]]],
                            }
                        ],
                    ]
                ],
            },
        )

    async def employee(self, company_id: int, name: str) -> int:
        found = await self.c.search(
            "company.employee",
            [("company", "=", company_id), ("party.name", "=", name)],
            limit=1,
        )
        if found:
            return found[0]
        return await self.c.create_one(
            "company.employee",
            {
                "party": await self.c.create_one("party.party", {"name": name}),
                "company": company_id,
            },
            context={"company": company_id},
        )


async def ensure_bootstrapped(
    folder: Path,
    url: str,
    *,
    database: str,
    admin_password: str,
    legal_entities: Path = DEFAULT_LEGAL_ENTITIES,
    tax_rates: Path = DEFAULT_TAX_RATES,
    database_uri: str | None = None,
) -> BootstrapResult:
    """Bootstrap a running server once; later calls read the marker.

    A marker of an older shape, or one made from other settings files, runs the
    bootstrap again: it reuses what exists and adds what is missing.
    """
    if is_bootstrapped(folder, database, database_uri):
        try:
            known = read_bootstrap(folder, database, database_uri)
        except (KeyError, TypeError, ValueError):
            known = None
        if known is not None and known.inputs_sha256 == inputs_digest(legal_entities, tax_rates):
            return known
    result = await bootstrap(
        url, database, admin_password, legal_entities=legal_entities, tax_rates=tax_rates
    )
    mark_bootstrapped(folder, database, result, database_uri)
    return result
