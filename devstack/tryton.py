"""Run a Tryton server for the dev stack and the tests, and set its database up for q2c.

The layout of a Tryton folder: `trytond.conf`, the SQLite database `<db>.sqlite`, the
logs, and a marker file written once `bootstrap` succeeded. Everything here works on
that folder, so the dev stack and the tests share one way of doing it (see
`notes/tryton.md` for the facts it relies on).

The database is SQLite in that folder unless a `database_uri` names PostgreSQL (Tryton's
own `[database] uri`, e.g. `postgresql://postgres@127.0.0.1:5432/`): then the database
of that name lives on that server, is created there when missing, and is set up the same
way (`devstack/tryton_postgres.py`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

import settings
from canonical import LegalEntity
from connectors.tryton import trytond_q2c
from connectors.tryton.catalog import Catalog
from connectors.tryton.client import TrytonClient
from connectors.tryton.mapping import LEGAL_ENTITY_PREFIX
from devstack import tryton_postgres
from settings import Settings
from settings.rules import load_tax_rates as load_tax_rates_by_country

CONFIG_NAME = "trytond.conf"
ADMIN_LOG_NAME = "trytond-admin.log"
SERVER_LOG_NAME = "trytond.log"
#: q2c's own Tryton module (`connectors/tryton/trytond_q2c`): lets q2c mark time billed.
Q2C_MODULE = trytond_q2c.MODULE_NAME
Q2C_MODULE_PACKAGE = trytond_q2c.__name__
#: The modules q2c relies on; their dependencies come along with `--activate-dependencies`.
MODULES = ("project_invoice", "sale_opportunity", "sale_project_task", Q2C_MODULE)
#: The Tryton tools q2c runs, and their entry functions.
_TOOLS = {"trytond": "trytond.cli:main", "trytond-admin": "trytond.cli.admin:main"}
_MODULE_DISTRIBUTION = "q2c-trytond-module"
#: Creating the schema and activating the modules takes ~20 s; leave room on a busy machine.
ADMIN_TIMEOUT_S = 600.0
HEALTH_TIMEOUT_S = 2.0

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


def config_path(folder: Path) -> Path:
    return folder / CONFIG_NAME


def database_path(folder: Path, database: str) -> Path:
    return folder / f"{database}.sqlite"


def marker_path(folder: Path, database: str, database_uri: str | None = None) -> Path:
    """Per backend: a marker left by the SQLite database says nothing of a PostgreSQL one."""
    if tryton_postgres.is_postgresql(database_uri):
        return folder / f"{database}.postgresql.bootstrap.json"
    return folder / f"{database}.bootstrap.json"


def backend_label(database_uri: str | None) -> str:
    """Which database serves Tryton, for `q2c dev status` (no credentials)."""
    if tryton_postgres.is_postgresql(database_uri):
        return tryton_postgres.server_label(database_uri)
    return "sqlite"


def database_exists(folder: Path, database: str, database_uri: str | None = None) -> bool:
    """The database exists with Tryton's schema in it (SQLite: a non-empty file)."""
    if tryton_postgres.is_postgresql(database_uri):
        return tryton_postgres.is_initialised(database_uri, database)
    db = database_path(folder, database)
    return db.exists() and db.stat().st_size > 0


def tool_argv(tool: str) -> list[str]:
    """Run `trytond` or `trytond-admin` with q2c's Tryton module visible to it.

    The interpreter running q2c runs the tool (its virtualenv holds trytond), through this
    module's `__main__`, which declares the module to trytond first (see
    `_expose_q2c_module`).
    """
    if tool not in _TOOLS:
        raise ValueError(f"unknown Tryton tool {tool!r}")
    return [sys.executable, "-m", "devstack.tryton", tool]


