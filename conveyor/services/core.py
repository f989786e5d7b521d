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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from conveyor.domain import permissions as perms
from conveyor.domain.audit import (
    GENESIS,
    IP_MAX,
    USER_AGENT_MAX,
    Category,
    EventRecord,
    canonical_parts,
    event_hash,
    plain_json,
)
from conveyor.domain.errors import PermissionDenied
from conveyor.services import outbox
from conveyor.services.credentials import Passwords
from conveyor.services.secrets import SecretBox, load_or_create_key
from conveyor.settings import Settings
from conveyor.store import tables as t
from conveyor.store.audit_head import append as append_events
from conveyor.store.audit_head import append_one, restore_audit_head
from conveyor.store.db import create_engine_for, sessionmaker_for
from conveyor.store.documents import revision_column

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
    # Events to append when the transaction's work is done (see ``flush_events``).
    events: list[PendingEvent] = field(default_factory=list)
    woke: bool = False
    # The events queued notifications (the outbox): wake the senders after the commit.
    outboxed: bool = False

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
    ) -> None:
        self.events.append(
            PendingEvent(
                category, message, documents or [], details or {}, project_id, environment_id
            )
        )

    async def flush_events(self) -> None:
        """Append this transaction's events, just before it commits: the chain lock is then the
        last lock it takes (no deadlock with row locks taken earlier) and is held briefly."""
        events, self.events = self.events, []
        queued = await write_event(
            self.session,
            self.caller,
            events,
            self.now,
            postgres=not self.services.is_sqlite,
            services=self.services,
        )
        self.outboxed = self.outboxed or bool(queued)


