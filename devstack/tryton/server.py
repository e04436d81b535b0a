"""The Tryton server of the dev stack and the tests: its folder, config, database and health.

The layout of a Tryton folder: `trytond.conf`, the SQLite database `<db>.sqlite`, the
logs, and a marker file written once the bootstrap succeeded. Everything here works on
that folder, so the dev stack and the tests share one way of doing it (see
`notes/tryton.md` for the facts it relies on).

The database is SQLite in that folder unless a `database_uri` names PostgreSQL (Tryton's
own `[database] uri`, e.g. `postgresql://postgres@127.0.0.1:5432/`): then the database
of that name lives on that server, is created there when missing, and is set up the same
way (`devstack/tryton_postgres.py`).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from connectors.tryton import trytond_q2c
from devstack import tryton_postgres

CONFIG_NAME = "trytond.conf"
ADMIN_LOG_NAME = "trytond-admin.log"
SERVER_LOG_NAME = "trytond.log"
#: q2c's own Tryton module (`connectors/tryton/trytond_q2c`): lets q2c mark time billed.
Q2C_MODULE = trytond_q2c.MODULE_NAME
#: The modules q2c relies on; their dependencies come along with `--activate-dependencies`.
MODULES = (
    "project_invoice",
    "sale_opportunity",
    "sale_project_task",
    # Expenses are project disbursements; employee cost per hour, for margin; revenue
    # deferred over a fee's delivery period.
    "project_disbursement",
    "timesheet_cost",
    "account_invoice_defer",
    # Credit notes and re-bills when a change order re-prices issued invoices.
    "account_invoice_correction",
    Q2C_MODULE,
)
#: The Tryton tools q2c runs, and their entry functions.
_TOOLS = {"trytond": "trytond.cli:main", "trytond-admin": "trytond.cli.admin:main"}
#: Creating the schema and activating the modules takes ~20 s; leave room on a busy machine.
ADMIN_TIMEOUT_S = 600.0
HEALTH_TIMEOUT_S = 2.0


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
    package's `__main__`. q2c's module reaches trytond through the `trytond.modules` entry
    point of q2c's distribution (pyproject.toml).
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
            # q2c's module is updated along: it may depend on the modules just activated.
            activate_modules(folder, database, list(dict.fromkeys([*missing, Q2C_MODULE])))
        elif _modules_stamp(folder, database).exists() and (
            _modules_stamp(folder, database).read_text() != modules_digest()
        ):
            # q2c's module changed (a new field): update the schema, as `-u` does.
            activate_modules(folder, database, list(MODULES))
    _modules_stamp(folder, database).write_text(modules_digest())
    return conf


def modules_digest() -> str:
    """The modules a database has activated, and the code of q2c's own: what its schema
    holds beyond what trytond's version fixes."""
    digest = hashlib.sha256(" ".join(MODULES).encode())
    module_folder = Path(trytond_q2c.__file__).parent
    for path in sorted(module_folder.iterdir()):
        if path.is_file() and path.suffix in (".py", ".cfg", ".xml"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _modules_stamp(folder: Path, database: str) -> Path:
    return folder / f"{database}.modules.sha256"