def write_config(
    folder: Path, *, port: int, database: str, database_uri: str | None = None
) -> Path:
    """Write `trytond.conf` for a server on 127.0.0.1:`port`.

    The database is SQLite in `folder` unless `database_uri` says otherwise; `folder`
    keeps Tryton's file store (attachments) either way.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = config_path(folder)
    path.write_text(
        "\n".join(
            [
                "[database]",
                f"uri = {database_uri or 'sqlite://'}",
                f"path = {folder.resolve()}",
                # Nobody needs to list the databases of a server that serves one.
                "list = False",
                "",
                "[web]",
                f"listen = 127.0.0.1:{port}",
                "",
                "[session]",
                # A worker may sit idle between activities; the client logs in again on 401
                # anyway, this only saves round trips.
                "timeout = 3600",
                "",
                f"# database served: {database}",
                "",
            ]
        )
    )
    return path


def create_database(
    folder: Path,
    *,
    database: str,
    admin_password: str,
    admin_email: str = "admin@example.com",
    database_uri: str | None = None,
) -> None:
    """Create the schema and activate q2c's modules; the admin password goes through a file.

    trytond-admin fills an existing database: the empty SQLite file, or the PostgreSQL
    database, is made first (an empty one left by an interrupted run is reused).
    """
    conf = config_path(folder)
    if not conf.exists():
        raise FileNotFoundError(f"{conf}: write_config first")
    if tryton_postgres.is_postgresql(database_uri):
        if not tryton_postgres.database_exists(database_uri, database):
            tryton_postgres.create_database(database_uri, database)
    else:
        database_path(folder, database).touch()
    log_path = folder / ADMIN_LOG_NAME
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".pass-", delete=False) as passfile:
        passfile.write(admin_password)
    try:
        env = {**os.environ, "TRYTONPASSFILE": passfile.name}
        admin = [*tool_argv("trytond-admin"), "-c", str(conf), "-d", database]
        _run([*admin, "--all", "--email", admin_email], env=env, log_path=log_path)
        _run([*admin, "--activate-dependencies", "-u", *MODULES], env=env, log_path=log_path)
    finally:
        Path(passfile.name).unlink(missing_ok=True)


def _run(argv: list[str], *, env: dict[str, str], log_path: Path) -> None:
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=ADMIN_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        tool = next((a for a in argv if a in _TOOLS), argv[0])
        raise RuntimeError(f"{tool} failed with code {done.returncode} (log: {log_path})")


def missing_modules(folder: Path, database: str, database_uri: str | None = None) -> list[str]:
    """q2c's modules not activated in an existing database (one made by an older q2c)."""
    query = "SELECT name FROM ir_module WHERE state = 'activated'"
    if tryton_postgres.is_postgresql(database_uri):
        with tryton_postgres.connect(database_uri, database) as pg:
            rows = pg.execute(query).fetchall()
    else:
        with sqlite3.connect(database_path(folder, database)) as conn:
            rows = conn.execute(query).fetchall()
        conn.close()
    activated = {str(name) for (name,) in rows}
    return [m for m in MODULES if m not in activated]


def activate_modules(folder: Path, database: str, modules: list[str]) -> None:
    """Activate `modules` (and what they need) in an existing database; server stopped."""
    admin = [*tool_argv("trytond-admin"), "-c", str(config_path(folder)), "-d", database]
    _run(
        [*admin, "--activate-dependencies", "-u", *modules],
        env=dict(os.environ),
        log_path=folder / ADMIN_LOG_NAME,
    )


def server_argv(config: Path, database: str) -> list[str]:
    """`-d` matters: without it 8.2.1 registers the pool too early and logins fail."""
    return [*tool_argv("trytond"), "-c", str(config), "-d", database]


# -- health ------------------------------------------------------------------------------------


def health_check(url: str, database: str) -> bool:
    """True when the server answers JSON-RPC for `database` (a 401 means it is up and serving)."""
    try:
        version = httpx.post(
            f"{url.rstrip('/')}/rpc/",
            json={"id": 0, "method": "common.server.version", "params": []},
            timeout=HEALTH_TIMEOUT_S,
        )
        if version.status_code != 200:
            return False
        # The database route answers 401 without a session once its pool is loaded.
        probe = httpx.post(
            f"{url.rstrip('/')}/{database}/rpc/",
            json={"id": 0, "method": "system.listMethods", "params": []},
            timeout=HEALTH_TIMEOUT_S,
        )
        return probe.status_code in (200, 401)
    except httpx.HTTPError:
        return False


