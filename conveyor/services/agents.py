"""Polling agents: enrolment, their credentials, and the jobs they take (docs/targets.md).

An administrator makes a single-use, expiring enrolment token for one ``agent`` target; the
agent trades it once for a credential of its own and from then on long-polls for work with it.
Only SHA-256 digests of tokens and credentials are kept, so the database never holds either.
A job is a script to run or a package to install on one target: its payload (the script, its
variables) is encrypted at rest, and so are the output lines the agent streams back until the
node running the step moves them into the task log. An agent only ever claims jobs of its own
target.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import Target, key, slugify
from conveyor.domain.errors import NotFound, PermissionDenied, Unauthenticated, ValidationFailed
from conveyor.services.config import load
from conveyor.services.core import Caller, Services, iso
from conveyor.store import tables as t

P = perms.Permission
TOK = t.agent_tokens.c
AG = t.agents.c
JOB = t.agent_jobs.c
LINE = t.agent_job_lines.c

TOKEN_PREFIX = "cvt_"
CREDENTIAL_PREFIX = "cva_"
DEFAULT_EXPIRY = timedelta(hours=1)
MAX_EXPIRY = timedelta(days=30)
ID_PREFIX = "Agents"
DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# What the agent reports about its machine is cut to the columns' widths.
FIELD_WIDTHS = {"hostname": 200, "os": 200, "version": 50}

QUEUED, RUNNING, DONE = "queued", "running", "done"
# The levels of the task log; anything else an agent sends is logged as info.
LEVELS = frozenset({"info", "warn", "error"})


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for what was stored in UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_expiry(text: str | None) -> timedelta:
    """``30m``, ``2h``, ``1d`` (or seconds, ``90s``); empty: one hour."""
    if not text:
        return DEFAULT_EXPIRY
    match = DURATION.match(text)
    if not match:
        raise ValidationFailed(
            f'"{text}" is not a duration: write a number and a unit, e.g. 30m, 2h or 1d'
        )
    length = timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])
    if not timedelta(minutes=1) <= length <= MAX_EXPIRY:
        raise ValidationFailed("an enrolment token must expire in between 1 minute and 30 days")
    return length


def public_agent_id(row_id: int) -> str:
    return f"{ID_PREFIX}-{row_id}"


def parse_agent_id(ref: str) -> int:
    text = ref.strip()
    if text.lower().startswith(ID_PREFIX.lower() + "-"):
        text = text[len(ID_PREFIX) + 1 :]
    if not text.isdigit():
        raise ValidationFailed(f'"{ref}" is not an agent id (e.g. Agents-3, as `agent list` shows)')
    return int(text)


def _require_admin(caller: Caller) -> None:
    decision = perms.authorize(caller.principal, P.AdministerSystem)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(P.AdministerSystem))


async def agent_target(services: Services, name: str) -> Target:
    """The ``agent`` target called ``name``; a clear refusal for any other."""
    wanted = key(name)
    for target in (await load(services)).model.targets:
        if key(target.name) == wanted:
            if target.kind != "agent":
                raise ValidationFailed(
                    f'target "{target.name}" is of kind {target.kind}: only a target of kind '
                    "agent is served by an enrolled agent (set kind: agent on it)"
                )
            return target
    raise NotFound(f'there is no target "{name}": see `conveyor target list`')


async def target_names(services: Services) -> dict[str, str]:
    """Each target's name by its slug (agents' rows keep the slug)."""
    return {slugify(target.name): target.name for target in (await load(services)).model.targets}


async def target_name(services: Services, slug: str) -> str:
    """The name of the target whose slug is ``slug`` (the slug itself once it is gone)."""
    return (await target_names(services)).get(slug, slug)


# ---------------------------------------------------------------- enrolment


async def create_token(
    services: Services, caller: Caller, name: str, expires: str | None = None
) -> dict[str, Any]:
    """A single-use enrolment token for the agent target called ``name`` (administrators)."""
    if not perms.authorize(caller.principal, P.AdministerSystem).allowed:
        async with services.tx(caller) as tx:  # audits the refusal
            tx.require(P.AdministerSystem)
    length = parse_expiry(expires)
    target = await agent_target(services, name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with services.tx(caller) as tx:
        tx.require(P.AdministerSystem)
        expires_at = tx.now + length
        await tx.session.execute(
            insert(t.agent_tokens).values(
                target=slugify(target.name),
                token_hash=digest(token),
                created_by=caller.username,
                created_at=tx.now,
                expires_at=expires_at,
            )
        )
        await tx.audit(
            Category.AGENT_TOKEN_CREATED,
            f"{caller.username} created an agent enrolment token for target {target.name}, "
            f"valid until {iso(expires_at)}",
            details={"target": target.name, "expires": iso(expires_at), "kind": "agent token"},
        )
    return {"token": token, "expires": iso(expires_at), "target": target.name}


def _agent_caller(target: str) -> Caller:
    """An agent acting for itself: no permission of any kind, named after its target."""
    name = f"agent of {target}"
    return Caller(user_id=None, username=name, principal=perms.Principal(name, True, ()))


def _reported(info: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: str(info.get(name) or "")[:width] for name, width in FIELD_WIDTHS.items()
    }
    free = info.get("free_disk_bytes")
    values["free_disk_bytes"] = int(free) if isinstance(free, int) and free >= 0 else None
    return values


async def enrol(services: Services, token: str, info: dict[str, Any]) -> dict[str, Any]:
    """Trade a valid enrolment token for a new agent credential (returned here only)."""
    refused = (
        "this enrolment token is not valid{why}: ask an administrator for a new one "
        "(`conveyor agent token create --target NAME`)"
    )
    async with services.read() as session:
        row = (
            await session.execute(select(t.agent_tokens).where(TOK.token_hash == digest(token)))
        ).first()
    if row is None:
        raise Unauthenticated(refused.format(why=""))
    name = await target_name(services, row.target)
    credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    async with services.tx(_agent_caller(row.target)) as tx:
        expires_at = _utc(row.expires_at)
        if expires_at is not None and expires_at <= tx.now:
            raise Unauthenticated(refused.format(why=" (it has expired)"))
        # Marked used only if nobody used it first: two agents racing get one credential.
        used = await tx.session.execute(
            update(t.agent_tokens)
            .where(TOK.id == row.id, TOK.used_at.is_(None))
            .values(used_at=tx.now)
        )
        if used.rowcount != 1:  # type: ignore[attr-defined]
            raise Unauthenticated(
                refused.format(why=" (it was used already: tokens are single-use)")
            )
        reported = _reported(info)
        agent_id = (
            await tx.session.execute(
                insert(t.agents)
                .values(
                    target=row.target,
                    credential_hash=digest(credential),
                    enrolled_at=tx.now,
                    last_seen_at=tx.now,
                    **reported,
                )
                .returning(AG.id)
            )
        ).scalar_one()
        await tx.audit(
            Category.AGENT_ENROLLED,
            f"an agent on {reported['hostname'] or 'an unnamed host'} enrolled for target "
            f"{name} as {public_agent_id(agent_id)}",
            details={"target": name, "agent": public_agent_id(agent_id), **reported},
        )
    return {"credential": credential, "agent": public_agent_id(agent_id), "target": name}


@dataclass(frozen=True)
class Agent:
    id: int
    target: str  # the slug of its target's name


async def authenticate(services: Services, credential: str | None) -> Agent:
    """The agent holding ``credential``; unknown or revoked ones are refused at once."""
    if not credential:
        raise Unauthenticated("an agent must send its credential (header X-Agent-Credential)")
    async with services.read() as session:
        row = (
            await session.execute(
                select(AG.id, AG.target, AG.revoked_at).where(
                    AG.credential_hash == digest(credential)
                )
            )
        ).first()
    if row is None or row.revoked_at is not None:
        raise Unauthenticated(
            "this agent's credential is revoked or unknown: enrol the agent again with a new "
            "token (`conveyor agent token create --target NAME`, then `conveyor agent run "
            "--token TOKEN`)"
        )
    return Agent(int(row.id), str(row.target))


async def heartbeat(services: Services, agent: Agent, info: dict[str, Any] | None = None) -> None:
    """The agent is alive now (and, with ``info``, what it reported of its machine)."""
    values: dict[str, Any] = {"last_seen_at": services.clock()}
    if info is not None:
        values.update(_reported(info))
    async with services.write() as session:
        await session.execute(update(t.agents).where(AG.id == agent.id).values(**values))


async def revoke(services: Services, caller: Caller, ref: str) -> dict[str, Any]:
    """Refuse the agent from now on (administrators); its running jobs fail."""
    agent_id = parse_agent_id(ref)
    if not perms.authorize(caller.principal, P.AdministerSystem).allowed:
        async with services.tx(caller) as tx:
            tx.require(P.AdministerSystem)
    names = await target_names(services)
    async with services.tx(caller) as tx:
        tx.require(P.AdministerSystem)
        row = (await tx.session.execute(select(t.agents).where(AG.id == agent_id))).first()
        if row is None:
            raise NotFound(
                f"there is no agent {public_agent_id(agent_id)}: see `conveyor agent list`"
            )
        if row.revoked_at is None:
            await tx.session.execute(
                update(t.agents).where(AG.id == agent_id).values(revoked_at=tx.now)
            )
            await tx.session.execute(
                update(t.agent_jobs)
                .where(JOB.agent_id == agent_id, JOB.state == RUNNING)
                .values(
                    state=DONE,
                    finished_at=tx.now,
                    result={"error": "the agent running this was revoked"},
                )
            )
            await tx.audit(
                Category.AGENT_REVOKED,
                f"{caller.username} revoked agent {public_agent_id(agent_id)} of target "
                f"{names.get(row.target, row.target)}",
                details={"agent": public_agent_id(agent_id), "target": row.target},
            )
    target = names.get(row.target, row.target)
    return {"id": public_agent_id(agent_id), "target": target, "revoked": True}


def _view(row: Any, name: str, now: datetime, offline: timedelta) -> dict[str, Any]:
    seen = _utc(row.last_seen_at)
    return {
        "id": public_agent_id(int(row.id)),
        "target": name,
        "hostname": row.hostname,
        "os": row.os,
        "version": row.version,
        "free_disk_bytes": row.free_disk_bytes,
        "enrolled": iso(row.enrolled_at),
        "last_seen": iso(seen),
        "online": row.revoked_at is None and seen is not None and now - seen <= offline,
        "revoked": row.revoked_at is not None,
    }


async def list_agents(services: Services, caller: Caller) -> list[dict[str, Any]]:
    """Every enrolled agent, by target then id (administrators)."""
    _require_admin(caller)
    async with services.read() as session:
        rows = (await session.execute(select(t.agents).order_by(AG.target, AG.id))).all()
    names = await target_names(services)
    offline = timedelta(seconds=services.settings.agent_offline_seconds)
    now = services.clock()
    return [_view(row, names.get(row.target, row.target), now, offline) for row in rows]


async def freshest_agent(services: Services, target: str) -> dict[str, Any] | None:
    """The unrevoked agent of ``target`` (a slug) that polled last, as ``list_agents`` shows it."""
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.agents)
                .where(AG.target == target, AG.revoked_at.is_(None))
                .order_by(AG.last_seen_at.desc().nulls_last(), AG.id.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        return None
    offline = timedelta(seconds=services.settings.agent_offline_seconds)
    return _view(row, await target_name(services, target), services.clock(), offline)


# ---------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobState:
    state: str
    agent_id: int | None
    result: dict[str, Any] | None
    agent_seen: datetime | None
    agent_revoked: bool


async def enqueue(
    services: Services, target: str, task_id: int | None, kind: str, payload: dict[str, Any]
) -> int:
    """Queue a job for the agents of ``target`` (a slug); its id."""
    sealed = services.box.encrypt(json.dumps(payload))
    async with services.write() as session:
        job_id = (
            await session.execute(
                insert(t.agent_jobs)
                .values(
                    target=target,
                    task_id=task_id,
                    kind=kind,
                    payload=sealed,
                    state=QUEUED,
                    cancel_requested=False,
                    created_at=services.clock(),
                )
                .returning(JOB.id)
            )
        ).scalar_one()
    return int(job_id)


async def has_queued(services: Services, agent: Agent) -> bool:
    async with services.read() as session:
        found = (
            await session.execute(
                select(JOB.id).where(JOB.target == agent.target, JOB.state == QUEUED).limit(1)
            )
        ).first()
    return found is not None


async def claim(services: Services, agent: Agent) -> dict[str, Any] | None:
    """The oldest queued job of the agent's own target, now running on it; None if none.
    On PostgreSQL, nodes serving several agents of one target each skip a job another locked."""
    async with services.write() as session:
        query = (
            select(JOB.id, JOB.kind, JOB.payload)
            .where(JOB.target == agent.target, JOB.state == QUEUED)
            .order_by(JOB.id)
            .limit(1)
        )
        if not services.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        row = (await session.execute(query)).first()
        if row is None:
            return None
        await session.execute(
            update(t.agent_jobs)
            .where(JOB.id == row.id)
            .values(state=RUNNING, agent_id=agent.id, started_at=services.clock())
        )
    payload = json.loads(services.box.decrypt(row.payload))
    return {"id": int(row.id), "kind": row.kind, **payload}


async def abandon_others(services: Services, agent: Agent, running: list[int]) -> None:
    """Jobs this agent took but no longer runs (it restarted mid-job) fail now, not never."""
    async with services.write() as session:
        await session.execute(
            update(t.agent_jobs)
            .where(JOB.agent_id == agent.id, JOB.state == RUNNING, JOB.id.not_in(running))
            .values(
                state=DONE,
                finished_at=services.clock(),
                result={"error": "the agent restarted while running this"},
            )
        )


async def _own_job(session: Any, agent: Agent, job_id: int) -> Any:
    row = (
        await session.execute(
            select(JOB.id, JOB.kind, JOB.payload, JOB.state, JOB.cancel_requested).where(
                JOB.id == job_id, JOB.agent_id == agent.id, JOB.target == agent.target
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"this agent runs no job {job_id}")
    return row


async def append_lines(
    services: Services, agent: Agent, job_id: int, lines: list[tuple[str, str]]
) -> bool:
    """Store the output lines of a job this agent runs; whether its cancel was requested."""
    now = services.clock()
    async with services.write() as session:
        row = await _own_job(session, agent, job_id)
        if lines and row.state == RUNNING:
            box = services.box
            await session.execute(
                insert(t.agent_job_lines),
                [
                    {
                        "job_id": job_id,
                        "level": level if level in LEVELS else "info",
                        "text": box.encrypt(text),
                    }
                    for level, text in lines
                ],
            )
        await session.execute(update(t.agents).where(AG.id == agent.id).values(last_seen_at=now))
    # A job that ended here (canceled while queued, its agent revoked) stops there too.
    return bool(row.cancel_requested) or row.state != RUNNING


async def finish(services: Services, agent: Agent, job_id: int, result: dict[str, Any]) -> None:
    async with services.write() as session:
        await _own_job(session, agent, job_id)
        await session.execute(
            update(t.agent_jobs)
            .where(JOB.id == job_id, JOB.state == RUNNING)
            .values(state=DONE, finished_at=services.clock(), result=result)
        )


async def job_package(services: Services, agent: Agent, job_id: int) -> dict[str, Any]:
    """The package a package job this agent runs names (the only file it may download)."""
    async with services.read() as session:
        row = await _own_job(session, agent, job_id)
    if row.kind != "package" or row.state != RUNNING:
        raise NotFound(f"job {job_id} of this agent installs no package now")
    payload: dict[str, Any] = json.loads(services.box.decrypt(row.payload))
    return payload


async def request_cancel(services: Services, job_id: int) -> None:
    """Ask the agent to stop the job; one still queued ends at once."""
    now = services.clock()
    async with services.write() as session:
        await session.execute(
            update(t.agent_jobs)
            .where(JOB.id == job_id, JOB.state == QUEUED)
            .values(state=DONE, finished_at=now, result={"canceled": True})
        )
        await session.execute(
            update(t.agent_jobs).where(JOB.id == job_id).values(cancel_requested=True)
        )


async def fail_job(services: Services, job_id: int, reason: str) -> None:
    """The node waiting for the job gives up on it (the agent went offline)."""
    async with services.write() as session:
        await session.execute(
            update(t.agent_jobs)
            .where(JOB.id == job_id, JOB.state != DONE)
            .values(
                state=DONE,
                finished_at=services.clock(),
                cancel_requested=True,
                result={"error": reason},
            )
        )


async def job_state(services: Services, job_id: int) -> JobState:
    async with services.read() as session:
        row = (
            await session.execute(
                select(JOB.state, JOB.agent_id, JOB.result, AG.last_seen_at, AG.revoked_at)
                .select_from(t.agent_jobs.outerjoin(t.agents, AG.id == JOB.agent_id))
                .where(JOB.id == job_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"agent job {job_id} is gone")
    return JobState(
        str(row.state),
        row.agent_id,
        dict(row.result) if row.result is not None else None,
        _utc(row.last_seen_at),
        row.revoked_at is not None,
    )


async def take_lines(services: Services, job_id: int, limit: int = 2000) -> list[tuple[str, str]]:
    """The job's next output lines, oldest first, removed from the table as they are taken."""
    async with services.write() as session:
        rows = (
            await session.execute(
                select(LINE.id, LINE.level, LINE.text)
                .where(LINE.job_id == job_id)
                .order_by(LINE.id)
                .limit(limit)
            )
        ).all()
        if rows:
            await session.execute(
                delete(t.agent_job_lines).where(LINE.job_id == job_id, LINE.id <= rows[-1].id)
            )
    box = services.box
    return [(str(r.level), box.decrypt(r.text)) for r in rows]


async def remove_job(services: Services, job_id: int) -> None:
    async with services.write() as session:
        await session.execute(delete(t.agent_job_lines).where(LINE.job_id == job_id))
        await session.execute(delete(t.agent_jobs).where(JOB.id == job_id))
