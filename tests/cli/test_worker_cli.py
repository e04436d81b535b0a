"""`q2c worker` and `q2c service` refuse what they cannot run on, in one line that says what
to do: an unknown task queue, a store `q2c store migrate` has not migrated."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from service.app import create_app
from settings import Settings
from store import Store, StoreNotMigrated

runner = CliRunner()
NOT_MIGRATED = re.compile(r"^error: the store at \S+ has no schema yet: run `q2c store migrate`$")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "Q2C_STATE_DIR": str(tmp_path / ".q2c"),
        "Q2C_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}",
        # Nothing listens here: the worker must refuse before it looks for Temporal.
        "Q2C_TEMPORAL_ADDRESS": "127.0.0.1:9",
        "COLUMNS": "250",
    }


def test_an_unknown_queue_is_a_usage_error_naming_the_queues_served(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["worker", "--queues", "q2c,q2c-hubspot"], env=env)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --queues: unknown task queue 'q2c-hubspot': "
        "this deployment serves q2c, q2c-tryton, q2c-stripe, q2c-salesforce"
    )


def test_a_worker_on_an_unmigrated_store_says_to_migrate(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["worker"], env=env)
    assert result.exit_code == 1, result.output
    assert NOT_MIGRATED.match(result.stderr.strip()), result.stderr


def test_store_migrate_twice_leaves_a_current_store(env: dict[str, str]) -> None:
    migrated = runner.invoke(app, ["store", "migrate"], env=env)
    again = runner.invoke(app, ["store", "migrate"], env=env)

    assert migrated.exit_code == 0 and again.exit_code == 0, migrated.output + again.output
    assert "store migrated" in migrated.stdout

    async def check() -> None:
        store = Store.from_url(env["Q2C_DATABASE_URL"])
        try:
            await store.require_migrated()  # what the worker and the service check
        finally:
            await store.close()

    asyncio.run(check())


async def test_a_service_on_an_unmigrated_store_does_not_start(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'q2c.sqlite'}"
    )
    app_ = create_app(settings)
    with pytest.raises(StoreNotMigrated, match=r"run `q2c store migrate`"):
        async with app_.router.lifespan_context(app_):
            pass