def aware(value: datetime) -> datetime:
    """A time read back from the database: SQLite gives it without its zone, and it is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def write_event(
    session: AsyncSession,
    caller: Caller,
    events: list[PendingEvent],
    now: datetime,
    *,
    postgres: bool,
    services: Services | None = None,
) -> int:
    """Append events to the hash chain: each one's ``prev_hash`` is the hash of the event before.

    Ids are assigned here (the last id + 1, under the lock of the chain's head row) so that they
    have no gaps: a gap in the chain then means an event was removed. On PostgreSQL one event
    is one round trip (the head locked, the event hashed and written, the head moved); several
    are two. With ``services``, the notifications the events cause are queued in the same
    transaction (the outbox), with the configuration revision read alongside; returns how many.
    """
    if not events:
        return 0
    records = [_record(caller, event, now) for event in events]
    if postgres and len(records) == 1:  # the common case: one event, one round trip
        appended = await _append_one(session, records[0], now)
        records, revision = [appended[0]], appended[1]
    else:
        records, revision = await _append_many(session, records, now, postgres=postgres)
    if services is None:
        return 0
    # The configuration revision, read with the chain's head: the outbox then takes the
    # subscriptions from the cached model instead of a query of its own.
    return await outbox.enqueue(session, services, records, revision)


def _record(caller: Caller, event: PendingEvent, now: datetime) -> EventRecord:
    """The event as it will be stored, less what the chain's head gives it (id and time are
    placeholders until then)."""
    return EventRecord(
        id=0,
        occurred_at=now,
        category=str(event.category),
        actor_id=caller.user_id,
        actor=caller.username,
        on_behalf_of=caller.on_behalf_of,
        ip_address=caller.ip_address[:IP_MAX] if caller.ip_address else None,
        user_agent=caller.user_agent[:USER_AGENT_MAX] if caller.user_agent else None,
        message=event.message,
        project_id=event.project_id,
        environment_id=event.environment_id,
        documents=sorted(set(event.documents)),
        details=plain_json(event.details),
    )


def _row(record: EventRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "occurred_at": record.occurred_at,
        "category": record.category,
        "actor_id": record.actor_id,
        "actor": record.actor,
        "on_behalf_of": record.on_behalf_of,
        "ip_address": record.ip_address,
        "user_agent": record.user_agent,
        "message": record.message,
        "project_id": record.project_id,
        "environment_id": record.environment_id,
        "documents": list(record.documents),
        "details": record.details,
        "hash": record.hash,
        "prev_hash": record.prev_hash,
    }


async def _append_one(
    session: AsyncSession, record: EventRecord, now: datetime
) -> tuple[EventRecord, int | None]:
    """PostgreSQL, one event: the head locked and read, the event hashed and written with its
    documents, and the head moved, in one statement (`store.audit_head.append_one`)."""
    statement, params = append_one(_row(record), canonical_parts(record), now, GENESIS)
    found = (await session.execute(statement, params)).first()
    if found is None:  # tables emptied by hand (a test's TRUNCATE): the head follows the events
        await session.execute(restore_audit_head(postgres=True))
        found = (await session.execute(statement, params)).one()
    stored = replace(
        record, id=int(found.id), occurred_at=found.at, hash=found.hash, prev_hash=found.prev
    )
    return stored, found.config_revision


async def _append_many(
    session: AsyncSession, pending: list[EventRecord], now: datetime, *, postgres: bool
) -> tuple[list[EventRecord], int | None]:
    """Several events (or SQLite): the head locked and read, then the events hashed here and
    written with their documents and the new head (one statement on PostgreSQL)."""
    head = t.audit_head.c
    locked = (
        select(head.last_id, head.last_hash, head.last_occurred_at, revision_column())
        .where(head.id == 1)
        .with_for_update()
    )
    last = (await session.execute(locked)).one_or_none()
    if last is None:  # tables emptied by hand (a test's TRUNCATE): the head follows the events
        await session.execute(restore_audit_head(postgres=postgres))
        last = (await session.execute(locked)).one()
    prev = last.last_hash or GENESIS
    # Never earlier than the event before: time then grows with the id, so that a time range
    # is an id range (the audit filters rely on it).
    occurred = max(now, aware(last.last_occurred_at)) if last.last_occurred_at else now
    records: list[EventRecord] = []
    for offset, record in enumerate(pending):
        placed = replace(record, id=last.last_id + 1 + offset, occurred_at=occurred)
        digest = event_hash(placed, prev)
        records.append(replace(placed, hash=digest, prev_hash=prev))
        prev = digest
    rows = [_row(record) for record in records]
    links = [{"event_id": r.id, "document": d} for r in records for d in r.documents]
    if postgres:  # one statement: the events, their documents and the new head
        await session.execute(*append_events(rows, links))
    else:  # SQLite: statements in process, no round trips to save
        await session.execute(insert(t.events), rows)
        if links:
            await session.execute(insert(t.event_documents), links)
        await session.execute(
            update(t.audit_head)
            .where(head.id == 1)
            .values(last_id=records[-1].id, last_hash=prev, last_occurred_at=occurred)
        )
    return records, last.config_revision


class Services:
    """Everything a process needs to serve requests: engine, sessions, secrets, settings."""

    def __init__(self, settings: Settings, engine: AsyncEngine, box: SecretBox) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = sessionmaker_for(engine)
        self.box = box
        # Hashing parameters come from the settings (cheap ones only in the test suite).
        self.passwords = Passwords.for_settings(settings)
        self.is_sqlite = settings.is_sqlite
        # SQLite has one writer: queue writers in-process instead of meeting "database is locked".
        self._write_lock = asyncio.Lock()
        self.clock: Callable[[], datetime] = utcnow
        # In-process engines to wake after a commit that queued or resumed a task.
        self.wakers: list[Callable[[], None]] = []
        # In-process senders to wake after a commit that queued notifications.
        self.delivery_wakers: list[Callable[[], None]] = []

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
                        await tx.flush_events()
                except PermissionDenied:
                    await self._write_refusals(tx)
                    raise
        finally:
            if self.is_sqlite:
                self._write_lock.release()
        if tx is not None and tx.woke:
            for hook in list(self.wakers):
                hook()
        if tx is not None and tx.outboxed:
            for hook in list(self.delivery_wakers):
                hook()

    async def _write_refusals(self, tx: Tx) -> None:
        if not tx.refusals:
            return
        async with self.sessions() as session, session.begin():
            queued = await write_event(
                session, tx.caller, tx.refusals, tx.now, postgres=not self.is_sqlite, services=self
            )
        if queued:
            for hook in list(self.delivery_wakers):
                hook()


def bootstrap(settings: Settings) -> Services:
    """Build the real object graph for a process (server, CLI admin command, test)."""
    engine = create_engine_for(
        settings.resolved_database_url, settings.database_connections, settings.lease_seconds
    )
    box = SecretBox(load_or_create_key(settings))
    return Services(settings, engine, box)
