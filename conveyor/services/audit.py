"""Reading the audit log: filters, the reader's scope, keyset paging, streamed export, and the
verification of the hash chain.

Every query is bounded and served by an index: newest first by id with a cursor, the reader's
scope as a SQL condition computed from their grants (never by loading events to discard them),
and a time range turned into an id range (event times grow with ids: see ``write_event``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain.audit import (
    DESCRIPTIONS,
    Category,
    ChainCheck,
    EventRecord,
    event_scopes,
    public,
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
CSV_COLUMNS = (
    "id",
    "occurred",
    "category",
    "actor",
    "on_behalf_of",
    "ip_address",
    "user_agent",
    "message",
    "project",
    "environment",
    "documents",
    "details",
    "hash",
    "prev_hash",
)
_CATEGORIES = {c.value.lower(): c for c in Category}


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
    """Project and environment ids and names: what scope and filters are resolved with."""

    projects: dict[int, str]
    environments: dict[int, str]
    project_refs: tuple[perms.ProjectRef, ...]
    project_ids: dict[str, int]
    environment_ids: dict[str, int]


async def names_of(session: AsyncSession) -> Names:
    projects: dict[int, str] = {}
    project_ids: dict[str, int] = {}
    refs: list[perms.ProjectRef] = []
    rows = await session.execute(select(t.projects.c.id, t.projects.c.name, t.projects.c.body))
    for row in rows:
        projects[row.id] = row.name
        project_ids[key(row.name)] = row.id
        refs.append(perms.ProjectRef(row.name, str((row.body or {}).get("group", ""))))
    environments: dict[int, str] = {}
    environment_ids: dict[str, int] = {}
    env_rows = await session.execute(select(t.environments.c.id, t.environments.c.name))
    for env in env_rows:
        environments[env.id] = env.name
        environment_ids[key(env.name)] = env.id
    return Names(projects, environments, tuple(refs), project_ids, environment_ids)


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


def parse_cursor(value: str | None) -> int | None:
    """``"Events-120"`` or ``"120"`` -> 120."""
    if value is None or value == "":
        return None
    number = value.rsplit("-", 1)[-1]
    if not number.isascii() or not number.isdigit() or len(number) > 18:
        raise ValidationFailed(f'"{value}" is not an event id (they look like Events-120)')
    return int(number)


# ---------------------------------------------------------------- filters and scope


def _scope(caller: Caller, names: Names) -> ColumnElement[bool]:
    """The events the caller may read, as a condition on project_id and environment_id."""
    scopes = event_scopes(caller.principal, names.project_refs, list(names.environments.values()))
    if scopes is None:
        return true()
    if not scopes:
        decision = perms.authorize(caller.principal, P.EventView)
        raise PermissionDenied(decision.reason, permission=str(P.EventView))
    terms = []
    for scope in scopes:
        parts: list[ColumnElement[bool]] = []
        if scope.projects is not None:
            ids = [names.project_ids[key(n)] for n in scope.projects if key(n) in names.project_ids]
            parts.append(E.project_id.in_(ids))
        if scope.environments is not None:
            ids = [
                names.environment_ids[key(n)]
                for n in scope.environments
                if key(n) in names.environment_ids
            ]
            parts.append(E.environment_id.in_(ids))
        terms.append(and_(*parts))
    return or_(*terms)


def _ids(kind: str, wanted: Sequence[str], known: dict[str, int]) -> list[int]:
    missing = [w for w in wanted if key(w) not in known]
    if missing:
        raise NotFound(f'{kind} "{missing[0]}" does not exist')
    return [known[key(w)] for w in wanted]


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
            terms.append(E.actor_id == row.id)
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
    session: AsyncSession, caller: Caller, filters: Filters, names: Names
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [_scope(caller, names)]
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
        where.append(E.project_id.in_(_ids("project", filters.projects, names.project_ids)))
    if filters.environments:
        ids = _ids("environment", filters.environments, names.environment_ids)
        where.append(E.environment_id.in_(ids))
    if filters.documents:
        docs = t.event_documents.c
        concerned = select(docs.event_id).where(docs.document.in_(list(filters.documents)))
        where.append(E.id.in_(concerned))
    return where


# ---------------------------------------------------------------- listing and export


async def list_events(
    services: Services,
    caller: Caller,
    filters: Filters = Filters(),
    *,
    limit: int = PAGE,
    before: str | None = None,
) -> dict[str, Any]:
    """A page of events, newest first; ``next`` is the cursor for the page after it."""
    if limit < 1 or limit > MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
    cursor = parse_cursor(before)
    async with services.read() as session:
        names = await names_of(session)
        where = await conditions(session, caller, filters, names)
        if cursor is not None:
            where.append(E.id < cursor)
        query = select(t.events).where(*where).order_by(E.id.desc()).limit(limit + 1)
        rows = (await session.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "events": [event_json(r, names) for r in rows],
        "next": public(rows[-1].id) if more else None,
    }


def csv_row(event: dict[str, Any]) -> list[str]:
    values = {
        **event,
        "documents": " ".join(event["documents"]),
        "details": json.dumps(event["details"], sort_keys=True, separators=(",", ":")),
    }
    return ["" if values[c] is None else str(values[c]) for c in CSV_COLUMNS]


async def export_events(
    services: Services, caller: Caller, fmt: str, filters: Filters = Filters()
) -> AsyncIterator[str]:
    """The events as CSV or JSON Lines, oldest first (chain order), streamed in chunks.

    Permission and filters are checked now, so that a refusal is an error and not a broken
    stream; the rows are read later, ``CHUNK`` at a time, up to the newest event of now.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValidationFailed(f'format must be csv or jsonl, not "{fmt}"')
    async with services.read() as session:
        names = await names_of(session)
        where = await conditions(session, caller, filters, names)
        newest = (await session.execute(select(func.max(E.id)))).scalar_one() or 0
    return _stream(services, fmt, where, names, newest)


