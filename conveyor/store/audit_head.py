"""The head of the audit chain (`tables.audit_head`) and the statement that appends to it.

Events are appended by `conveyor.services.core.write_event` (with `append` on PostgreSQL),
which moves the head in the same statement. A tool that loads events in bulk (a benchmark, a
test filling a large log) moves it once at the end with `catch_up`, or the next event would
take an id already used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Executable,
    TextClause,
    bindparam,
    func,
    literal,
    select,
    text,
)
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


_EVENT_COLUMNS = tuple(c.name for c in t.events.columns)
_TYPED: dict[str, Any] = {
    "occurred_at": DateTime(timezone=True),
    "documents": JSON(),
    "details": JSON(),
}


@lru_cache(maxsize=64)
def _append(events: int, links: int) -> TextClause:
    """PostgreSQL: ``events`` events, ``links`` document links and the new head in one
    statement. Plain SQL made once per shape: built as an expression, the statement was
    constructed and compiled again on every event and cost more than its round trip."""
    rows = ", ".join(
        "(" + ", ".join(f":{c}_{i}" for c in _EVENT_COLUMNS) + ")" for i in range(events)
    )
    sql = f"WITH appended AS (INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES {rows})"
    if links:
        pairs = ", ".join(f"(:event_id_{j}, :document_{j})" for j in range(links))
        sql += f", concerning AS (INSERT INTO event_documents (event_id, document) VALUES {pairs})"
    sql += (
        " UPDATE audit_head SET last_id = :head_id, last_hash = :head_hash,"
        " last_occurred_at = :head_at WHERE id = 1"
    )
    typed = [
        bindparam(f"{column}_{i}", type_=kind)
        for i in range(events)
        for column, kind in _TYPED.items()
    ]
    return text(sql).bindparams(*typed, bindparam("head_at", type_=DateTime(timezone=True)))


def append(rows: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]]) -> Executable:
    """The statement that appends ``rows`` (events, oldest first) and ``links``, and moves the
    head to the last row, with its parameters bound."""
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):
        params.update({f"{column}_{i}": row[column] for column in _EVENT_COLUMNS})
    for j, link in enumerate(links):
        params[f"event_id_{j}"] = link["event_id"]
        params[f"document_{j}"] = link["document"]
    last = rows[-1]
    params.update(head_id=last["id"], head_hash=last["hash"], head_at=last["occurred_at"])
    return _append(len(rows), len(links)).bindparams(**params)
