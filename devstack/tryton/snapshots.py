"""Snapshots of a set-up database, and the marker that says it is set up.

A marker records the bootstrap's result and the digest of what shaped it
(`inputs_digest`); a snapshot carries its marker along.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from devstack.tryton.reference import DEFAULT_LEGAL_ENTITIES, DEFAULT_TAX_RATES
from devstack.tryton.result import BootstrapResult
from devstack.tryton.server import (
    database_exists,
    database_path,
    marker_path,
    modules_digest,
)


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


def inputs_digest(
    legal_entities: Path = DEFAULT_LEGAL_ENTITIES, tax_rates: Path = DEFAULT_TAX_RATES
) -> str:
    """What shapes a bootstrapped database: a change re-runs the bootstrap (and the tests
    build a new snapshot).

    That is the bootstrap's code (`bootstrapping`, and `result`, the marker's shape), the
    reference data (`reference` and the settings files it reads) and the modules (their
    list and q2c's module's code, `modules_digest`). Nothing else: the server's start-up,
    snapshots and period helpers may change without a new snapshot. Installed Tryton
    versions are the test cache's concern (`tests/fixtures/tryton.py`).
    """
    from devstack.tryton import bootstrapping, reference, result

    digest = hashlib.sha256()
    for module in (bootstrapping, reference, result):
        digest.update(Path(module.__file__ or "").read_bytes())
    for path in (legal_entities, tax_rates):
        digest.update(path.read_bytes())
    digest.update(modules_digest().encode())
    return digest.hexdigest()


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