# The export reads the JSON columns as their text and writes it through as is: decoding and
# encoding a kilobyte of details per event would cost more than everything else together.
_EXPORTED = (
    E.id,
    E.occurred_at,
    E.category,
    E.actor,
    E.on_behalf_of,
    E.ip_address,
    E.user_agent,
    E.message,
    E.project_id,
    E.environment_id,
    E.actor_id,
    E.hash,
    E.prev_hash,
    cast(E.documents, Text),
    cast(E.details, Text),
)


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _number(value: int | None) -> str:
    return "null" if value is None else str(value)


def _jsonl(row: Any, names: Names) -> str:
    """One line, written directly (a fraction of the allocations of json.dumps of a dict)."""
    (ident, occurred, category, actor, behalf, ip, agent, message) = row[:8]
    (project_id, env_id, actor_id, digest, prev, documents, details) = row[8:]
    project = names.projects.get(project_id) if project_id else None
    environment = names.environments.get(env_id) if env_id else None
    return (
        f'{{"id": "{public(ident)}", "occurred": {_text(iso(occurred))}, '
        f'"category": {_text(category)}, "actor": {_text(actor)}, '
        f'"on_behalf_of": {_text(behalf)}, "ip_address": {_text(ip)}, '
        f'"user_agent": {_text(agent)}, "message": {_text(message)}, '
        f'"project": {_text(project)}, "environment": {_text(environment)}, '
        f'"actor_id": {_number(actor_id)}, "project_id": {_number(project_id)}, '
        f'"environment_id": {_number(env_id)}, "hash": {_text(digest)}, '
        f'"prev_hash": {_text(prev)}, "documents": {documents}, "details": {details}}}\n'
    )


def _csv(row: Any, names: Names) -> list[Any]:
    (ident, occurred, category, actor, behalf, ip, agent, message) = row[:8]
    (project_id, env_id, _, digest, prev, documents, details) = row[8:]
    return [
        public(ident),
        iso(occurred),
        category,
        actor,
        behalf,
        ip,
        agent,
        message,
        names.projects.get(project_id) if project_id else None,
        names.environments.get(env_id) if env_id else None,
        " ".join(json.loads(documents or "[]")),
        details,
        digest,
        prev,
    ]


async def _stream(
    services: Services,
    fmt: str,
    where: list[ColumnElement[bool]],
    names: Names,
    newest: int,
) -> AsyncIterator[str]:
    if fmt == "csv":
        yield ",".join(CSV_COLUMNS) + "\r\n"
    after = 0
    while after < newest:
        async with services.read() as session:
            query = (
                select(*_EXPORTED)
                .where(*where, E.id > after, E.id <= newest)
                .order_by(E.id)
                .limit(CHUNK)
            )
            rows = (await session.execute(query)).all()
        if not rows:
            return
        if fmt == "csv":
            buffer = io.StringIO()
            csv.writer(buffer).writerows(_csv(r, names) for r in rows)
            yield buffer.getvalue()
        else:
            yield "".join(_jsonl(r, names) for r in rows)
        after = rows[-1][0]


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
    async with services.read() as session:
        names = await names_of(session)
    envs = list(names.environments.values())
    unscoped = event_scopes(caller.principal, names.project_refs, envs) is None
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
