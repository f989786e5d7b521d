"""Exporting the audit log: CSV and JSON Lines, oldest first (chain order), streamed in chunks
by keyset so that memory stays flat whatever the size of the log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, select

from conveyor.domain.audit import public
from conveyor.domain.errors import ValidationFailed
from conveyor.services import audit
from conveyor.services.audit import E, Filters, Names, conditions, names_of
from conveyor.services.core import Caller, Services, iso

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
        where = await conditions(session, caller, filters)
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
                .limit(audit.CHUNK)
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
