"""The head of the audit chain (`tables.audit_head`), for loaders that bypass the services.

Events are appended by `conveyor.services.core.write_event`, which moves the head in the same
statement. A tool that loads events in bulk (a benchmark, a test filling a large log) moves it
once at the end with `catch_up`, or the next event would take an id already used.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor.store import tables as t

_CATCH_UP = text(
    "UPDATE audit_head SET "
    "last_id = COALESCE((SELECT MAX(id) FROM events), 0), "
    "last_hash = (SELECT hash FROM events ORDER BY id DESC LIMIT 1), "
    "last_occurred_at = (SELECT occurred_at FROM events ORDER BY id DESC LIMIT 1) "
    "WHERE id = 1"
)


def catch_up(connection: Connection) -> None:
    """Point the head at the newest event, in the caller's transaction."""
    connection.execute(_CATCH_UP)


def restore_audit_head(*, postgres: bool) -> Any:
    """The head row made again from the events, when it is missing (tables emptied by hand);
    does nothing when another transaction made it first."""
    events = t.events.c
    newest = select(events.hash, events.occurred_at).order_by(events.id.desc()).limit(1)
    made = select(
        literal(1),
        select(func.coalesce(func.max(events.id), 0)).scalar_subquery(),
        newest.with_only_columns(events.hash).scalar_subquery(),
        newest.with_only_columns(events.occurred_at).scalar_subquery(),
    )
    insert = pg_insert if postgres else sqlite_insert
    return (
        insert(t.audit_head)
        .from_select(["id", "last_id", "last_hash", "last_occurred_at"], made)
        .on_conflict_do_nothing()
    )
