"""The org's state in one SQLite file, so a restarted stand-in still knows its records,
sessions, open query cursors and the last webhook event of each record (an opportunity's
Closed Won, a change order's approval)."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from standins.salesforce.schema import make_id

#: Salesforce keeps a query cursor for 15 minutes of inactivity.
CURSOR_TTL_S = 15 * 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serials (prefix TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sobject TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_sobject ON records (sobject);
CREATE TABLE IF NOT EXISTS sessions (token TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    locator TEXT PRIMARY KEY,
    records TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    touched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (opportunity_id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        # One connection, used only from the event loop's thread.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- org identity

    def meta(self, key: str, default: str) -> str:
        """A value fixed on first start (org id, user id) and kept across restarts."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, default))
        return default

    # -- records

    def new_id(self, prefix: str) -> str:
        """Ids are unique within the org and, as in Salesforce, not shared with other orgs:
        each org numbers from its own random base (two stand-ins in one test session must not
        hand out the same opportunity id)."""
        base = int(self.meta("id_base", str(secrets.randbelow(62**8))))
        return make_id(prefix, base + self.next_serial(prefix))

    def next_serial(self, key: str) -> int:
        """1, 2, 3... per key: id serials by key prefix, auto-number names by object."""
        row = self.db.execute(
            "INSERT INTO serials (prefix, n) VALUES (?, 1) "
            "ON CONFLICT (prefix) DO UPDATE SET n = n + 1 RETURNING n",
            (key,),
        ).fetchone()
        return int(row[0])

    def get(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute(
            "SELECT sobject, data FROM records WHERE id = ?", (record_id,)
        ).fetchone()
        if row is None:
            return None
        return str(row[0]), json.loads(row[1])

    def insert(self, sobject: str, record: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO records (id, sobject, data) VALUES (?, ?, ?)",
            (record["Id"], sobject, json.dumps(record)),
        )

    def replace(self, record: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE records SET data = ? WHERE id = ?", (json.dumps(record), record["Id"])
        )

    def delete(self, record_id: str) -> None:
        self.db.execute("DELETE FROM records WHERE id = ?", (record_id,))

    def all(self, sobject: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT data FROM records WHERE sobject = ? ORDER BY seq", (sobject,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def where(self, sobject: str, field: str, value: str) -> list[dict[str, Any]]:
        """Records whose `field` equals `value`, ignoring case as external ids do."""
        rows = self.db.execute(
            "SELECT data FROM records WHERE sobject = ? "
            "AND lower(json_extract(data, '$.' || ?)) = lower(?) ORDER BY seq",
            (sobject, field, value),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- sessions

    def add_session(self, token: str, expires_at: float) -> None:
        self.db.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
        self.db.execute(
            "INSERT INTO sessions (token, expires_at) VALUES (?, ?)", (token, expires_at)
        )

    def session_valid(self, token: str) -> bool:
        row = self.db.execute(
            "SELECT expires_at FROM sessions WHERE token = ?", (token,)
        ).fetchone()
        return row is not None and float(row[0]) > time.time()

    def expire_sessions(self) -> int:
        return self.db.execute("DELETE FROM sessions").rowcount

    # -- query cursors

    def open_cursor(self, records: list[dict[str, Any]], batch_size: int) -> str:
        now = time.time()
        self.db.execute("DELETE FROM cursors WHERE touched_at < ?", (now - CURSOR_TTL_S,))
        locator = "01g" + secrets.token_hex(6).upper() + "IAW"
        self.db.execute(
            "INSERT INTO cursors (locator, records, batch_size, touched_at) VALUES (?, ?, ?, ?)",
            (locator, json.dumps(records), batch_size, now),
        )
        return locator

    def read_cursor(self, locator: str) -> tuple[list[dict[str, Any]], int] | None:
        now = time.time()
        row = self.db.execute(
            "SELECT records, batch_size, touched_at FROM cursors WHERE locator = ?", (locator,)
        ).fetchone()
        if row is None or float(row[2]) < now - CURSOR_TTL_S:
            return None
        self.db.execute("UPDATE cursors SET touched_at = ? WHERE locator = ?", (now, locator))
        return json.loads(row[0]), int(row[1])

    # -- webhook events

    # The column says opportunity_id for the files older stand-ins wrote; it holds any
    # record's id (an opportunity's, a change order's).

    def save_event(self, opportunity_id: str, body: str) -> None:
        self.db.execute(
            "INSERT INTO webhook_events (opportunity_id, body) VALUES (?, ?) "
            "ON CONFLICT (opportunity_id) DO UPDATE SET body = excluded.body",
            (opportunity_id, body),
        )

    def last_event(self, opportunity_id: str) -> str | None:
        row = self.db.execute(
            "SELECT body FROM webhook_events WHERE opportunity_id = ?", (opportunity_id,)
        ).fetchone()
        return None if row is None else str(row[0])