def set_admin_password(
    folder: Path,
    database: str,
    password: str,
    *,
    login: str = "admin",
    database_uri: str | None = None,
) -> None:
    """Give `login` a new password straight in the database; the server must be stopped.

    Lets a snapshot built with one password serve a run with another, so no password
    outlives the run that generated it.
    """
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    hashed = PasswordHash([Argon2Hasher()]).hash(password)
    update = "UPDATE res_user SET password_hash = ? WHERE login = ?"
    # Sessions of the old password must not outlive it.
    forget_sessions = "DELETE FROM ir_session"
    if tryton_postgres.is_postgresql(database_uri):
        with tryton_postgres.connect(database_uri, database) as pg:
            if pg.execute(update.replace("?", "%s"), (hashed, login)).rowcount != 1:
                raise LookupError(f"no user {login!r} in {database}")
            pg.execute(forget_sessions)
        return
    with sqlite3.connect(database_path(folder, database)) as conn:
        done = conn.execute(update, (hashed, login))
        if done.rowcount != 1:
            raise LookupError(f"no user {login!r} in {database}")
        conn.execute(forget_sessions)
    conn.close()


# -- snapshots ---------------------------------------------------------------------------------


def snapshot(folder: Path, database: str, dest: Path) -> Path:
    """Copy the database with SQLite's backup API: consistent even while the server writes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(database_path(folder, database))
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)
            # A single file, no WAL to carry along.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    tmp.replace(dest)
    marker = marker_path(folder, database)
    if marker.exists():
        _marker_for_snapshot(dest).write_text(marker.read_text())
    return dest


def restore(snapshot_file: Path, folder: Path, database: str) -> None:
    """Replace the database with `snapshot_file`; the server must be stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    db = database_path(folder, database)
    # Stale WAL files would replay old rows over the restored database.
    for suffix in ("-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    tmp = db.with_name(db.name + ".restore")
    tmp.write_bytes(snapshot_file.read_bytes())
    tmp.replace(db)
    saved_marker = _marker_for_snapshot(snapshot_file)
    if saved_marker.exists():
        marker_path(folder, database).write_text(saved_marker.read_text())
    else:
        marker_path(folder, database).unlink(missing_ok=True)


def _marker_for_snapshot(snapshot_file: Path) -> Path:
    return snapshot_file.with_name(snapshot_file.name + ".bootstrap.json")


# -- bootstrap ---------------------------------------------------------------------------------


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


def inputs_digest(
    legal_entities: Path = DEFAULT_LEGAL_ENTITIES, tax_rates: Path = DEFAULT_TAX_RATES
) -> str:
    """The settings files a database is bootstrapped from: a change re-runs the bootstrap."""
    digest = hashlib.sha256()
    for path in (legal_entities, tax_rates):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def tax_name(rate: Decimal) -> str:
    """`Tax 20%` for 0.20, `Tax 7.5%` for 0.075."""
    percent = (rate * 100).normalize()
    return f"Tax {percent:f}%"


@dataclass(frozen=True)
class CompanyResult:
    """One legal entity as a Tryton company, with its own ledger and people."""

    company_id: int
    party_id: int
    currency: str
    employee_ids: dict[str, int]
    revenue_account_id: int
    expense_account_id: int
    receivable_account_id: int
    payable_account_id: int
    tax_account_id: int
    cash_account_id: int
    payment_method_id: int
    fiscal_year_ids: dict[int, int] = field(default_factory=dict)
    #: Customer taxes by rate (`"0.20"`).
    tax_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BootstrapResult:
    """The records q2c relies on, by the names it knows them by."""

    #: Legal entity code -> its company, in the order of the legal entities file.
    companies: dict[str, CompanyResult]
    currency_ids: dict[str, int]
    product_ids: dict[str, int]
    payment_term_ids: dict[str, int]
    hour_uom_id: int
    bank_journal_id: int
    #: The settings files the database was set up from (a changed file re-runs it).
    inputs_sha256: str = ""

    @property
    def company_ids(self) -> dict[str, int]:
        return {code: c.company_id for code, c in self.companies.items()}

    def company(self, code: str) -> CompanyResult:
        return self.companies[code]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BootstrapResult:
        data = json.loads(text)
        companies = {
            code: CompanyResult(
                **{
                    **values,
                    "fiscal_year_ids": {int(k): v for k, v in values["fiscal_year_ids"].items()},
                }
            )
            for code, values in data.pop("companies").items()
        }
        return cls(companies=companies, **data)


def is_bootstrapped(folder: Path, database: str, database_uri: str | None = None) -> bool:
    return marker_path(folder, database, database_uri).exists() and database_exists(
        folder, database, database_uri
    )


def read_bootstrap(folder: Path, database: str, database_uri: str | None = None) -> BootstrapResult:
    return BootstrapResult.from_json(marker_path(folder, database, database_uri).read_text())


def mark_bootstrapped(
    folder: Path, database: str, result: BootstrapResult, database_uri: str | None = None
) -> None:
    marker_path(folder, database, database_uri).write_text(result.to_json())


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
            companies[code] = CompanyResult(
                company_id=company_id,
                party_id=party_id,
                currency=self.entities[code].currency,
                employee_ids={
                    name: await self.employee(company_id, name) for name in employees_of(code)
                },
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
            )
        hour = int(await self.c.model("ir.model.data", "get_id", "product", "uom_hour"))
        category = await self.category(companies)
        product_ids = await self.products(category, hour, companies)
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

    async def category(self, companies: dict[str, CompanyResult]) -> int:
        """The services' category, with revenue and expense accounts in every company."""
        found = await self.c.search("product.category", [("name", "=", PRODUCT_CATEGORY)], limit=1)
        category = (
            found[0]
            if found
            else await self.c.create_one(
                "product.category", {"name": PRODUCT_CATEGORY, "accounting": True}
            )
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


# -- accounting periods ------------------------------------------------------------------------


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


def employees_of(code: str) -> tuple[str, ...]:
    """The demo people of a legal entity; an entity the demo does not know gets two."""
    return EMPLOYEES.get(code, (f"{code} Consultant", f"{code} Project Manager"))


def list_price(usd_price: Decimal, currency: str) -> Decimal:
    """A service's list price in `currency`: the USD price at the demo rate, whole units."""
    rate = CURRENCIES.get(currency, ("", "", Decimal(1)))[2]
    return (usd_price * rate).quantize(Decimal(1))


# -- the dev stack's entry points -------------------------------------------------------------


def prepare(
    folder: Path,
    *,
    port: int,
    database: str,
    admin_password: str,
    database_uri: str | None = None,
) -> Path:
    """Write the config and create the database when absent; returns the config path.

    A database made by an older q2c gets the modules it lacks (q2c's own among them).
    Start the server with `server_argv`, wait for `health_check`, then `await bootstrap`
    and `mark_bootstrapped` unless `is_bootstrapped` already says so.
    """
    conf = write_config(folder, port=port, database=database, database_uri=database_uri)
    if not database_exists(folder, database, database_uri):
        marker_path(folder, database, database_uri).unlink(missing_ok=True)
        create_database(
            folder, database=database, admin_password=admin_password, database_uri=database_uri
        )
    else:
        missing = missing_modules(folder, database, database_uri)
        if missing:
            activate_modules(folder, database, missing)
    return conf


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


# -- running trytond with q2c's module --------------------------------------------------------


def _expose_q2c_module() -> None:
    """Declare q2c's module to trytond the way an installed module declares itself.

    trytond finds modules in its own package folder and through `trytond.modules` entry
    points. A distribution known to this process only carries that entry point: nothing
    is installed or written anywhere, and plain `trytond` stays as it was.
    """

    class ModuleDistribution(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            if filename == "METADATA":
                return f"Metadata-Version: 2.1\nName: {_MODULE_DISTRIBUTION}\nVersion: 1\n"
            if filename == "entry_points.txt":
                return f"[trytond.modules]\n{Q2C_MODULE} = {Q2C_MODULE_PACKAGE}\n"
            return None

        def locate_file(self, path: str | os.PathLike[str]) -> Path:
            return Path(__file__).parent / path

    class ModuleFinder(importlib.metadata.DistributionFinder):
        def find_spec(self, *args: object, **kwargs: object) -> None:
            return None  # finds distributions, not imports

        def find_distributions(
            self, context: importlib.metadata.DistributionFinder.Context | None = None
        ) -> list[importlib.metadata.Distribution]:
            name = context.name if context is not None else None
            if name is None or name.replace("_", "-").lower() == _MODULE_DISTRIBUTION:
                return [ModuleDistribution()]
            return []

    sys.meta_path.append(ModuleFinder())


def _main(argv: list[str]) -> int:
    """`python -m devstack.tryton trytond|trytond-admin ARGS...`"""
    if len(argv) < 2 or argv[1] not in _TOOLS:
        print(f"usage: python -m devstack.tryton {{{'|'.join(_TOOLS)}}} ARGS...", file=sys.stderr)
        return 2
    tool = argv[1]
    _expose_q2c_module()
    module_name, _, function = _TOOLS[tool].partition(":")
    main = getattr(importlib.import_module(module_name), function)
    sys.argv = [tool, *argv[2:]]
    return int(main() or 0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
