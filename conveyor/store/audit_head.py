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
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor.store import tables as t


def _from_events() -> dict[str, Any]:
    """The head as the events say it is: the newest one's id, hash and time."""
    events = t.events.c
    newest = select(events.hash, events.occurred_at).order_by(events.id.desc()).limit(1)
    return {
        "last_id": select(func.coalesce(func.max(events.id), 0)).scalar_subquery(),
        "last_hash": newest.with_only_columns(events.hash).scalar_subquery(),
        "last_occurred_at": newest.with_only_columns(events.occurred_at).scalar_subquery(),
    }


def catch_up(connection: Connection) -> None:
    """Point the head at the newest event, in the caller's transaction."""
    connection.execute(update(t.audit_head).where(t.audit_head.c.id == 1).values(_from_events()))


def restore_audit_head(*, postgres: bool) -> Any:
    """The head row made again from the events, when it is missing (tables emptied by hand);
    does nothing when another transaction made it first."""
    head = _from_events()
    insert = pg_insert if postgres else sqlite_insert
    return (
        insert(t.audit_head)
        .from_select(["id", *head], select(literal(1), *head.values()))
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


def append(
    rows: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]]
) -> tuple[Executable, dict[str, Any]]:
    """The statement that appends ``rows`` (events, oldest first) and ``links``, and moves the
    head to the last row, and its parameters."""
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):
        params.update({f"{column}_{i}": row[column] for column in _EVENT_COLUMNS})
    for j, link in enumerate(links):
        params[f"event_id_{j}"] = link["event_id"]
        params[f"document_{j}"] = link["document"]
    last = rows[-1]
    params.update(head_id=last["id"], head_hash=last["hash"], head_at=last["occurred_at"])
    return _append(len(rows), len(links)), params


# One event in one round trip (PostgreSQL): the head is locked and read, the event takes the
# next id, a time no earlier than the head's and the head's hash as its previous one, its hash
# is computed here from its canonical form cut around those three (`domain.audit.
# canonical_parts`), and the event, its documents and the new head are written. A row lock
# waited for in READ COMMITTED hands back the row as the transaction before left it, so two
# appenders never read the same head.
_APPEND_ONE = text(
    """
WITH head AS (
    SELECT last_id, last_hash, last_occurred_at FROM audit_head WHERE id = 1 FOR UPDATE
), following AS (
    SELECT last_id + 1 AS id,
           GREATEST(CAST(:now AS timestamptz),
                    COALESCE(last_occurred_at, CAST(:now AS timestamptz))) AS at,
           COALESCE(last_hash, :genesis) AS prev
    FROM head
), hashed AS (
    SELECT id, at, prev,
           encode(sha256(convert_to(
               :before_id || id::text
               || :before_time || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || :before_prev || prev || :rest, 'UTF8')), 'hex') AS hash
    FROM following
), appended AS (
    INSERT INTO events (id, occurred_at, category, actor_id, actor, on_behalf_of, ip_address,
                        user_agent, message, project_id, environment_id, documents, details,
                        hash, prev_hash)
    SELECT id, at, :category, :actor_id, :actor, :on_behalf_of, :ip_address, :user_agent,
           :message, :project_id, :environment_id, :documents, :details, hash, prev
    FROM hashed
), concerning AS (
    INSERT INTO event_documents (event_id, document)
    SELECT hashed.id, document FROM hashed, unnest(CAST(:links AS varchar[])) AS document
), moved AS (
    UPDATE audit_head SET last_id = hashed.id, last_hash = hashed.hash, last_occurred_at = hashed.at
    FROM hashed WHERE audit_head.id = 1
)
SELECT id, at, hash, prev,
       (SELECT revision FROM config_revision WHERE id = 1) AS config_revision
FROM hashed
"""
).bindparams(
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("documents", type_=JSON()),
    bindparam("details", type_=JSON()),
)


def append_one(
    row: Mapping[str, Any], parts: Any, now: Any, genesis: str
) -> tuple[Executable, dict[str, Any]]:
    """The statement appending one event, and its parameters (``row``: its fields, less the
    three the head gives; ``parts``: its `CanonicalParts`); it returns id, at, hash, prev and
    the configuration revision, or no row when the head is missing. The parameters go to
    ``execute`` rather than into the statement: binding them there copied it on every event."""
    return _APPEND_ONE, dict(
        now=now,
        genesis=genesis,
        before_id=parts.before_id,
        before_time=parts.before_time,
        before_prev=parts.before_prev,
        rest=parts.rest,
        links=list(row["documents"]),
        **{k: row[k] for k in _ONE_FIELDS},
    )


_ONE_FIELDS = (
    "category",
    "actor_id",
    "actor",
    "on_behalf_of",
    "ip_address",
    "user_agent",
    "message",
    "project_id",
    "environment_id",
    "documents",
    "details",
)
