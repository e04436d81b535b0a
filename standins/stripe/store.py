"""The stand-in's state: Stripe objects as JSON rows in one SQLite file.

Every request runs synchronously between `begin()` and `commit()` on the event loop's
thread, so requests never interleave inside a transaction; the file survives restarts.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_type ON objects (type, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (account, key)
);
"""


@dataclass(frozen=True)
class StoredResult:
    """The first answer given for an idempotency key."""

    endpoint: str
    fingerprint: str
    status: int
    body: str
    request_id: str


_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

#: Filter value meaning "the field is null" (pending invoice items have no invoice).
IS_NULL = object()


class Store:
    def __init__(self, path: str | Path) -> None:
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # Transactions

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # Objects

    def get(self, object_id: str, type_: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT body FROM objects WHERE id = ? AND type = ?", (object_id, type_)
        ).fetchone()
        return None if row is None else _load(row[0])

    def insert(self, obj: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO objects (id, type, body) VALUES (?, ?, ?)",
            (obj["id"], obj["object"], json.dumps(obj)),
        )

    def save(self, obj: dict[str, Any]) -> None:
        self.conn.execute("UPDATE objects SET body = ? WHERE id = ?", (json.dumps(obj), obj["id"]))

    def delete(self, object_id: str) -> None:
        self.conn.execute("DELETE FROM objects WHERE id = ?", (object_id,))

    def seq_of(self, object_id: str, type_: str) -> int | None:
        row = self.conn.execute(
            "SELECT seq FROM objects WHERE id = ? AND type = ?", (object_id, type_)
        ).fetchone()
        return None if row is None else int(row[0])

    def find(
        self,
        type_: str,
        filters: dict[str, Any] | None = None,
        *,
        newest_first: bool = True,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        one_of: dict[str, list[Any]] | None = None,
        ranges: dict[str, dict[str, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a type whose top-level fields equal `filters`, in creation order.

        `one_of` keeps objects whose field is one of the values; `ranges` those whose
        field compares as asked (`{"created": {"gte": 1700000000}}`, ops gt gte lt lte).
        `after_seq`/`before_seq` follow the listing direction: "after" means further
        down the list, so older objects when `newest_first`.
        """
        where = ["type = ?"]
        args: list[Any] = [type_]
        for field, values in (one_of or {}).items():
            marks = ", ".join("?" for _ in values) or "NULL"
            where.append(f"json_extract(body, '$.{field}') IN ({marks})")
            args.extend(values)
        for field, bounds in (ranges or {}).items():
            for op, bound in bounds.items():
                where.append(f"json_extract(body, '$.{field}') {_RANGE_OPS[op]} ?")
                args.append(bound)
        for field, value in (filters or {}).items():
            if value is IS_NULL:
                where.append(f"json_extract(body, '$.{field}') IS NULL")
            else:
                where.append(f"json_extract(body, '$.{field}') = ?")
                args.append(int(value) if isinstance(value, bool) else value)
        if after_seq is not None:
            where.append("seq < ?" if newest_first else "seq > ?")
            args.append(after_seq)
        if before_seq is not None:
            where.append("seq > ?" if newest_first else "seq < ?")
            args.append(before_seq)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT body FROM objects WHERE {' AND '.join(where)} ORDER BY seq {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_load(row[0]) for row in self.conn.execute(sql, args)]

    # Idempotency

    def idempotent_result(self, account: str, key: str, *, since: float) -> StoredResult | None:
        row = self.conn.execute(
            "SELECT endpoint, fingerprint, status, body, request_id FROM idempotency"
            " WHERE account = ? AND key = ? AND created >= ?",
            (account, key, since),
        ).fetchone()
        return None if row is None else StoredResult(*row)

    def keep_result(
        self,
        account: str,
        key: str,
        *,
        endpoint: str,
        fingerprint: str,
        status: int,
        body: str,
        request_id: str,
        now: float,
    ) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO idempotency"
            " (account, key, endpoint, fingerprint, status, body, request_id, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (account, key, endpoint, fingerprint, status, body, request_id, now),
        )


def _load(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value
