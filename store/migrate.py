"""Run the store's Alembic migrations from code, on the caller's async engine.

Migrations run once, by `q2c store migrate` (and `q2c dev up`), never at a worker's or a
service replica's start: many processes share one store, and a schema change raced by all of
them at once is a schema change nobody can reason about. Those processes only check that
the schema is current (`require_current`) and refuse to start otherwise.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from store.repository import SQLITE_BUSY_TIMEOUT_MS, Store, StoreNotMigrated

MIGRATIONS = Path(__file__).parent / "migrations"

#: The PostgreSQL advisory lock every `q2c store migrate` takes ("q2c" in ASCII); any
#: constant works, as long as it is the same in every process.
MIGRATION_LOCK_KEY = 0x713263

MIGRATE_HINT = "run `q2c store migrate`"

#: How long a SQLite migration waits for one already running elsewhere.
MIGRATION_WAIT_MS = 600_000


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate_store(url: str) -> None:
    """`q2c store migrate`: bring the store at `url` to the newest revision."""
    store = Store.from_url(url)
    try:
        await store.migrate()
    finally:
        await store.close()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Two processes that migrate at once take turns; the second finds nothing to do."""
    async with engine.connect() as conn:
        try:
            async with conn.begin():
                await _take_migration_lock(conn)
                await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
        finally:
            await _release_migration_wait(conn)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn:
        try:
            async with conn.begin():
                await _take_migration_lock(conn)
                await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))
        finally:
            await _release_migration_wait(conn)


async def _take_migration_lock(conn: AsyncConnection) -> None:
    """Held until the migration's transaction ends (both databases have transactional DDL)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
    elif conn.dialect.name == "sqlite":
        # The write lock before alembic reads its version table: without it two processes
        # both see "no schema" and both create it. pysqlite would begin only at the first DML.
        # Like PostgreSQL's advisory lock, it waits for the migration ahead of it however long
        # that takes; the connection's usual wait is restored when the transaction ends.
        await conn.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_WAIT_MS}")
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def _release_migration_wait(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        await conn.commit()


async def require_current(engine: AsyncEngine) -> None:
    """Raise `StoreNotMigrated` unless the schema is at this code's newest revision.

    A schema newer than this code (a revision it does not know) is accepted: during a
    rolling deploy the new release migrates first, and the old workers still run on it.
    """
    async with engine.connect() as conn:
        current = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise StoreNotMigrated(f"the store at {where} has no schema yet: {MIGRATE_HINT}")
    if current in {rev.revision for rev in script.walk_revisions()}:
        raise StoreNotMigrated(
            f"the store at {where} is at revision {current}, this q2c needs {head}: {MIGRATE_HINT}"
        )
