"""A project's deployment process over time: its versions (who, when), what changed between
two of them, and reverting to an earlier one.

Each change of a process is audited (``DocumentModified``, aspect ``process``) with the whole
process as written (``details.snapshot``: the version it got and its steps), so the history is
read from the audit log of the project, which is append-only and hash-chained. Changes made
before snapshots were kept are listed (who, when) but cannot be shown or reverted to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from conveyor.domain.audit import Category
from conveyor.domain.codec import decode_process
from conveyor.domain.diff import FieldChange, step_changes
from conveyor.domain.errors import ConveyorError, NotFound, Problem
from conveyor.services import documents
from conveyor.services.config import load
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t

# How many changes of the process the history reads, newest first.
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class ProcessVersion:
    # None for a change audited before snapshots were kept.
    version: int | None
    who: str
    when: datetime
    event_id: int
    steps: list[dict[str, Any]] | None

    @property
    def kept(self) -> bool:
        return self.steps is not None


@dataclass(frozen=True)
class History:
    project: str
    current_version: int
    versions: list[ProcessVersion]  # newest first

    def find(self, version: int) -> ProcessVersion:
        for found in self.versions:
            if found.version == version and found.kept:
                return found
        raise NotFound(
            f"version {version} of the process of {self.project} is not kept: "
            "choose one the history lists"
        )


async def history(services: Services, caller: Caller, ref: str) -> History:
    """The versions of a project's process, newest first (checks ProcessView)."""
    current = await documents.get_process(services, caller, ref)
    loaded = await load(services)
    project_id = loaded.id_of("projects", current["project"])
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.events.c.id, t.events.c.occurred_at, t.events.c.actor, t.events.c.details)
                .where(
                    t.events.c.project_id == project_id,
                    t.events.c.category == Category.DOCUMENT_MODIFIED.value,
                )
                .order_by(t.events.c.id.desc())
                .limit(HISTORY_LIMIT * 4)
            )
        ).all()
    versions: list[ProcessVersion] = []
    for row in rows:
        details = row.details if isinstance(row.details, dict) else {}
        if details.get("aspect") != "process":
            continue
        snapshot = details.get("snapshot")
        kept = isinstance(snapshot, dict) and isinstance(snapshot.get("steps"), list)
        versions.append(
            ProcessVersion(
                version=int(snapshot["version"]) if kept else None,  # type: ignore[index]
                who=str(row.actor),
                when=row.occurred_at,
                event_id=int(row.id),
                steps=list(snapshot["steps"]) if kept else None,  # type: ignore[index]
            )
        )
        if len(versions) >= HISTORY_LIMIT:
            break
    return History(current["project"], int(current["version"]), versions)


@dataclass(frozen=True)
class StepDiff:
    """One step's difference between two versions: added, removed or changed (its fields)."""

    step: str
    what: str  # added | removed | changed | order
    fields: list[FieldChange]


def compare(older: list[dict[str, Any]], newer: list[dict[str, Any]]) -> list[StepDiff]:
    """What changed from ``older`` to ``newer`` (steps as encoded), step by step."""
    problems: list[Problem] = []
    before = decode_process({"steps": older}, (), problems).steps
    after = decode_process({"steps": newer}, (), problems).steps
    if problems:  # pragma: no cover - snapshots are written from valid processes
        raise ConveyorError("a kept version of the process cannot be read")
    out: list[StepDiff] = []
    for change in step_changes(before, after):
        if change.field == "step order":
            out.append(StepDiff("", "order", [change]))
            continue
        name = change.field.removeprefix("steps[").removesuffix("]")
        if change.after == "added":
            out.append(StepDiff(name, "added", []))
        elif change.after == "removed":
            out.append(StepDiff(name, "removed", []))
        else:
            fields = [
                FieldChange(field, _text(change.before.get(field)), _text(change.after.get(field)))
                for field in change.after
            ]
            out.append(StepDiff(name, "changed", fields))
    return out


def _text(value: Any) -> str | None:
    """A field's value as a person reads it: lists joined, documents as JSON."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


async def revert(
    services: Services, caller: Caller, ref: str, version: int, read_at: int
) -> dict[str, Any]:
    """Make the process as it was at ``version``: a new version, audited as any edit, made only
    by those who may edit the process and only from the version the page was read at."""
    await documents.authorise_edit(services, caller, "projects", ref, "process")
    found = (await history(services, caller, ref)).find(version)
    return await documents.update_process(
        services, caller, ref, {"version": read_at, "steps": found.steps}
    )
