"""The outbox's life after the event: claim what is due, record each attempt, list outcomes.

A node claims due deliveries with a lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so nodes never
claim the same row), sends them, and records the outcome in a transaction of its own right after
the receiver answered: a delivery acknowledged is never sent again; one caught mid-send by a
crash is sent again after the restart (at least once until acknowledged).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from conveyor.domain import permissions as perms
from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.domain.subscriptions import backoff
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.store import tables as t

STATES = ("pending", "succeeded", "failed")
MAX_ERROR = 2000
D = t.deliveries


@dataclass(frozen=True)
class Due:
    id: int
    channel: str
    target: str
    payload: dict[str, Any]
    attempts: int
    event_id: int | None

    @property
    def public_id(self) -> str:
        return public_id("deliveries", self.id)


async def claim(services: Services, node: str, lease: timedelta, limit: int = 10) -> list[Due]:
    """Lease the deliveries that are due and held by no live node; each claim is an attempt."""
    async with services.write() as session:
        now = services.clock()
        query = (
            select(D)
            .where(
                D.c.state == "pending",
                D.c.next_attempt_at <= now,
                or_(D.c.lease_expires_at.is_(None), D.c.lease_expires_at < now),
            )
            .order_by(D.c.next_attempt_at, D.c.id)
            .limit(limit)
        )
        if not services.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = (await session.execute(query)).all()
        if rows:
            await session.execute(
                update(D)
                .where(D.c.id.in_([r.id for r in rows]))
                .values(node=node, lease_expires_at=now + lease, attempts=D.c.attempts + 1)
            )
    return [
        Due(r.id, r.channel, r.target, dict(r.payload), r.attempts + 1, r.event_id) for r in rows
    ]


async def succeeded(services: Services, due: Due, node: str) -> None:
    async with services.write() as session:
        await session.execute(
            update(D)
            .where(D.c.id == due.id, D.c.node == node, D.c.state == "pending")
            .values(
                state="succeeded",
                completed_at=services.clock(),
                node=None,
                lease_expires_at=None,
                last_error=None,
            )
        )


async def failed(
    services: Services, due: Due, node: str, error: str, *, final: bool = False
) -> str:
    """Record a failed attempt: try again after a doubling wait, or give up (at the last
    attempt, or at once when ``final``: trying again cannot help); the new state."""
    settings = services.settings
    now = services.clock()
    values: dict[str, Any] = {
        "node": None,
        "lease_expires_at": None,
        "last_error": error[:MAX_ERROR],
    }
    if final or due.attempts >= settings.delivery_attempts:
        values |= {"state": "failed", "completed_at": now}
    else:
        wait = backoff(due.attempts, settings.delivery_backoff_seconds)
        values["next_attempt_at"] = now + timedelta(seconds=wait)
    async with services.write() as session:
        await session.execute(
            update(D)
            .where(D.c.id == due.id, D.c.node == node, D.c.state == "pending")
            .values(values)
        )
    return str(values.get("state", "pending"))


async def release(services: Services, node: str) -> int:
    """At start-up: what this node leased before it stopped is not being sent; free it now."""
    async with services.write() as session:
        result = await session.execute(
            update(D)
            .where(D.c.state == "pending", D.c.node == node)
            .values(node=None, lease_expires_at=None)
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def next_due(services: Services) -> datetime | None:
    """When the earliest pending delivery falls due (to sleep until then, not poll)."""
    async with services.read() as session:
        value = (
            await session.execute(
                select(func.min(D.c.next_attempt_at)).where(D.c.state == "pending")
            )
        ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


# ---------------------------------------------------------------- listing


def _view(row: Any) -> dict[str, Any]:
    payload = row.payload or {}
    return {
        "id": public_id("deliveries", row.id),
        "event": public_id("events", row.event_id) if row.event_id else None,
        "reason": row.reason,
        "subscription": row.subscription,
        "channel": row.channel,
        "recipient": row.recipient,
        "target": row.target,
        "subject": payload.get("subject") if row.channel == "email" else None,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created": iso(row.created_at),
        "next_attempt": iso(row.next_attempt_at) if row.state == "pending" else None,
        "completed": iso(row.completed_at),
    }


async def list_deliveries(
    services: Services,
    caller: Caller,
    *,
    state: str | None = None,
    subscription: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; needs SubscriptionView (addresses and what was said are shown)."""
    decision = perms.authorize(caller.principal, perms.Permission.SubscriptionView)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission="SubscriptionView")
    if state is not None and state not in STATES:
        raise ValidationFailed(f'"{state}" is not a delivery state: use {", ".join(STATES)}')
    query = select(D).order_by(D.c.id.desc()).limit(max(1, min(limit, 1000)))
    if state:
        query = query.where(D.c.state == state)
    if subscription:
        query = query.where(D.c.subscription == subscription)
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    return [_view(r) for r in rows]
