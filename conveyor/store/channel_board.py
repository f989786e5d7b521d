"""The dashboard's cells per channel computed from the deployments' history: what migration 0021
fills ``dashboard_channels`` with, and what retention writes back for a cell whose deployment
it deleted. The server keeps the rows as deployments change (``runs.project``); this is the
same answer read from history: per project, environment and channel (by key), the latest
deployment, the one before it, and the last success."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain.documents import key
from conveyor.store import tables as t

D, R = t.deployments.c, t.releases.c
Cells = dict[tuple[int, int, str], dict[str, Any]]


def _history(pair: tuple[int, int] | None) -> tuple[Select[Any], Select[Any]]:
    """The two newest deployments of each (project, environment, stored channel name), and the
    newest success of each; of one pair, or of all."""
    joined = t.deployments.join(t.releases, R.id == D.release_id)
    where = [] if pair is None else [D.project_id == pair[0], D.environment_id == pair[1]]
    ranked = (
        select(
            D.id,
            D.project_id,
            D.environment_id,
            D.release_id,
            D.state,
            D.task_id,
            D.completed_at,
            R.version,
            R.channel,
            func.row_number()
            .over(partition_by=(D.project_id, D.environment_id, R.channel), order_by=D.id.desc())
            .label("n"),
        )
        .select_from(joined)
        .where(*where)
        .subquery()
    )
    newest = select(ranked).where(ranked.c.n <= 2)
    last_success = (
        select(func.max(D.id))
        .select_from(joined)
        .where(*where, D.state == "success")
        .group_by(D.project_id, D.environment_id, R.channel)
    )
    successes = (
        select(D.project_id, D.environment_id, D.release_id, R.version, R.channel)
        .select_from(joined)
        .where(D.id.in_(last_success.scalar_subquery()))
        .order_by(D.id)
    )
    return newest, successes


def _cells(newest: Iterable[Any], successes: Iterable[Any], now: datetime) -> Cells:
    """One row per (project, environment, channel key): stored names that are one key (a
    channel renamed "beta" -> "Beta") are one line, as the dashboard reads them."""
    ranked: dict[tuple[int, int, str], list[Any]] = {}
    for r in newest:
        ranked.setdefault((r.project_id, r.environment_id, key(r.channel)), []).append(r)
    out: Cells = {}
    for (project_id, environment_id, channel), rows in ranked.items():
        rows.sort(key=lambda r: r.id, reverse=True)
        current = rows[0]
        out[(project_id, environment_id, channel)] = {
            "project_id": project_id,
            "environment_id": environment_id,
            "channel": channel,
            "deployment_id": current.id,
            "release_id": current.release_id,
            "release_version": current.version,
            "state": current.state,
            "task_id": current.task_id,
            "completed_at": current.completed_at,
            "previous_deployment_id": rows[1].id if len(rows) > 1 else None,
            "success_release_id": None,
            "success_version": None,
            "updated_at": now,
        }
    for s in successes:  # oldest first: the newest success of a key is written last
        cell = out.get((s.project_id, s.environment_id, key(s.channel)))
        if cell is not None:
            cell["success_release_id"] = s.release_id
            cell["success_version"] = s.version
    return out


def rebuild_sync(connection: Connection, now: datetime) -> int:
    """Fill the (empty) table from history on a synchronous connection (migration 0021, the
    benchmark's bulk load); how many rows."""
    newest, successes = _history(None)
    cells = _cells(connection.execute(newest), connection.execute(successes), now)
    rows = list(cells.values())
    for start in range(0, len(rows), 5000):
        connection.execute(t.dashboard_channels.insert(), rows[start : start + 5000])
    return len(rows)


async def rewrite(
    session: AsyncSession, now: datetime, stale: Sequence[tuple[int, int, str]]
) -> None:
    """Write these cells anew from history (retention deleted a deployment they pointed at):
    a cell whose channel has no deployment left in that environment goes."""
    c = t.dashboard_channels.c
    for project_id, environment_id, channel in sorted(set(stale)):
        await session.execute(
            delete(t.dashboard_channels).where(
                c.project_id == project_id,
                c.environment_id == environment_id,
                c.channel == channel,
            )
        )
    for pair in sorted({(p, e) for p, e, _ in stale}):
        newest, successes = _history(pair)
        cells = _cells(
            (await session.execute(newest)).all(), (await session.execute(successes)).all(), now
        )
        rows = [cells[k] for k in sorted(set(stale)) if k[:2] == pair and k in cells]
        if rows:
            await session.execute(t.dashboard_channels.insert(), rows)
