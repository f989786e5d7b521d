"""Build information read back: where change detection starts for each project (the commit of
its newest release, or of the release current in an environment), and what a deployment brings
(the commits of the releases between the one current in the environment and the one deployed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from conveyor.domain import buildinfo
from conveyor.domain import permissions as perms
from conveyor.domain.documents import Project
from conveyor.domain.errors import PermissionDenied
from conveyor.domain.versions import Version
from conveyor.services.config import load
from conveyor.services.core import Caller, Services
from conveyor.services.documents import resolve
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission


def _ref(project: Project) -> perms.ProjectRef:
    return perms.ProjectRef(project.name, project.group)


def _may(caller: Caller, permission: P, project: Project) -> bool:
    return perms.authorize(caller.principal, permission, project=_ref(project)).allowed


async def _builds(services: Services, release_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    ids = sorted(set(release_ids))
    if not ids:
        return {}
    async with services.read() as session:
        rows = await session.execute(
            select(t.releases.c.id, t.releases.c.build).where(t.releases.c.id.in_(ids))
        )
        return {r.id: dict(r.build or {}) for r in rows}


async def _newest(services: Services, project_ids: list[int]) -> dict[int, tuple[int, str]]:
    """Project id -> (release id, version) of its highest version."""
    async with services.read() as session:
        rows = await session.execute(
            select(t.releases.c.project_id, t.releases.c.id, t.releases.c.version).where(
                t.releases.c.project_id.in_(project_ids)
            )
        )
        best: dict[int, tuple[Version, int, str]] = {}
        for r in rows:
            parsed = Version(r.version)
            known = best.get(r.project_id)
            if known is None or (parsed, r.id) > (known[0], known[1]):
                best[r.project_id] = (parsed, r.id, r.version)
    return {pid: (rid, version) for pid, (_, rid, version) in best.items()}


async def current_releases(
    services: Services, project_ids: list[int], environment_id: int
) -> dict[int, tuple[int, str]]:
    """Project id -> (release id, version) last deployed successfully to the environment."""
    async with services.read() as session:
        rows = await session.execute(
            select(
                t.dashboard.c.project_id,
                t.dashboard.c.success_release_id,
                t.dashboard.c.success_version,
            ).where(
                t.dashboard.c.environment_id == environment_id,
                t.dashboard.c.project_id.in_(project_ids),
            )
        )
        return {
            r.project_id: (r.success_release_id, r.success_version)
            for r in rows
            if r.success_release_id is not None
        }


async def baselines(
    services: Services,
    caller: Caller,
    *,
    environment: str | None = None,
    project: str | None = None,
) -> list[dict[str, Any]]:
    """For each project the caller may view (or just ``project``): its watch paths and the
    release change detection starts from, with that release's commit. ``release`` or
    ``commit`` is None with a ``reason`` when there is none to start from."""
    loaded = await load(services)
    env_name = None
    env_id = None
    if environment:
        env = resolve(loaded, "environments", environment)
        decision = perms.authorize(caller.principal, P.EnvironmentView, environment=env.name)
        if not decision.allowed:
            raise PermissionDenied(decision.reason, permission=str(P.EnvironmentView))
        env_name, env_id = env.name, loaded.id_of("environments", env.name)
    if project:
        one = resolve(loaded, "projects", project)
        if not _may(caller, P.ProjectView, one):
            raise PermissionDenied(
                perms.authorize(caller.principal, P.ProjectView, project=_ref(one)).reason,
                permission=str(P.ProjectView),
            )
        projects = [one]
    else:
        projects = [p for p in loaded.model.projects if _may(caller, P.ProjectView, p)]
    ids = {p.name: loaded.id_of("projects", p.name) for p in projects}
    wanted = [pid for pid in ids.values() if pid is not None]
    if env_id is not None:
        chosen = await current_releases(services, wanted, env_id)
    else:
        chosen = await _newest(services, wanted)
    builds = await _builds(services, (rid for rid, _ in chosen.values()))
    out = []
    for p in projects:
        pid = ids[p.name]
        item: dict[str, Any] = {
            "project": p.name,
            "watch_paths": list(p.watch_paths),
            "disabled": p.disabled,
            "release": None,
            "commit": None,
            "reason": None,
        }
        found = chosen.get(pid) if pid is not None else None
        if not _may(caller, P.ReleaseView, p):
            item["reason"] = "you may not view its releases (ReleaseView)"
        elif found is None:
            item["reason"] = (
                f"it has no successful deployment in {env_name}" if env_name else "no release yet"
            )
        else:
            release_id, version = found
            item["release"] = version
            item["commit"] = builds.get(release_id, {}).get("commit")
            if not item["commit"]:
                item["reason"] = f"its release {version} recorded no commit"
        out.append(item)
    return out


async def plan_changes(
    services: Services,
    caller: Caller,
    loaded: Loaded,
    entries: list[tuple[int, str, str]],
    current: dict[int, str | None],
) -> list[dict[str, Any]]:
    """What deploying brings, for each (project id, project name, version) of ``entries`` (the
    release, then its children): the commits of its releases after the one ``current`` in the
    environment, up to this one. Projects whose releases the caller may not view are left out."""
    visible = []
    for pid, name, version in entries:
        project = loaded.model.get("projects", loaded.name_of("projects", pid) or name)
        if isinstance(project, Project) and _may(caller, P.ReleaseView, project):
            visible.append((pid, project.name, version))
    if not visible:
        return []
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.releases.c.id, t.releases.c.project_id, t.releases.c.version).where(
                    t.releases.c.project_id.in_([pid for pid, _, _ in visible])
                )
            )
        ).all()
    # Only the builds of the releases in [current, version] of each entry are read: the
    # current one's commits are in the environment already (older ones are not looked at).
    needed: set[int] = set()
    for pid, _, version in visible:
        low = current.get(pid)
        for r in rows:
            parsed = Version(r.version)
            if (
                r.project_id == pid
                and parsed <= Version(version)
                and (not low or parsed >= Version(low))
            ):
                needed.add(r.id)
    builds = await _builds(services, needed)
    out = []
    for pid, name, version in visible:
        pairs = [(r.version, builds[r.id]) for r in rows if r.project_id == pid and r.id in builds]
        result = buildinfo.brought(pairs, current.get(pid), version)
        out.append(
            {
                "project": name,
                "release": version,
                "current": result.current,
                "commits": result.commits,
                "releases": result.releases,
                "without_commits": result.without_commits,
                "rollback": result.rollback,
                "truncated": result.truncated,
            }
        )
    return out
