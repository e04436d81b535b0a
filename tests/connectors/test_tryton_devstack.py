"""The dev stack's Tryton helpers that need no running server."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from devstack import tryton as devtryton
from tests.fixtures.tryton import DATABASE, TrytonServer


def test_config_listens_on_loopback_and_keeps_sqlite_in_the_folder(tmp_path: Path) -> None:
    conf = devtryton.write_config(tmp_path, port=18123, database="q2c")
    text = conf.read_text()
    assert "listen = 127.0.0.1:18123" in text
    assert f"path = {tmp_path.resolve()}" in text
    assert "uri = sqlite://" in text
    argv = devtryton.server_argv(conf, "q2c")
    assert argv[-2:] == ["-d", "q2c"]
    # trytond run by q2c's interpreter, whose virtualenv holds trytond and q2c's module.
    assert argv[:4] == [sys.executable, "-m", "devstack.tryton", "trytond"]


def test_restored_snapshot_is_bootstrapped_and_not_recreated(
    tryton: TrytonServer,
    tmp_path: Path,
) -> None:
    snapshot = devtryton.snapshot(tryton.folder, DATABASE, tmp_path / "copy.sqlite")
    folder = tmp_path / "stack"
    folder.mkdir()
    db = devtryton.database_path(folder, DATABASE)
    # Leftovers of an earlier server would replay old rows over the restored database.
    stale_wal = db.with_name(db.name + "-wal")
    stale_wal.write_bytes(b"stale")
    devtryton.restore(snapshot, folder, DATABASE)
    assert not stale_wal.exists()
    assert devtryton.is_bootstrapped(folder, DATABASE)
    assert devtryton.read_bootstrap(folder, DATABASE) == tryton.bootstrap

    size = db.stat().st_size
    devtryton.prepare(folder, port=18124, database=DATABASE, admin_password="unused")
    assert db.stat().st_size == size  # an existing database is kept, not rebuilt
    assert not (folder / devtryton.ADMIN_LOG_NAME).exists()
    with sqlite3.connect(db) as conn:
        (companies,) = conn.execute("SELECT count(*) FROM company_company").fetchone()
    conn.close()
    assert companies == len(devtryton.load_legal_entities()) == 5


async def test_ensure_bootstrapped_trusts_the_marker(
    tryton: TrytonServer,
) -> None:
    # No server answers on this port: the marker alone must do.
    result = await devtryton.ensure_bootstrapped(
        tryton.folder, "http://127.0.0.1:9", database=DATABASE, admin_password="unused"
    )
    assert result == tryton.bootstrap


def test_legal_entities_come_from_the_settings_file() -> None:
    entities = devtryton.load_legal_entities()
    assert {code: e.currency for code, e in entities.items()} == {
        "NW-US": "USD",
        "NW-CA": "CAD",
        "NW-UK": "GBP",
        "NW-DE": "EUR",
        "NW-AU": "AUD",
    }
    assert entities["NW-UK"].name == "Northwind Consulting Ltd"
    assert entities["NW-UK"].country == "GB"


async def test_a_marker_of_an_older_shape_runs_the_bootstrap_again(
    tryton: TrytonServer, tmp_path: Path
) -> None:
    # A dev stack set up before legal entities: one company, its marker of that time.
    folder = tmp_path / "stack"
    folder.mkdir()
    devtryton.database_path(folder, DATABASE).touch()
    old = {"company_id": 1, "company_party_id": 1, "employee_ids": {"Ada Lovelace": 1}}
    devtryton.marker_path(folder, DATABASE).write_text(json.dumps(old))
    result = await devtryton.ensure_bootstrapped(
        folder, tryton.url, database=DATABASE, admin_password=tryton.password
    )
    assert result == tryton.bootstrap
    assert devtryton.read_bootstrap(folder, DATABASE) == tryton.bootstrap


def test_a_database_made_before_q2c_module_gets_it_when_prepared(
    tryton: TrytonServer, tmp_path: Path
) -> None:
    snapshot = devtryton.snapshot(tryton.folder, DATABASE, tmp_path / "copy.sqlite")
    folder = tmp_path / "stack"
    devtryton.restore(snapshot, folder, DATABASE)
    with sqlite3.connect(devtryton.database_path(folder, DATABASE)) as conn:
        conn.execute("UPDATE ir_module SET state = 'not activated' WHERE name = 'q2c'")
    conn.close()
    assert devtryton.missing_modules(folder, DATABASE) == [devtryton.Q2C_MODULE]

    devtryton.prepare(folder, port=18125, database=DATABASE, admin_password="unused")
    assert devtryton.missing_modules(folder, DATABASE) == []
    assert "-u q2c" in (folder / devtryton.ADMIN_LOG_NAME).read_text()


def test_an_existing_postgresql_database_is_reused_and_its_marker_is_its_own(
    tryton_postgres: TrytonServer, tmp_path: Path
) -> None:
    uri, database = tryton_postgres.database_uri, tryton_postgres.database
    folder = tmp_path / "tryton"
    conf = devtryton.prepare(
        folder, port=18126, database=database, admin_password="unused", database_uri=uri
    )
    assert f"uri = {uri}" in conf.read_text()
    assert not (folder / devtryton.ADMIN_LOG_NAME).exists()
    assert devtryton.database_exists(folder, database, uri)
    assert not devtryton.database_path(folder, database).exists()
    # What the SQLite database's marker says is no proof the PostgreSQL one is set up.
    devtryton.mark_bootstrapped(folder, database, tryton_postgres.bootstrap)
    assert not devtryton.is_bootstrapped(folder, database, uri)
    devtryton.mark_bootstrapped(folder, database, tryton_postgres.bootstrap, uri)
    assert devtryton.is_bootstrapped(folder, database, uri)
    assert devtryton.read_bootstrap(folder, database, uri) == tryton_postgres.bootstrap


def test_the_digest_covers_what_shapes_the_database_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devstack.tryton import server

    read: list[Path] = []
    real_read_bytes = Path.read_bytes

    def recording(self: Path) -> bytes:
        read.append(self)
        return real_read_bytes(self)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "read_bytes", recording)
        base = devtryton.inputs_digest()
    # The bootstrap's code, its reference data and settings files, q2c's module.
    names = {p.name for p in read if "trytond_q2c" not in p.parts}
    assert names == {
        "bootstrapping.py",
        "reference.py",
        "result.py",
        "legal_entities.toml",
        "tax_rates.toml",
    }
    assert any(p.name == "tryton.cfg" and "trytond_q2c" in p.parts for p in read)
    assert devtryton.inputs_digest() == base  # stable

    rates = tmp_path / "tax_rates.toml"
    rates.write_text(devtryton.DEFAULT_TAX_RATES.read_text() + "\n# edited\n")
    assert devtryton.inputs_digest(tax_rates=rates) != base
    monkeypatch.setattr(server, "MODULES", (*server.MODULES, "analytic_account"))
    assert devtryton.inputs_digest() != base


def test_q2c_module_is_declared_once_as_an_installed_module_declares_itself() -> None:
    # trytond takes a module from exactly one `trytond.modules` entry point of its name.
    from trytond.tools.misc import entry_points, import_module

    from connectors.tryton import trytond_q2c

    (entry,) = entry_points().select(group="trytond.modules", name=devtryton.Q2C_MODULE)
    assert entry.value == trytond_q2c.__name__
    assert import_module(devtryton.Q2C_MODULE) is trytond_q2c
