"""The composition root and the unit of work every service operation runs in.

A write is: open a transaction, authorise, validate, change, append the audit event, commit.
A refused attempt at a protected action is itself audited, in a transaction of its own, because
the one it happened in is rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.errors import PermissionDenied
from conveyor.services.secrets import SecretBox, load_or_create_key
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.db import create_engine_for, sessionmaker_for

log = logging.getLogger("conveyor")

# Advisory lock key that serialises configuration writes on PostgreSQL.
CONFIG_LOCK = 7_010_001


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes for what was stored in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class Caller:
    """Who is asking, with what they may do, and where the request came from."""

    user_id: int | None
    username: str
    principal: perms.Principal
    ip_address: str | None = None
    user_agent: str | None = None
    # Set when the system acts for a person (a child deployment, an automatic deployment).
    on_behalf_of: str | None = None
    is_system: bool = False


def system_caller(on_behalf_of: str | None = None) -> Caller:
    """The system itself (start-up, the engine): every permission, attributed as 'system'."""
    grant = perms.Grant(
        team="(system)", role="System Administrator", permissions=frozenset(perms.Permission)
    )
    return Caller(
        user_id=None,
        username="system",
        principal=perms.Principal("system", True, (grant,)),
        on_behalf_of=on_behalf_of,
        is_system=True,
    )


@dataclass
class PendingEvent:
    category: Category
    message: str
    documents: list[str]
    details: dict[str, Any]
    project_id: int | None
    environment_id: int | None


@dataclass
class Tx:
    """One transaction on behalf of one caller."""

    session: AsyncSession
    caller: Caller
    services: Services
    now: datetime = field(default_factory=utcnow)
    # Refusals to audit even though this transaction rolls back.
    refusals: list[PendingEvent] = field(default_factory=list)
    woke: bool = False

    async def wake(self) -> None:
        """Wake the task engines when this transaction commits (it queued or resumed work)."""
        self.woke = True
        if not self.services.is_sqlite:
            # Delivered by PostgreSQL at commit, to every node that listens.
            await self.session.execute(text("NOTIFY conveyor_tasks"))

    def check(
        self,
        permission: perms.Permission | str,
        *,
        project: perms.ProjectRef | None = None,
        project_group: str | None = None,
        environment: str | None = None,
    ) -> perms.Decision:
        return perms.authorize(
            self.caller.principal,
            permission,
            project=project,
            project_group=project_group,
            environment=environment,
        )

    def require(
        self,
        permission: perms.Permission | str,
        *,
        project: perms.ProjectRef | None = None,
        project_group: str | None = None,
        environment: str | None = None,
        documents: list[str] | None = None,
        project_id: int | None = None,
        environment_id: int | None = None,
        audit_refusal: bool = True,
    ) -> None:
        decision = self.check(
            permission, project=project, project_group=project_group, environment=environment
        )
        if decision.allowed:
            return
        if audit_refusal and not str(permission).endswith("View"):
            self.refusals.append(
                PendingEvent(
                    Category.ACCESS_DENIED,
                    f"{self.caller.username} was refused {decision.permission}: {decision.reason}",
                    documents or [],
                    {
                        "permission": str(decision.permission),
                        "project": project.name if project else None,
                        "environment": environment,
                        "reason": decision.reason,
                    },
                    project_id,
                    environment_id,
                )
            )
        raise PermissionDenied(
            decision.reason,
            permission=str(decision.permission),
            project=project.name if project else None,
            environment=environment,
        )

    async def audit(
        self,
        category: Category,
        message: str,
        *,
        documents: list[str] | None = None,
        details: dict[str, Any] | None = None,
        project_id: int | None = None,
        environment_id: int | None = None,
    ) -> int:
        return await write_event(
            self.session,
            self.caller,
            PendingEvent(
                category, message, documents or [], details or {}, project_id, environment_id
            ),
            self.now,
        )


async def write_event(
    session: AsyncSession, caller: Caller, event: PendingEvent, now: datetime
) -> int:
    result = await session.execute(
        insert(t.events)
        .values(
            occurred_at=now,
            category=str(event.category),
            actor_id=caller.user_id,
            actor=caller.username,
            on_behalf_of=caller.on_behalf_of,
            ip_address=caller.ip_address,
            user_agent=caller.user_agent[:400] if caller.user_agent else None,
            message=event.message,
            project_id=event.project_id,
            environment_id=event.environment_id,
            documents=sorted(set(event.documents)),
            details=event.details,
        )
        .returning(t.events.c.id)
    )
    event_id = int(result.scalar_one())
    docs = sorted(set(event.documents))
    if docs:
        await session.execute(
            insert(t.event_documents), [{"event_id": event_id, "document": d} for d in docs]
        )
    return event_id


class Services:
    """Everything a process needs to serve requests: engine, sessions, secrets, settings."""

    def __init__(self, settings: Settings, engine: AsyncEngine, box: SecretBox) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = sessionmaker_for(engine)
        self.box = box
        self.is_sqlite = settings.is_sqlite
        # SQLite has one writer: queue writers in-process instead of meeting "database is locked".
        self._write_lock = asyncio.Lock()
        self.clock: Callable[[], datetime] = utcnow
        # In-process engines to wake after a commit that queued or resumed a task.
        self.wakers: list[Callable[[], None]] = []

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A bare write transaction for bookkeeping that needs no audit (last use of a key)."""
        if self.is_sqlite:
            await self._write_lock.acquire()
        try:
            async with self.sessions() as session, session.begin():
                yield session
        finally:
            if self.is_sqlite:
                self._write_lock.release()

    @asynccontextmanager
    async def tx(self, caller: Caller, *, config: bool = False) -> AsyncIterator[Tx]:
        """A write transaction; ``config=True`` also serialises configuration writers."""
        if self.is_sqlite:
            await self._write_lock.acquire()
        tx: Tx | None = None
        try:
            async with self.sessions() as session:
                tx = Tx(session, caller, self, now=self.clock())
                try:
                    async with session.begin():
                        if config and not self.is_sqlite:
                            await session.execute(
                                text("SELECT pg_advisory_xact_lock(:k)"), {"k": CONFIG_LOCK}
                            )
                        yield tx
                except PermissionDenied:
                    await self._write_refusals(tx)
                    raise
        finally:
            if self.is_sqlite:
                self._write_lock.release()
        if tx is not None and tx.woke:
            for hook in list(self.wakers):
                hook()

    async def _write_refusals(self, tx: Tx) -> None:
        if not tx.refusals:
            return
        async with self.sessions() as session, session.begin():
            for event in tx.refusals:
                await write_event(session, tx.caller, event, tx.now)


def bootstrap(settings: Settings) -> Services:
    """Build the real object graph for a process (server, CLI admin command, test)."""
    engine = create_engine_for(settings.resolved_database_url)
    box = SecretBox(load_or_create_key(settings))
    return Services(settings, engine, box)
