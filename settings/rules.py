"""Load the deal rules (`canonical.DealRules`) from the settings and their files.

Errors name the file and the entry, so a typo in a mapping file is found before a deal is.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from canonical import DealRules, explain
from settings import Settings


class RulesFileError(ValueError):
    pass


def _read(path: Path, parse_float: Callable[[str], Any] = float) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f, parse_float=parse_float)
    except OSError as exc:
        raise RulesFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"{path}: not valid TOML: {exc}") from exc


def _entities(tables: Any) -> Any:
    """Each entity's code is its table's name; anything else is left for validation to name."""
    if not isinstance(tables, dict):
        return tables
    return {
        code: {"code": code, **values} if isinstance(values, dict) else values
        for code, values in tables.items()
    }


def load_deal_rules(settings: Settings) -> DealRules:
    entities_doc = _read(settings.legal_entities_file)
    # A markup is exact: the catalogue's numbers never pass through `float`.
    catalogue_doc = _read(settings.service_catalogue_file, parse_float=Decimal)
    entities = _entities(entities_doc.get("entities", {}))
    try:
        return DealRules.model_validate(
            {
                "legal_entities": entities,
                "countries": entities_doc.get("countries", {}),
                "catalogue": catalogue_doc.get("products", {}),
                # The firm's expense policy for deals that state none: none passed on unless
                # the catalogue's [expenses] table names the billable categories.
                "expense_policy": catalogue_doc.get("expenses", {}),
                "approval": {
                    "amount_threshold": settings.approval_threshold,
                    "max_discount_percent": settings.max_discount_percent,
                    "standard_net_days": settings.standard_net_days,
                    "approvers": settings.finance_approvers,
                    "remind_after": settings.approval_remind_after,
                    "expire_after": settings.approval_expire_after,
                },
                "default_payment_terms": {"net_days": settings.standard_net_days},
                "correction_deadline": settings.correction_deadline,
                "outage": {
                    "notice_after": settings.outage_notice_after,
                    "deadlines": {
                        "tryton": settings.tryton_outage_deadline,
                        "stripe": settings.stripe_outage_deadline,
                        "salesforce": settings.salesforce_outage_deadline,
                    },
                },
            }
        )
    except ValidationError as exc:
        files = f"{settings.legal_entities_file}, {settings.service_catalogue_file}"
        raise RulesFileError(f"deal rules ({files}): " + "; ".join(explain(exc))) from exc


def load_tax_rates(settings: Settings) -> dict[str, Decimal]:
    """Tax on services by the customer's billing country, as fractions (0.20 is 20 %)."""
    path = settings.tax_rates_file
    rates: dict[str, Decimal] = {}
    for country, value in _read(path).get("countries", {}).items():
        try:
            rate = Decimal(str(value))
        except ArithmeticError:
            raise RulesFileError(
                f"{path}: countries.{country}: {value!r} is not a number"
            ) from None
        if not Decimal(0) <= rate < Decimal(1):
            raise RulesFileError(f"{path}: countries.{country}: {rate} is not a fraction in [0, 1)")
        rates[str(country).upper()] = rate
    return rates
