"""Run a Tryton server for the dev stack and the tests, and set its database up for q2c.

The layout of a Tryton folder: `trytond.conf`, the SQLite database `<db>.sqlite`, the
logs, and a marker file written once `bootstrap` succeeded. Everything here works on
that folder, so the dev stack and the tests share one way of doing it (see
`notes/tryton.md` for the facts it relies on).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

CONFIG_NAME = "trytond.conf"
ADMIN_LOG_NAME = "trytond-admin.log"
SERVER_LOG_NAME = "trytond.log"
#: The modules q2c relies on; their dependencies come along with `--activate-dependencies`.
MODULES = ("project_invoice", "sale_opportunity", "sale_project_task")
#: Creating the schema and activating the modules takes ~20 s; leave room on a busy machine.
ADMIN_TIMEOUT_S = 600.0
HEALTH_TIMEOUT_S = 2.0

COMPANY_NAME = "Northwind Consulting"
COMPANY_CURRENCY = "USD"
#: Other currencies a deal may be priced in, with a rate against USD (units per USD).
OTHER_CURRENCIES: dict[str, tuple[str, str, Decimal]] = {
    "EUR": ("Euro", "€", Decimal("0.92")),
    "GBP": ("Pound Sterling", "£", Decimal("0.79")),
    "CAD": ("Canadian Dollar", "$", Decimal("1.37")),
    "AUD": ("Australian Dollar", "$", Decimal("1.52")),
}
CURRENCY_NAMES = {"USD": ("US Dollar", "$"), **{k: v[:2] for k, v in OTHER_CURRENCIES.items()}}
#: Service products, billed by the hour, with their list price in the company currency.
SERVICE_PRODUCTS: dict[str, Decimal] = {
    "Consulting": Decimal("150"),
    "Project Management": Decimal("140"),
    "Solution Architecture": Decimal("190"),
    "Development": Decimal("160"),
    "Training": Decimal("120"),
}
DEFAULT_PRODUCT = "Consulting"
EMPLOYEES = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra")
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


def config_path(folder: Path) -> Path:
    return folder / CONFIG_NAME


def database_path(folder: Path, database: str) -> Path:
    return folder / f"{database}.sqlite"


def marker_path(folder: Path, database: str) -> Path:
    return folder / f"{database}.bootstrap.json"


def _script(name: str) -> str:
    """The console scripts live next to the interpreter running q2c (its virtualenv)."""
    return str(Path(sys.executable).parent / name)


def write_config(folder: Path, *, port: int, database: str) -> Path:
    """Write `trytond.conf` for a server on 127.0.0.1:`port` keeping SQLite files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = config_path(folder)
    path.write_text(
        "\n".join(
            [
                "[database]",
                "uri = sqlite://",
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
) -> None:
    """Create the schema and activate q2c's modules; the admin password goes through a file."""
    conf = config_path(folder)
    if not conf.exists():
        raise FileNotFoundError(f"{conf}: write_config first")
    database_path(folder, database).touch()
    log_path = folder / ADMIN_LOG_NAME
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".pass-", delete=False) as passfile:
        passfile.write(admin_password)
    try:
        env = {**os.environ, "TRYTONPASSFILE": passfile.name}
        admin = [_script("trytond-admin"), "-c", str(conf), "-d", database]
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
        raise RuntimeError(f"{argv[0]} failed with code {done.returncode} (log: {log_path})")


def server_argv(config: Path, database: str) -> list[str]:
    """`-d` matters: without it 8.2.1 registers the pool too early and logins fail."""
    return [_script("trytond"), "-c", str(config), "-d", database]


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


def set_admin_password(folder: Path, database: str, password: str, *, login: str = "admin") -> None:
    """Give `login` a new password straight in the database; the server must be stopped.

    Lets a snapshot built with one password serve a run with another, so no password
    outlives the run that generated it.
    """
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    hashed = PasswordHash([Argon2Hasher()]).hash(password)
    with sqlite3.connect(database_path(folder, database)) as conn:
        done = conn.execute(
            "UPDATE res_user SET password_hash = ? WHERE login = ?", (hashed, login)
        )
        if done.rowcount != 1:
            raise LookupError(f"no user {login!r} in {database}")
        # Sessions of the old password must not outlive it.
        conn.execute("DELETE FROM ir_session")
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


@dataclass(frozen=True)
class BootstrapResult:
    """The records q2c relies on, by the names it knows them by."""

    company_id: int
    company_party_id: int
    currency_ids: dict[str, int]
    product_ids: dict[str, int]
    employee_ids: dict[str, int]
    payment_term_ids: dict[str, int]
    revenue_account_id: int
    expense_account_id: int
    receivable_account_id: int
    payable_account_id: int
    hour_uom_id: int
    fiscal_year_ids: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BootstrapResult:
        data = json.loads(text)
        data["fiscal_year_ids"] = {int(k): v for k, v in data.get("fiscal_year_ids", {}).items()}
        return cls(**data)


def is_bootstrapped(folder: Path, database: str) -> bool:
    return database_path(folder, database).exists() and marker_path(folder, database).exists()


def read_bootstrap(folder: Path, database: str) -> BootstrapResult:
    return BootstrapResult.from_json(marker_path(folder, database).read_text())


def mark_bootstrapped(folder: Path, database: str, result: BootstrapResult) -> None:
    marker_path(folder, database).write_text(result.to_json())


async def bootstrap(
    url: str,
    database: str,
    admin_password: str,
    *,
    login: str = "admin",
    today: date | None = None,
) -> BootstrapResult:
    """Make a fresh database usable for q2c; a second run finds and reuses everything."""
    from connectors.tryton.client import TrytonClient

    async with TrytonClient(url, database, login, admin_password) as client:
        await client.login()
        return await _Bootstrap(client, today or datetime.now().astimezone().date()).run()


class _Bootstrap:
    def __init__(self, client: Any, today: date) -> None:
        from connectors.tryton.client import TrytonClient

        self.c: TrytonClient = client
        self.today = today

    async def run(self) -> BootstrapResult:
        currency_ids = await self.currencies()
        await self.countries()
        company_id, company_party_id = await self.company(currency_ids[COMPANY_CURRENCY])
        accounts = await self.chart(company_id)
        years = [self.today.year, self.today.year + 1]
        fiscal_year_ids = {y: await self.fiscal_year(company_id, y) for y in years}
        hour = await self.c.model("ir.model.data", "get_id", "product", "uom_hour")
        category = await self.category(accounts)
        product_ids = {
            name: await self.product(name, price, category, hour)
            for name, price in SERVICE_PRODUCTS.items()
        }
        payment_term_ids = {
            name: await self.payment_term(name, days) for name, days in PAYMENT_TERMS.items()
        }
        employee_ids = {name: await self.employee(company_id, name) for name in EMPLOYEES}
        return BootstrapResult(
            company_id=company_id,
            company_party_id=company_party_id,
            currency_ids=currency_ids,
            product_ids=product_ids,
            employee_ids=employee_ids,
            payment_term_ids=payment_term_ids,
            revenue_account_id=accounts["revenue"],
            expense_account_id=accounts["expense"],
            receivable_account_id=accounts["receivable"],
            payable_account_id=accounts["payable"],
            hour_uom_id=int(hour),
            fiscal_year_ids=fiscal_year_ids,
        )

    async def currencies(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        rates = {COMPANY_CURRENCY: Decimal(1), **{k: v[2] for k, v in OTHER_CURRENCIES.items()}}
        for code, (name, symbol) in CURRENCY_NAMES.items():
            found = await self.c.search("currency.currency", [("code", "=", code)], limit=1)
            if found:
                ids[code] = found[0]
                continue
            ids[code] = await self.c.create_one(
                "currency.currency",
                {
                    "name": name,
                    "code": code,
                    "symbol": symbol,
                    "rounding": Decimal("0.01"),
                    "digits": 2,
                    "rates": [
                        [
                            "create",
                            [{"date": date(self.today.year, 1, 1), "rate": rates[code]}],
                        ]
                    ],
                },
            )
        return ids

    async def countries(self) -> None:
        rows = await self.c.search_read("country.country", [], ["code"])
        known = {r["code"] for r in rows}
        missing = [
            {"code": code, "name": name} for code, name in COUNTRIES.items() if code not in known
        ]
        if missing:
            await self.c.create("country.country", missing)

    async def company(self, currency_id: int) -> tuple[int, int]:
        found = await self.c.search_read(
            "company.company", [("party.name", "=", COMPANY_NAME)], ["party"], limit=1
        )
        if found:
            company_id, party_id = int(found[0]["id"]), int(found[0]["party"])
        else:
            party_id = await self.c.create_one(
                "party.party",
                {
                    "name": COMPANY_NAME,
                    "addresses": [
                        [
                            "create",
                            [
                                {
                                    "street": "1 Market Street",
                                    "city": "San Francisco",
                                    "postal_code": "94105",
                                }
                            ],
                        ]
                    ],
                },
            )
            company_id = await self.c.create_one(
                "company.company", {"party": party_id, "currency": currency_id}
            )
        assert self.c.user_id is not None
        await self.c.model(
            "res.user",
            "write",
            [self.c.user_id],
            {"companies": [["add", [company_id]]], "company": company_id},
        )
        await self.c.refresh_context()
        return company_id, party_id

    async def chart(self, company_id: int) -> dict[str, int]:
        existing = await self.c.search("account.account", [("company", "=", company_id)], limit=1)
        if not existing:
            template = await self.c.model(
                "ir.model.data", "get_id", "account", "account_template_root_en"
            )
            wizard = "wizard.account.create_chart"
            session, _, _ = await self.c.call(f"{wizard}.create")
            try:
                await self.c.call(f"{wizard}.execute", session, {}, "account")
                await self.c.call(
                    f"{wizard}.execute",
                    session,
                    {"account": {"company": company_id, "account_template": template}},
                    "create_account",
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
                )
            finally:
                await self.c.call(f"{wizard}.delete", session)
        receivable, payable = await self._party_accounts(company_id)
        return {
            "receivable": receivable,
            "payable": payable,
            # Services recognised over time, and their cost, in the universal chart.
            "revenue": await self._account(company_id, "type.revenue", code=REVENUE_CODE),
            "expense": await self._account(company_id, "type.expense", code=EXPENSE_CODE),
        }

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

    async def fiscal_year(self, company_id: int, year: int) -> int:
        start, end = date(year, 1, 1), date(year, 12, 31)
        found = await self.c.search(
            "account.fiscalyear",
            [("company", "=", company_id), ("start_date", "=", start)],
            limit=1,
        )
        if found:
            return found[0]
        move_type = await self.c.model(
            "ir.model.data", "get_id", "account", "sequence_type_account_move"
        )
        invoice_type = await self.c.model(
            "ir.model.data", "get_id", "account_invoice", "sequence_type_account_invoice"
        )

        async def strict(name: str, prefix: str, type_id: int) -> int:
            return await self.c.create_one(
                "ir.sequence.strict",
                {
                    "name": name,
                    "sequence_type": type_id,
                    "company": company_id,
                    "prefix": prefix,
                    "padding": 4,
                },
            )

        move_seq = await strict(f"Moves {year}", f"MV{year}-", move_type)
        fy = await self.c.create_one(
            "account.fiscalyear",
            {
                "name": str(year),
                "company": company_id,
                "start_date": start,
                "end_date": end,
                "move_sequence": move_seq,
                "invoice_sequences": [
                    [
                        "create",
                        [
                            {
                                "company": company_id,
                                "out_invoice_sequence": await strict(
                                    f"Customer invoices {year}", f"INV{year}-", invoice_type
                                ),
                                "out_credit_note_sequence": await strict(
                                    f"Customer credit notes {year}", f"CN{year}-", invoice_type
                                ),
                                "in_invoice_sequence": await strict(
                                    f"Supplier invoices {year}", f"SINV{year}-", invoice_type
                                ),
                                "in_credit_note_sequence": await strict(
                                    f"Supplier credit notes {year}", f"SCN{year}-", invoice_type
                                ),
                            }
                        ],
                    ]
                ],
            },
        )
        await self.c.model("account.fiscalyear", "create_period", [fy])
        return fy

    async def category(self, accounts: dict[str, int]) -> int:
        found = await self.c.search("product.category", [("name", "=", PRODUCT_CATEGORY)], limit=1)
        if found:
            return found[0]
        return await self.c.create_one(
            "product.category",
            {
                "name": PRODUCT_CATEGORY,
                "accounting": True,
                "account_revenue": accounts["revenue"],
                "account_expense": accounts["expense"],
            },
        )

    async def product(self, name: str, price: Decimal, category: int, hour: int) -> int:
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
                "default_uom": hour,
                "sale_uom": hour,
                "salable": True,
                "list_price": price,
                "account_category": category,
                "products": [["create", [{}]]],
            },
        )
        (row,) = await self.c.read("product.template", [template], ["products"])
        return int(row["products"][0])

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
        party = await self.c.create_one("party.party", {"name": name})
        return await self.c.create_one("company.employee", {"party": party, "company": company_id})


# -- the dev stack's entry points -------------------------------------------------------------


def prepare(folder: Path, *, port: int, database: str, admin_password: str) -> Path:
    """Write the config and create the database when absent; returns the config path.

    Start the server with `server_argv`, wait for `health_check`, then `await bootstrap`
    and `mark_bootstrapped` unless `is_bootstrapped` already says so.
    """
    conf = write_config(folder, port=port, database=database)
    db = database_path(folder, database)
    if not db.exists() or db.stat().st_size == 0:
        marker_path(folder, database).unlink(missing_ok=True)
        create_database(folder, database=database, admin_password=admin_password)
    return conf


async def ensure_bootstrapped(
    folder: Path, url: str, *, database: str, admin_password: str
) -> BootstrapResult:
    """Bootstrap a running server once; later calls read the marker."""
    if is_bootstrapped(folder, database):
        return read_bootstrap(folder, database)
    result = await bootstrap(url, database, admin_password)
    mark_bootstrapped(folder, database, result)
    return result
