"""The server nodes: each records its heartbeat; administrators list them with what they run.

Several `conveyor server` processes on one database are one system; this is how an
administrator sees it. Viewing nodes needs ``AdministerSystem`` (Octopus: "configuring ... server
nodes"): node names are host names, internal to the installation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor.domain import permissions as perms
from conveyor.domain.errors import PermissionDenied
from conveyor.domain.nodes import NodeStatus, connection_shortfall
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.store import tables as t

P = perms.Permission
N = t.nodes.c


async def heartbeat(services: Services, name: str, slots: int, *, starting: bool = False) -> None:
    """Record that node ``name`` is alive with ``slots`` task slots (bookkeeping: no audit)."""
    now = services.clock()
    insert = sqlite_insert if services.is_sqlite else pg_insert
    values: dict[str, Any] = {"slots": slots, "heartbeat_at": now}
    if starting:
        values["started_at"] = now
    statement = (
        insert(t.nodes)
        .values(name=name, slots=slots, started_at=now, heartbeat_at=now)
        .on_conflict_do_update(index_elements=[N.name], set_=values)
    )
    async with services.write() as session:
        await session.execute(statement)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for what was stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def node_statuses(services: Services) -> list[NodeStatus]:
    async with services.read() as session:
        rows = (await session.execute(select(t.nodes).order_by(N.name))).all()
        running = (
            await session.execute(
                select(t.tasks.c.node, t.tasks.c.id)
                .where(t.tasks.c.state == "executing", t.tasks.c.node.is_not(None))
                .order_by(t.tasks.c.id)
            )
        ).all()
    by_node: dict[str, list[int]] = {}
    for node, task_id in running:
        by_node.setdefault(node, []).append(int(task_id))
    return [
        NodeStatus(
            name=r.name,
            slots=int(r.slots),
            started=_utc(r.started_at),
            heartbeat=_utc(r.heartbeat_at),
            running=tuple(by_node.get(r.name, ())),
        )
        for r in rows
    ]


async def list_nodes(services: Services, caller: Caller) -> list[dict[str, Any]]:
    """Every node that ever ran on this database, alive first then by name."""
    decision = perms.authorize(caller.principal, P.AdministerSystem)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.AdministerSystem))
    now = services.clock()
    lapse = timedelta(seconds=services.settings.lease_seconds)
    statuses = await node_statuses(services)
    statuses.sort(key=lambda s: (not s.alive(now, lapse), s.name))
    return [
        {
            "name": s.name,
            "heartbeat": iso(s.heartbeat),
            "slots": s.slots,
            "running": len(s.running),
            "tasks": [public_id("tasks", task_id) for task_id in s.running],
            "alive": s.alive(now, lapse),
            "started": iso(s.started),
        }
        for s in statuses
    ]


async def connection_warning(services: Services) -> str | None:
    """On PostgreSQL: whether the nodes alive now, this one included, may together open more
    connections than the database allows (each node checks when it starts)."""
    if services.is_sqlite:
        return None
    now = services.clock()
    lapse = timedelta(seconds=services.settings.lease_seconds)
    async with services.read() as session:
        allowed = int((await session.execute(text("SHOW max_connections"))).scalar_one())
    alive = sum(1 for s in await node_statuses(services) if s.alive(now, lapse))
    return connection_shortfall(allowed, max(alive, 1), services.settings.database_connections)
