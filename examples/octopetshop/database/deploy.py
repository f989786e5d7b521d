"""Octo Pet Shop database deployment: apply pending SQL migrations to a SQLite file.

Run from the extracted package folder:  OCTOPETSHOP_DB=/path/to/shop.sqlite python3 deploy.py

Migrations are the files migrations/*.sql, applied in file-name order. Each one runs in its
own transaction together with its row in schema_migrations(name, applied_at), so a failing
migration leaves no trace and is retried by the next deployment. Migration files must not
contain BEGIN/COMMIT themselves. Exit codes: 0 ok, 1 a migration failed, 2 bad setup.
"""

import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# A statement that would end our transaction early (after any leading comments).
TRANSACTION_CONTROL = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*(BEGIN|COMMIT|END|ROLLBACK)\b", re.I | re.S
)


def statements(sql: str) -> Iterator[str]:
    """Split a script into complete SQL statements (semicolons in strings/triggers are safe)."""
    start = 0
    for i, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : i + 1]):
            yield sql[start : i + 1]
            start = i + 1
    if sql[start:].strip():
        yield sql[start:]  # last statement without a semicolon (or only a trailing comment)


def apply(conn: sqlite3.Connection, path: Path) -> bool:
    """Apply one migration atomically; return False when it was already applied."""
    conn.execute("BEGIN IMMEDIATE")  # takes the write lock: concurrent deploys wait here
    try:
        if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (path.name,)).fetchone():
            conn.execute("ROLLBACK")
            return False
        for statement in statements(path.read_text(encoding="utf-8")):
            if TRANSACTION_CONTROL.match(statement):
                raise RuntimeError("migrations must not contain BEGIN, COMMIT or ROLLBACK")
            conn.execute(statement)
        applied_at = datetime.now(UTC).isoformat(timespec="seconds")
        conn.execute(
            "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
            (path.name, applied_at),
        )
        conn.execute("COMMIT")
        return True
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def main() -> int:
    db = os.environ.get("OCTOPETSHOP_DB", "").strip()
    if not db:
        print("error: OCTOPETSHOP_DB is not set (path of the SQLite file)", file=sys.stderr)
        return 2
    files = sorted(MIGRATIONS.glob("*.sql"))
    if not files:
        print(f"error: no migrations found in {MIGRATIONS}", file=sys.stderr)
        return 2
    try:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot open database {db}: {exc}", file=sys.stderr)
        return 2
    try:
        for path in files:
            try:
                applied = apply(conn, path)
            except (OSError, UnicodeDecodeError, RuntimeError, sqlite3.Error) as exc:
                print(f"failed {path.name}: {exc}", file=sys.stderr, flush=True)
                return 1
            print(f"{'applied' if applied else 'already applied'} {path.name}", flush=True)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
