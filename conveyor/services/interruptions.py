"""Interruptions: a running deployment asks a person (approve, or guide a failure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from conveyor.domain import inputs
from conveyor.domain import interruptions as rules
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import InputField, key
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.services.config import load_outline, public_id, require_public_id
from conveyor.services.core import Caller, PendingEvent, Services, Tx, iso
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission


NOUNS = {"interruptions": "interruption", "tasks": "task", "deployments": "deployment"}


def parse_id(value: str, kind: str = "interruptions") -> int:
    """``"Interruptions-12"`` or ``"12"`` -> 12; anything else is ``NotFound`` (never a query)."""
    return require_public_id(kind, value, NOUNS.get(kind, kind))


@dataclass(frozen=True)
class Context:
    row: Any
    project: perms.ProjectRef
    environment: str
    facts: rules.Facts


def _facts(row: Any, project: perms.ProjectRef, environment: str) -> rules.Facts:
    settings = row.settings or {}
    return rules.Facts(
        kind=rules.Kind(row.kind),
        project=project,
        environment=environment,
        responsible_teams=tuple(row.responsible_teams or ()),
        deployed_by=settings.get("deployed_by", ""),
        release_created_by=settings.get("release_created_by", ""),
        prevent_self_approval=bool(settings.get("prevent_self_approval")),
        required_approvals=int(settings.get("required_approvals", 1)),
        approval_teams=tuple(settings.get("approval_teams", ())),
        required_step=bool(settings.get("required_step")),
        taken_by=row.taken_by,
        answers=tuple(
            rules.Answer(
                a["username"],
                rules.Result(a["result"]),
                tuple(a.get("teams", ())),
                a.get("notes", ""),
            )
            for a in row.answers or ()
        ),
    )


def declared(settings: Mapping[str, Any] | None) -> tuple[InputField, ...]:
    """The questions an interruption asks, as the step declared them when it was raised
    (kept in its settings, so answering never reads the release snapshot again)."""
    out = []
    for item in (settings or {}).get("fields") or ():
        out.append(
            InputField(
                name=str(item["name"]),
                label=str(item.get("label", "")),
                pattern=str(item.get("pattern", "")),
                choices=tuple(str(c) for c in item.get("choices", ())),
                required=bool(item.get("required", True)),
                description=str(item.get("description", "")),
            )
        )
    return tuple(out)


def _questions(row: Any) -> list[dict[str, Any]]:
    values = row.fields or {}
    return [
        {
            "name": f.name,
            "label": f.label or f.name,
            "description": f.description,
            "pattern": f.pattern,
            "choices": list(f.choices),
            "required": f.required,
            "prompt": inputs.describe(f),
            "answer": values.get(f.name),
        }
        for f in declared(row.settings)
    ]


def check_fields(
    fields: tuple[InputField, ...], result: rules.Result, given: Mapping[str, str]
) -> dict[str, str] | None:
    """The answers to keep with one person's answer: a proceed must answer every required
    question; an abort needs none, but what it gives must still be valid. None: none asked."""
    if not fields and not given:
        return None
    if result is not rules.Result.PROCEED:
        fields = tuple(replace(f, required=False) for f in fields)
    values = inputs.check_answers(fields, given)
    # Every question has a value (empty when unanswered), so later steps can always read it.
    return {f.name: values.get(f.name, "") for f in fields}


def _context(loaded: Loaded, row: Any) -> Context:
    project_name = loaded.name_of("projects", row.project_id) or "?"
    env_name = loaded.name_of("environments", row.environment_id) or "?"
    project = loaded.model.get("projects", project_name)
    ref = perms.ProjectRef(project_name, project.group if project else "")
    return Context(row, ref, env_name, _facts(row, ref, env_name))


def view(
    ctx: Context, caller: Caller | None = None, teams: list[str] | None = None
) -> dict[str, Any]:
    row = ctx.row
    out: dict[str, Any] = {
        "id": public_id("interruptions", row.id),
        "task": public_id("tasks", row.task_id),
        "deployment": public_id("deployments", row.deployment_id),
        "project": ctx.project.name,
        "environment": ctx.environment,
        "step": row.step_name,
        "kind": row.kind,
        "title": row.title,
        "instructions": row.instructions,
        "responsible_teams": list(row.responsible_teams or ()),
        "taken_by": row.taken_by,
        "state": row.state,
        "result": row.result,
        "notes": row.notes,
        "answered_by": row.answered_by,
        "answers": list(row.answers or ()),
        # The questions (with the answer that stands, once settled) and the answers by name.
        "fields": _questions(row),
        "field_values": dict(row.fields or {}),
        "created": iso(row.created_at),
        "settings": dict(row.settings or {}),
    }
    if caller is not None and teams is not None:
        verdict = rules.may_act(caller.principal, teams, ctx.facts)
        out["can_answer"] = verdict.allowed and row.state == "pending"
        out["why_not"] = None if verdict.allowed else verdict.reason
    return out


def teams_of(loaded: Loaded, username: str) -> list[str]:
    return [team.name for team in loaded.model.teams_of(username)]


def _may_view(caller: Caller, ctx: Context) -> bool:
    return perms.authorize(
        caller.principal, P.InterruptionView, project=ctx.project, environment=ctx.environment
    ).allowed


async def list_interruptions(
    services: Services,
    caller: Caller,
    *,
    task: str | None = None,
    mine: bool = False,
    pending_only: bool = False,
    limit: int = 200,
) -> list[dict[str, Any]]:
    loaded = await load_outline(services)
    query = select(t.interruptions).order_by(t.interruptions.c.id.desc()).limit(limit)
    if task:
        query = query.where(t.interruptions.c.task_id == parse_id(task, "tasks"))
    if pending_only or mine:
        query = query.where(t.interruptions.c.state == "pending")
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    teams = teams_of(loaded, caller.username)
    out = []
    for row in rows:
        ctx = _context(loaded, row)
        if not _may_view(caller, ctx):
            continue
        item = view(ctx, caller, teams)
        if mine and not item["can_answer"]:
            continue
        out.append(item)
    return out


async def get_interruption(services: Services, caller: Caller, ident: str) -> dict[str, Any]:
    loaded = await load_outline(services)
    async with services.read() as session:
        row = await _row(session, parse_id(ident))
    ctx = _context(loaded, row)
    if not _may_view(caller, ctx):
        raise PermissionDenied("you may not view this interruption (InterruptionView)")
    return view(ctx, caller, teams_of(loaded, caller.username))


async def _row(session: Any, ident: int, *, lock: bool = False) -> Any:
    """The interruption; with ``lock``, its row stays locked until the transaction ends, so that
    concurrent answers are decided one after the other against the state each one left
    (PostgreSQL's FOR UPDATE; SQLite has one writer already and ignores it)."""
    query = select(t.interruptions).where(t.interruptions.c.id == ident)
    if lock:
        # Its task first, as a cancel and the engine take them (task, then interruption):
        # two answers, or an answer and a cancel, then queue instead of deadlocking.
        task_of = select(t.interruptions.c.task_id).where(t.interruptions.c.id == ident)
        await session.execute(
            select(t.tasks.c.id).where(t.tasks.c.id == task_of.scalar_subquery()).with_for_update()
        )
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound(f"interruption Interruptions-{ident} does not exist")
    return row


def _closed(row: Any) -> Conflict:
    if row.state == "answered":
        return Conflict(f"{row.title} was already answered ({row.result} by {row.answered_by})")
    return Conflict(f"{row.title} is {row.state}: it takes no answer any more")


def _refuse(tx: Tx, ctx: Context, reason: str, action: str) -> PermissionDenied:
    tx.refusals.append(
        PendingEvent(
            Category.ACCESS_DENIED,
            f"{tx.caller.username} was refused to {action} {ctx.row.title}: {reason}",
            [public_id("interruptions", ctx.row.id), public_id("tasks", ctx.row.task_id)],
            {"reason": reason, "interruption": public_id("interruptions", ctx.row.id)},
            ctx.row.project_id,
            ctx.row.environment_id,
        )
    )
    return PermissionDenied(reason, permission="InterruptionSubmit")


def _documents(row: Any) -> list[str]:
    docs = [public_id("interruptions", row.id), public_id("tasks", row.task_id)]
    if row.deployment_id:
        docs.append(public_id("deployments", row.deployment_id))
    if row.project_id:
        docs.append(public_id("projects", row.project_id))
    if row.environment_id:
        docs.append(public_id("environments", row.environment_id))
    return docs


async def take(services: Services, caller: Caller, ident: str) -> dict[str, Any]:
    """Take responsibility: one person holds an interruption at a time (and may take it over)."""
    loaded = await load_outline(services)
    teams = teams_of(loaded, caller.username)
    async with services.tx(caller) as tx:
        row = await _row(tx.session, parse_id(ident), lock=True)
        ctx = _context(loaded, row)
        if row.state != "pending":
            raise _closed(row)
        verdict = rules.may_take(caller.principal, teams, ctx.facts)
        if not verdict.allowed:
            raise _refuse(tx, ctx, verdict.reason, "take")
        previous = row.taken_by
        if previous and key(previous) == key(caller.username):
            # Already theirs: nothing changes, so nothing is audited (a double click, a retry).
            return view(ctx, caller, teams)
        await runs.take_interruption(tx.session, tx.now, row.id, caller.username, caller.user_id)
        took_over = (
            f" (taking over from {previous})" if previous and previous != caller.username else ""
        )
        await tx.audit(
            Category.INTERRUPTION_TAKEN,
            f"{caller.username} took responsibility for {row.title}{took_over}",
            documents=_documents(row),
            details={"previous": previous},
            project_id=row.project_id,
            environment_id=row.environment_id,
        )
    return await get_interruption(services, caller, ident)


async def submit(
    services: Services,
    caller: Caller,
    ident: str,
    result: str,
    notes: str = "",
    fields: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Answer an interruption; ``fields`` answers the step's questions (checked only once the
    caller may answer at all, so that nobody else learns what is asked)."""
    try:
        answer = rules.Result(result.lower())
    except ValueError as exc:
        raise ValidationFailed(
            f'"{result}" is not an answer: use proceed, abort, retry or ignore'
        ) from exc
    loaded = await load_outline(services)
    teams = teams_of(loaded, caller.username)
    async with services.tx(caller) as tx:
        row = await _row(tx.session, parse_id(ident), lock=True)
        ctx = _context(loaded, row)
        if row.state != "pending":
            raise _closed(row)
        verdict = rules.may_act(caller.principal, teams, ctx.facts)
        if not verdict.allowed:
            raise _refuse(tx, ctx, verdict.reason, "answer")
        fit = rules.check_result(ctx.facts, answer)
        if not fit.allowed:
            raise ValidationFailed(fit.reason)
        if row.taken_by and key(row.taken_by) != key(caller.username):
            raise Conflict(
                f"{row.taken_by} has taken responsibility for this; take it over first "
                f"(conveyor interruption take {public_id('interruptions', row.id)})"
            )
        values = check_fields(declared(row.settings), answer, dict(fields or {}))
        given = rules.Answer(caller.username, answer, tuple(teams), notes)
        answers = [*ctx.facts.answers, given]
        settled = rules.settle(ctx.facts, answers)
        stored: list[dict[str, Any]] = [
            {
                "username": a.username,
                "result": a.result.value,
                "teams": list(a.teams),
                "notes": a.notes,
                "at": tx.now.isoformat() if a is given else None,
            }
            for a in answers
        ]
        for old, new in zip(row.answers or (), stored, strict=False):
            new["at"] = old.get("at")
            if "fields" in old:
                new["fields"] = old["fields"]
        if values is not None:
            stored[-1]["fields"] = values  # each approver's answers stay with their answer
        settling = (
            # The answers that stand are the settling person's (with a quorum: the last
            # approver's, who saw the ones given before).
            runs.Settled(answer.value, notes, caller.username, caller.user_id, values)
            if settled.settled
            else None  # the next approver takes it from here
        )
        await runs.record_answers(tx.session, tx.now, row.id, stored, settling)
        await tx.audit(
            Category.INTERRUPTION_SUBMITTED,
            f"{caller.username} answered {answer.value} to {row.title}"
            + (f": {notes}" if notes else "")
            + ("" if settled.settled else f" ({settled.reason})"),
            documents=_documents(row),
            details={
                "result": answer.value,
                "notes": notes,
                "teams": teams,
                "settled": settled.settled,
                "progress": settled.reason,
                **({"fields": values} if values is not None else {}),
            },
            project_id=row.project_id,
            environment_id=row.environment_id,
        )
        if settled.settled:
            await runs.wake(tx.session, row.task_id)
            await tx.audit(
                Category.DEPLOYMENT_RESUMED,
                f"{row.title}: the deployment resumes after {caller.username} answered "
                f"{answer.value}",
                documents=_documents(row),
                project_id=row.project_id,
                environment_id=row.environment_id,
            )
            await tx.wake()
    return await get_interruption(services, caller, ident)
