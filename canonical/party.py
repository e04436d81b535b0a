"""Who we sell to and bill from: addresses, legal entities, CRM accounts, customers, contacts."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from canonical._base import CanonicalModel, NonEmpty
from canonical.money import CurrencyCode

__all__ = [
    "COUNTRY_CODES",
    "Account",
    "Address",
    "Contact",
    "CountryCode",
    "Customer",
    "Email",
    "LegalEntity",
    "PaymentTerms",
]

# ISO 3166-1 alpha-2, plus XK (Kosovo), which tax authorities and banks use in practice.
_COUNTRIES = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW
"""
COUNTRY_CODES: frozenset[str] = frozenset(_COUNTRIES.split())

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _check_country(code: str) -> str:
    if code not in COUNTRY_CODES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def _check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


CountryCode = Annotated[str, BeforeValidator(_upper), AfterValidator(_check_country)]
Email = Annotated[str, AfterValidator(_check_email)]


class Address(CanonicalModel):
    street: NonEmpty
    city: NonEmpty
    postal_code: str | None = None  # some countries (IE before Eircode, HK, AE) have none
    country: CountryCode
    region: str | None = None
    street2: str | None = None


class LegalEntity(CanonicalModel):
    """One of the firm's own companies: it issues the invoices and books the revenue."""

    code: NonEmpty
    name: NonEmpty
    country: CountryCode
    currency: CurrencyCode  # functional currency of its ledger
    tax_regime: str | None = None  # e.g. "EU-VAT", "US-SALES-TAX"; drives tax on invoices
    tax_id: str | None = None


class PaymentTerms(CanonicalModel):
    net_days: int = Field(ge=0, le=365)

    @property
    def label(self) -> str:
        return "Due on receipt" if self.net_days == 0 else f"Net {self.net_days}"


class Contact(CanonicalModel):
    name: NonEmpty
    email: Email
    phone: str | None = None
    role: str | None = None  # e.g. "billing", "sponsor": billing contacts receive invoices
    id: str | None = None


class Account(CanonicalModel):
    """A company as the CRM sees it: commercial facts only, no financial master data."""

    id: NonEmpty
    name: NonEmpty
    billing_address: Address | None = None
    tax_id: str | None = None
    currency: CurrencyCode | None = None
    website: str | None = None
    industry: str | None = None
    contacts: list[Contact] = Field(default_factory=list)
    updated_at: AwareDatetime | None = None


class Customer(CanonicalModel):
    """The customer financial master: who is invoiced, by which of our legal entities, how.

    ``legal_entity`` is required: without it nobody knows which company invoices and under
    which tax regime, so such a record must be refused rather than guessed.
    """

    id: NonEmpty
    name: NonEmpty
    legal_entity: LegalEntity
    addresses: list[Address] = Field(min_length=1)
    tax_id: str | None = None
    currency: CurrencyCode
    payment_terms: PaymentTerms
    contacts: list[Contact] = Field(default_factory=list)
    external_ids: dict[str, str] = Field(default_factory=dict)  # system name -> id there
    updated_at: AwareDatetime | None = None

    @property
    def billing_address(self) -> Address:
        """The first address is the one invoices go to."""
        return self.addresses[0]

    def billing_contacts(self) -> list[Contact]:
        return [c for c in self.contacts if (c.role or "").lower() == "billing"]
