"""The reference data q2c looks up by name in Tryton: company, products, terms, employees.

Loaded once per connector and kept: these change rarely, and a stale entry only costs a
failed lookup that `refresh()` cures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.errors import ValidationFailed
from connectors.tryton.client import SYSTEM, TrytonClient


@dataclass
class Catalog:
    company_id: int
    company_currency: str
    currency_ids: dict[str, int]
    product_ids: dict[str, int]
    product_prices: dict[str, Any]
    employees: dict[str, int]
    _payment_terms: dict[int, int] = field(default_factory=dict)
    _countries: dict[str, int] = field(default_factory=dict)

    @classmethod
    async def load(cls, client: TrytonClient) -> Catalog:
        context = client.context if client.user_id is not None else (await _login(client))
        company_id = context.get("company")
        if not company_id:
            raise ValidationFailed(
                "the Tryton user has no current company (bootstrap the database first)",
                system=SYSTEM,
                field="company",
            )
        (company,) = await client.read("company.company", [company_id], ["currency.code"])
        currencies = await client.search_read("currency.currency", [], ["code"])
        products = await client.search_read(
            "product.product",
            [("type", "=", "service"), ("salable", "=", True)],
            ["template.name", "list_price_used"],
        )
        employees = await client.search_read(
            "company.employee", [("company", "=", company_id)], ["party.name"]
        )
        return cls(
            company_id=int(company_id),
            company_currency=str(company["currency."]["code"]),
            currency_ids={str(c["code"]): int(c["id"]) for c in currencies},
            product_ids={str(p["template."]["name"]): int(p["id"]) for p in products},
            product_prices={str(p["template."]["name"]): p["list_price_used"] for p in products},
            employees={str(e["party."]["name"]): int(e["id"]) for e in employees},
        )

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

    def employee_id(self, name: str) -> int:
        try:
            return self.employees[name]
        except KeyError:
            raise ValidationFailed(
                f"no employee named {name!r} in the Tryton company", system=SYSTEM, field="employee"
            ) from None


async def _login(client: TrytonClient) -> dict[str, Any]:
    await client.login()
    return client.context
