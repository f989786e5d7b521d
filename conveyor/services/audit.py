"""Reading the audit log: filters, the reader's scope, keyset paging, and the verification of
the hash chain (the streamed export builds on this: ``conveyor.services.audit_export``).

Every query is bounded and served by an index: newest first by id with a cursor, the reader's
scope as a SQL condition computed from their grants (never by loading events to discard them),
and a time range turned into an id range (event times grow with ids: see ``write_event``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, literal, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import ids
from conveyor.domain import permissions as perms
from conveyor.domain.audit import (
    DESCRIPTIONS,
    Category,
    ChainCheck,
    EventRecord,
    event_scopes,
    public,
    sees_everything,
)
from conveyor.domain.documents import key
from conveyor.domain.errors import NotFound, PermissionDenied, ValidationFailed
from conveyor.services.core import Caller, Services, iso
from conveyor.store import tables as t

P = perms.Permission
E = t.events.c
PAGE = 50
MAX_PAGE = 500
# Rows per query when streaming an export or walking the chain: memory stays flat.
CHUNK = 1000
# An id beyond any event: the open end of an id range.
NO_END = 2**62
_CATEGORIES = {c.value.lower(): c for c in Category}
# The actor of what the engine does, for itself or for a person (services.core.system_caller).
SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Filters:
    """AND across fields, OR within a field; empty means no filter on that field."""

    since: datetime | None = None
    until: datetime | None = None
    users: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Names:
    """Names of the projects and environments events refer to by id."""

    projects: dict[int, str]
    environments: dict[int, str]


PROJECT_GROUP = t.projects.c.body["group"].as_string()


async def names_of(session: AsyncSession, rows: Sequence[Any] | None = None) -> Names:
    """The names of every project and environment, or (given rows) of those the rows name, in
    one query: a page then costs the same with 5 projects or 5,000."""
    p, e = t.projects.c, t.environments.c
    projects = select(literal("p").label("kind"), p.id, p.name)
    environments = select(literal("e").label("kind"), e.id, e.name)
    if rows is not None:
        projects = projects.where(p.id.in_({r.project_id for r in rows if r.project_id}))
        environments = environments.where(
            e.id.in_({r.environment_id for r in rows if r.environment_id})
        )
    found = (await session.execute(union_all(projects, environments))).all()
    return Names(
        {r.id: r.name for r in found if r.kind == "p"},
        {r.id: r.name for r in found if r.kind == "e"},
    )


def event_json(row: Any, names: Names) -> dict[str, Any]:
    return {
        "id": public(row.id),
        "occurred": iso(row.occurred_at),
        "category": row.category,
        "actor": row.actor,
        "on_behalf_of": row.on_behalf_of,
        "ip_address": row.ip_address,
        "user_agent": row.user_agent,
        "message": row.message,
        "documents": list(row.documents or ()),
        "project": names.projects.get(row.project_id) if row.project_id else None,
        "environment": (names.environments.get(row.environment_id) if row.environment_id else None),
        "details": row.details,
        # The raw ids the hash also covers, so that anyone can check an export's hashes.
        "actor_id": row.actor_id,
        "project_id": row.project_id,
        "environment_id": row.environment_id,
        "hash": row.hash,
        "prev_hash": row.prev_hash,
    }


def parse_cursor(value: str | None, field: str = "before") -> int | None:
    """``"Events-120"`` or ``"120"`` -> 120; a refusal names ``field``."""
    if value is None or value == "":
        return None
    return ids.require_cursor(t.ID_PREFIXES["events"], value, field)


# ---------------------------------------------------------------- filters and scope


async def _scope(session: AsyncSession, caller: Caller) -> ColumnElement[bool]:
    """The events the caller may read, as a condition on project_id and environment_id."""
    if sees_everything(caller.principal):
        return true()
    p, e = t.projects.c, t.environments.c
    projects = (await session.execute(select(p.id, p.name, PROJECT_GROUP.label("grp")))).all()
    environments = (await session.execute(select(e.id, e.name))).all()
    refs = [perms.ProjectRef(r.name, r.grp or "") for r in projects]
    scopes = event_scopes(caller.principal, refs, [r.name for r in environments])
    if scopes is None:  # pragma: no cover - sees_everything said otherwise
        return true()
    if not scopes:
        decision = perms.authorize(caller.principal, P.EventView)
        raise PermissionDenied(decision.reason, permission=str(P.EventView))
    project_ids = {r.name: r.id for r in projects}
    environment_ids = {r.name: r.id for r in environments}
    terms = []
    for scope in scopes:
        parts: list[ColumnElement[bool]] = []
        if scope.projects is not None:
            parts.append(E.project_id.in_([project_ids[n] for n in scope.projects]))
        if scope.environments is not None:
            parts.append(E.environment_id.in_([environment_ids[n] for n in scope.environments]))
        terms.append(and_(*parts))
    return or_(*terms)


async def _ids(session: AsyncSession, kind: str, wanted: Sequence[str]) -> list[int]:
    """Ids of projects or environments named by name or slug (any case)."""
    table = t.projects if kind == "project" else t.environments
    slugs = {key(w): w for w in wanted}
    rows = (
        await session.execute(select(table.c.id, table.c.slug).where(table.c.slug.in_(slugs)))
    ).all()
    missing = set(slugs) - {r.slug for r in rows}
    if missing:
        raise NotFound(f'{kind} "{slugs[sorted(missing)[0]]}" does not exist')
    return [r.id for r in rows]


def _categories(wanted: Sequence[str]) -> list[str]:
    out = []
    for name in wanted:
        category = _CATEGORIES.get(name.strip().lower())
        if category is None:
            raise ValidationFailed(
                f'"{name}" is not an event category; `GET /api/v1/events/categories` lists them: '
                + ", ".join(c.value for c in Category)
            )
        out.append(category.value)
    return out


async def _users(session: AsyncSession, wanted: Sequence[str]) -> ColumnElement[bool]:
    """By user id where the user exists (indexed); by name for "system", "anonymous" and the
    users that no longer exist."""
    terms: list[ColumnElement[bool]] = []
    for name in wanted:
        row = (
            await session.execute(select(t.users.c.id).where(t.users.c.slug == key(name)))
        ).first()
        if row is not None:
            # Who acted: the engine acting for the user (actor "system", with on_behalf_of)
            # carries their id for their permissions, but is the engine's (docs/audit.md).
            terms.append(and_(E.actor_id == row.id, E.actor != SYSTEM_ACTOR))
        else:
            terms.append(func.lower(E.actor) == name.strip().lower())
    return or_(*terms)


def _first_id_from(moment: datetime) -> Any:
    """The id of the first event at or after ``moment``: one probe of the time index."""
    return (
        select(E.id)
        .where(E.occurred_at >= moment)
        .order_by(E.occurred_at, E.id)
        .limit(1)
        .scalar_subquery()
    )


async def conditions(
    session: AsyncSession, caller: Caller, filters: Filters
) -> list[ColumnElement[bool]]:
    """The reader's scope and the filters, as SQL conditions on ``events``."""
    where: list[ColumnElement[bool]] = [await _scope(session, caller)]
    if filters.since is not None:
        where += [E.occurred_at >= filters.since, E.id >= _first_id_from(filters.since)]
    if filters.until is not None:
        end = func.coalesce(_first_id_from(filters.until), NO_END)
        where += [E.occurred_at < filters.until, E.id < end]
    if filters.since and filters.until and filters.until <= filters.since:
        where.append(false())
    if filters.users:
        where.append(await _users(session, filters.users))
    if filters.categories:
        where.append(E.category.in_(_categories(filters.categories)))
    if filters.projects:
        where.append(E.project_id.in_(await _ids(session, "project", filters.projects)))
    if filters.environments:
        ids = await _ids(session, "environment", filters.environments)
        where.append(E.environment_id.in_(ids))
    if filters.documents:
        docs = t.event_documents.c
        concerned = select(docs.event_id).where(docs.document.in_(list(filters.documents)))
        where.append(E.id.in_(concerned))
    return where


