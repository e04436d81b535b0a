"""Tryton's database on PostgreSQL: create, copy, drop and query it from outside trytond.

Tryton names its database with a `[database] uri` that leaves the database out
(`postgresql://user@host:port/`) and takes the name from `-d`; these helpers take the
same two halves. trytond's own PostgreSQL backend uses psycopg 3, so q2c does too.
SQLite stays the default (`devstack/tryton/`); this module is used only when the
URI names PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeGuard
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

#: The database every PostgreSQL server has, used to create and drop the others.
MAINTENANCE_DATABASE = "postgres"
CONNECT_TIMEOUT_S = 5


def is_postgresql(uri: str | None) -> TypeGuard[str]:
    return uri is not None and urlsplit(uri).scheme in ("postgresql", "postgres")


def dsn(uri: str, database: str) -> str:
    """The libpq URI of `database` on the server `uri` names (its own path is ignored)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(scheme="postgresql", path=f"/{database}"))


def server_label(uri: str) -> str:
    """`postgresql://host:port`, without credentials, for status lines and logs."""
    parts = urlsplit(uri)
    return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}"


@contextmanager
def connect(uri: str, database: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A connection to `database`; committed on success (unless autocommit), always closed."""
    with psycopg.connect(
        dsn(uri, database), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        yield conn


def unreachable(uri: str) -> str | None:
    """Why the server cannot be used, or None when it answers."""
    try:
        with connect(uri, MAINTENANCE_DATABASE) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        # libpq's message spans lines; the CLI shows one.
        return f"PostgreSQL unreachable at {server_label(uri)}: {' '.join(str(exc).split())}"
    return None


def database_exists(uri: str, database: str) -> bool:
    with connect(uri, MAINTENANCE_DATABASE) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        return found.fetchone() is not None


def is_initialised(uri: str, database: str) -> bool:
    """The database exists and holds Tryton's schema (`trytond-admin --all` has run)."""
    if not database_exists(uri, database):
        return False
    with connect(uri, database) as conn:
        row = conn.execute("SELECT to_regclass('public.ir_module') IS NOT NULL").fetchone()
        return bool(row and row[0])


def create_database(uri: str, database: str, *, template: str | None = None) -> None:
    """Create an empty database (UTF-8, as Tryton wants), or a copy of `template`."""
    _maintenance(
        uri,
        sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE {}").format(
            sql.Identifier(database), sql.Identifier(template or "template0")
        ),
    )


def rename_database(uri: str, database: str, new_name: str) -> None:
    _maintenance(
        uri,
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
            sql.Identifier(database), sql.Identifier(new_name)
        ),
    )


def drop_database(uri: str, database: str) -> None:
    """Drop `database` if it exists, closing the connections a killed server left behind."""
    _maintenance(
        uri, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
    )


def comment_on_database(uri: str, database: str, text: str) -> None:
    _maintenance(
        uri,
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(text)),
    )


def database_comment(uri: str, database: str) -> str | None:
    with connect(uri, MAINTENANCE_DATABASE) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (database,),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])


def _maintenance(uri: str, statement: sql.Composed) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    with connect(uri, MAINTENANCE_DATABASE, autocommit=True) as conn:
        conn.execute(statement)
