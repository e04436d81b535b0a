"""Close and reopen a legal entity's accounting period, as finance closes a month."""

from __future__ import annotations

from datetime import date
from typing import Any

from connectors.tryton.catalog import Catalog
from connectors.tryton.client import TrytonClient


async def close_period(client: TrytonClient, company_code: str, day: date) -> int:
    """Close the legal entity's accounting period holding `day`, as finance closes a month.

    Nothing can be posted into a closed period: posting an invoice dated in it fails for
    good (a `ValidationFailed`) until `reopen_period`. Returns the period's id.
    """
    period = await _period(client, company_code, day)
    await client.for_company(period["company"]).model("account.period", "close", [period["id"]])
    return int(period["id"])


async def reopen_period(client: TrytonClient, company_code: str, day: date) -> int:
    """Reopen the period and its journals (closing the period closed them all)."""
    period = await _period(client, company_code, day)
    company = client.for_company(period["company"])
    if period["state"] != "open":
        await company.model("account.period", "reopen", [period["id"]])
    journals = await company.search(
        "account.journal.period", [("period", "=", period["id"]), ("state", "=", "closed")]
    )
    if journals:
        await company.model("account.journal.period", "reopen", journals)
    return int(period["id"])


async def _period(client: TrytonClient, company_code: str, day: date) -> dict[str, Any]:
    company = (await Catalog.load(client)).company(company_code)
    found = await client.search_read(
        "account.period",
        [
            ("company", "=", company.company_id),
            ("type", "=", "standard"),
            ("start_date", "<=", day),
            ("end_date", ">=", day),
        ],
        ["company", "state"],
        limit=1,
    )
    if not found:
        raise LookupError(f"{company_code} has no accounting period for {day}")
    return found[0]
