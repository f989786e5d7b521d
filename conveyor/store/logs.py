"""Writing task log lines: one statement for a whole round of the node's log writer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.store import tables as t

COLUMNS = ("task_id", "at", "step", "target", "level", "line")

# PostgreSQL: five arrays in one INSERT (no per-row statement, no per-row parameters); the
# ordinality keeps each task's lines in the order given, so ids grow as the lines were logged.
_UNNEST = text(
    "INSERT INTO task_logs (task_id, at, step, target, level, line) "
    "SELECT task_id, at, step, target, level, line FROM unnest("
    "CAST(:task_id AS bigint[]), CAST(:at AS timestamptz[]), CAST(:step AS integer[]), "
    "CAST(:target AS varchar[]), CAST(:level AS varchar[]), CAST(:line AS text[])"
    ") WITH ORDINALITY AS u(task_id, at, step, target, level, line, n) ORDER BY n"
)


async def insert_lines(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (task_id, at, step, target, level, line) in order, in the session's
    transaction; a row without a target is about no target."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_UNNEST, {c: [row.get(c) for row in rows] for c in COLUMNS})
    else:  # SQLite: one prepared statement executed for every row, in C
        await session.execute(
            t.task_logs.insert(), [{c: row.get(c) for c in COLUMNS} for row in rows]
        )