# ---------------------------------------------------------------- listing


async def list_events(
    services: Services,
    caller: Caller,
    filters: Filters = Filters(),
    *,
    limit: int = PAGE,
    before: str | None = None,
    after: str | None = None,
) -> dict[str, Any]:
    """A page of events, newest first; ``next`` is the cursor for the page after it (older),
    ``newer`` the cursor (for ``after``) of the page before it, if there is one. ``after``
    pages towards the newest: the ``limit`` events just after it, still newest first."""
    if limit < 1 or limit > MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
    cursor = parse_cursor(before)
    newer_than = parse_cursor(after, "after") if cursor is None else None
    async with services.read() as session:
        where = await conditions(session, caller, filters)
        if newer_than is not None:
            query = select(t.events).where(*where, E.id > newer_than)
            rows = (await session.execute(query.order_by(E.id).limit(limit + 1))).all()
            newer = len(rows) > limit
            rows = list(reversed(rows[:limit]))
            more = bool(rows) and await _any(session, where, E.id < rows[-1].id)
        else:
            if cursor is not None:
                where.append(E.id < cursor)
            query = select(t.events).where(*where).order_by(E.id.desc()).limit(limit + 1)
            rows = (await session.execute(query)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            newer = (
                cursor is not None
                and bool(rows)
                and await _any(session, where[:-1], E.id > rows[0].id)
            )
        names = await names_of(session, rows)
    return {
        "events": [event_json(r, names) for r in rows],
        "next": public(rows[-1].id) if more else None,
        "newer": public(rows[0].id) if newer else None,
    }


async def _any(
    session: AsyncSession, where: list[ColumnElement[bool]], beyond: ColumnElement[bool]
) -> bool:
    """Whether any event matches ``where`` beyond a page's edge: one probe of the primary key."""
    found = await session.execute(select(E.id).where(*where, beyond).limit(1))
    return found.first() is not None


# ---------------------------------------------------------------- the chain


def record(row: Any) -> EventRecord:
    return EventRecord(
        id=row.id,
        occurred_at=row.occurred_at,
        category=row.category,
        actor_id=row.actor_id,
        actor=row.actor,
        on_behalf_of=row.on_behalf_of,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
        message=row.message,
        project_id=row.project_id,
        environment_id=row.environment_id,
        documents=list(row.documents or ()),
        details=row.details if isinstance(row.details, dict) else {"": row.details},
        hash=row.hash,
        prev_hash=row.prev_hash,
    )


async def verify_chain(services: Services, caller: Caller) -> dict[str, Any]:
    """Walk the whole chain in id order; the first event altered, removed or inserted, if any.

    The whole log is the question, so the reader needs EventView everywhere (or
    AdministerSystem): a scoped reader would learn about events outside their scope.
    """
    unscoped = sees_everything(caller.principal)
    if not unscoped and not perms.authorize(caller.principal, P.AdministerSystem).allowed:
        decision = perms.authorize(caller.principal, P.EventView)
        reason = (
            f"{caller.username} may read only part of the audit log; verifying the chain needs "
            "EventView on every project and environment (or AdministerSystem)"
            if decision.allowed
            else decision.reason
        )
        raise PermissionDenied(reason, permission=str(P.EventView))
    check = ChainCheck()
    after = 0
    while True:
        async with services.read() as session:
            query = select(t.events).where(E.id > after).order_by(E.id).limit(CHUNK)
            rows = (await session.execute(query)).all()
        if not rows or not check.feed(record(r) for r in rows):
            break
        after = rows[-1].id
    head = check.head
    finding = check.finding
    return {
        "intact": finding is None,
        "count": check.count,
        "unchained": check.unchained,
        "head": {"id": public(head.id), "hash": head.hash} if head is not None else None,
        "first_bad": public(finding.event_id) if finding else None,
        "problem": finding.kind if finding else None,
        "message": finding.message if finding else f"intact: {check.count} events",
    }


def categories() -> list[dict[str, str]]:
    return [{"category": c.value, "description": DESCRIPTIONS[c]} for c in Category]


async def export_events(
    services: Services, caller: Caller, fmt: str, filters: Filters = Filters()
) -> AsyncIterator[str]:
    """CSV or JSON Lines, streamed: see ``conveyor.services.audit_export``."""
    from conveyor.services import audit_export  # it builds on this module

    return await audit_export.export_events(services, caller, fmt, filters)
