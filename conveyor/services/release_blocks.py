"""Blocking a release from being promoted further (Octopus's "prevent progression"), and the
one check every deployment passes for blocks and pins (``deployment_refusal``). Blocking needs
ReleaseEdit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from conveyor.domain import lifecycle as lc
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.documents import key
from conveyor.domain.errors import Conflict, NotFound
from conveyor.domain.holds import Block, block_refusal, pin_refusal
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, iso
from conveyor.services.documents import resolve
from conveyor.services.pins import pin_of, reason_given
from conveyor.services.releases import find_release
from conveyor.store import tables as t

P = perms.Permission
REL = t.releases.c


def block_of(release: Any) -> Block | None:
    """The block on a release row, if any."""
    reason = getattr(release, "blocked_reason", None)
    return Block(reason, release.blocked_by or "") if reason else None


def blocked_view(release: Any) -> dict[str, Any] | None:
    block = block_of(release)
    if block is None:
        return None
    return {"reason": block.reason, "by": block.by, "at": iso(release.blocked_at)}


async def deployment_refusal(
    session: Any,
    project: str,
    project_id: int,
    environment: str,
    environment_id: int,
    release: Any,
    attempts: Sequence[lc.Attempt],
) -> str | None:
    """Why a deployment of ``release`` to ``environment`` is refused by a block or a pin."""
    there = key(environment)
    succeeded = any(
        key(a.environment) == there and a.outcome is lc.Outcome.SUCCESS for a in attempts
    )
    refused = block_refusal(block_of(release), succeeded)
    if refused:
        return refused
    pin = await pin_of(session, project, project_id, environment_id)
    return pin_refusal(pin, release.version, environment)


async def child_refusals(
    session: Any, children: Sequence[Mapping[str, Any]], environment_id: int
) -> dict[str, str]:
    """Step (key) -> why its child deployment will be refused: the child release is blocked
    and has not succeeded in the environment (the plan says so before anyone presses deploy)."""
    ids = [c["release_id"] for c in children]
    if not ids:
        return {}
    rows = {
        r.id: r
        for r in await session.execute(
            select(REL.id, REL.blocked_reason, REL.blocked_by, REL.blocked_at).where(
                REL.id.in_(ids), REL.blocked_reason.is_not(None)
            )
        )
    }
    if not rows:
        return {}
    succeeded = set(
        (
            await session.execute(
                select(t.deployments.c.release_id).where(
                    t.deployments.c.release_id.in_(list(rows)),
                    t.deployments.c.environment_id == environment_id,
                    t.deployments.c.state == "success",
                )
            )
        ).scalars()
    )
    out = {}
    for c in children:
        row = rows.get(c["release_id"])
        refused = block_refusal(block_of(row), c["release_id"] in succeeded) if row else None
        if refused:
            out[key(c["step"])] = f"{c['project']} {c['version']} will be refused: {refused}"
    return out


async def _release(services: Services, project_ref: str, version: str) -> tuple[Any, int, Any]:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    return project, project_id, await find_release(services, project_id, version)


async def block(
    services: Services, caller: Caller, project_ref: str, version: str, reason: str
) -> dict[str, Any]:
    """Block a release from any environment it has not succeeded in (a new reason replaces
    the old one)."""
    return await _set_block(services, caller, project_ref, version, reason)


async def unblock(
    services: Services, caller: Caller, project_ref: str, version: str
) -> dict[str, Any]:
    return await _set_block(services, caller, project_ref, version, None)


async def _set_block(
    services: Services, caller: Caller, project_ref: str, version: str, reason: str | None
) -> dict[str, Any]:
    project, project_id, release = await _release(services, project_ref, version)
    docs = [public_id("projects", project_id)]
    async with services.tx(caller) as tx:
        tx.require(
            P.ReleaseEdit,
            project=perms.ProjectRef(project.name, project.group),
            documents=docs,
            project_id=project_id,
        )
        if reason is not None:
            reason = reason_given(reason)
        if release is None:
            raise NotFound(f"{project.name} has no release {version}")
        label = f"{project.name} {release.version}"
        docs.append(public_id("releases", release.id))
        before = block_of(release)
        if reason is None and before is None:
            raise Conflict(f"{label} is not blocked")
        values = (
            {"blocked_reason": reason, "blocked_by": caller.username, "blocked_at": tx.now}
            if reason is not None
            else {"blocked_reason": None, "blocked_by": None, "blocked_at": None}
        )
        await tx.session.execute(update(t.releases).where(REL.id == release.id).values(**values))
        if reason is not None:
            await tx.audit(
                Category.RELEASE_BLOCKED,
                f"{caller.username} blocked {label}: {reason}",
                documents=docs,
                details={"version": release.version, "reason": reason},
                project_id=project_id,
            )
        else:
            assert before is not None
            await tx.audit(
                Category.RELEASE_UNBLOCKED,
                f"{caller.username} unblocked {label} (blocked by {before.by}: {before.reason})",
                documents=docs,
                details={
                    "version": release.version,
                    "blocked_by": before.by,
                    "reason": before.reason,
                },
                project_id=project_id,
            )
        row = (await tx.session.execute(select(t.releases).where(REL.id == release.id))).one()
    return {
        "project": project.name,
        "version": release.version,
        "blocked": blocked_view(row),
    }
