"""The moves a person may make next (promote, redeploy, retry, roll back) on the release, task and
dashboard pages: the facts come from the dashboard projection and a release's deployments, the
choice from ``domain/release_moves.py``, and only the moves the reader may make are kept
(DeploymentCreate for the project and environment). Each one leads to the plan page first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select

from conveyor.domain import channels as ch
from conveyor.domain import lifecycle as lc
from conveyor.domain import permissions as perms
from conveyor.domain import release_moves as rm
from conveyor.domain.documents import Project, key
from conveyor.services.channels import ChannelLine
from conveyor.services.config import load, parse_public_id
from conveyor.services.core import Caller, Services
from conveyor.services.deployment_views import Board
from conveyor.services.deployments import env_names, history, outcome
from conveyor.services.documents import resolve
from conveyor.services.releases import get_release
from conveyor.store import tables as t
from conveyor.store.documents import Loaded

P = perms.Permission
D = t.deployments.c
# A release is deployed a handful of times; this bounds a pathological one.
MAX_DEPLOYMENTS = 1000


def _allowed(
    caller: Caller,
    loaded: Loaded,
    project: Project,
    moves: list[rm.Move],
    version: str,
    attempts: list[lc.Attempt],
    lifecycle_name: str | None = None,
) -> list[rm.Move]:
    """The moves the caller may make, and that the lifecycle (``lifecycle_name``, by default
    the project's) allows for ``version`` (whose deployments are ``attempts``); a rollback's
    own plan page says what its lifecycle says."""
    lifecycle = loaded.model.get("lifecycles", lifecycle_name or project.lifecycle)
    if project.disabled or lifecycle is None:
        return []
    ref = perms.ProjectRef(project.name, project.group)
    return [
        m
        for m in rm.unique(moves)
        if perms.allows(
            caller.principal, P.DeploymentCreate, project=ref, environment=m.environment
        )
        and (m.version != version or lc.can_deploy(lifecycle, attempts, m.environment).allowed)
    ]


async def _places(session: Any, loaded: Loaded, project_id: int) -> dict[str, rm.Place]:
    """The project in each environment (by key), with where a rollback would go."""
    cells = (
        await session.execute(select(t.dashboard).where(t.dashboard.c.project_id == project_id))
    ).all()
    # Per environment, each release that succeeded there with its newest such deployment.
    succeeded = (
        await session.execute(
            select(D.environment_id, t.releases.c.version, func.max(D.id).label("newest"))
            .join(t.releases, t.releases.c.id == D.release_id)
            .where(D.project_id == project_id, D.state == "success")
            .group_by(D.environment_id, t.releases.c.version)
        )
    ).all()
    places: dict[str, rm.Place] = {}
    for cell in cells:
        env = loaded.name_of("environments", cell.environment_id)
        if env is None:
            continue
        there = sorted((r for r in succeeded if r.environment_id == cell.environment_id),
                       key=lambda r: r.newest, reverse=True)  # fmt: skip
        places[key(env)] = rm.Place(
            environment=env,
            latest_deployment=cell.deployment_id,
            latest_version=cell.release_version,
            latest_state=cell.state,
            current=cell.success_version,
            rollback_to=rm.rollback_target(cell.success_version, (r.version for r in there)),
        )
    return places


def _project(loaded: Loaded, name: str) -> tuple[Project, int]:
    project = resolve(loaded, "projects", name)
    assert isinstance(project, Project)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    return project, project_id


async def for_release(
    services: Services, caller: Caller, project_ref: str, version: str
) -> list[rm.Move]:
    """From each environment the release went to (its newest deployment there)."""
    release = await get_release(services, caller, project_ref, version)  # checks ReleaseView
    loaded = await load(services)
    project, project_id = _project(loaded, project_ref)
    lifecycle = ch.lifecycle_of(project, release.channel)  # the release's channel's
    order = rm.lifecycle_order(loaded.model.get("lifecycles", lifecycle))
    async with services.read() as session:
        places = await _places(session, loaded, project_id)
        rows = (
            await session.execute(
                select(D.id, D.environment_id, D.state)
                .where(D.release_id == release.id)
                .order_by(D.id.desc())
                .limit(MAX_DEPLOYMENTS)
            )
        ).all()
    newest: dict[int, Any] = {}
    for row in rows:
        newest.setdefault(row.environment_id, row)
    moves: list[rm.Move] = []
    for env in order:
        env_id = loaded.id_of("environments", env)
        last = newest.get(env_id) if env_id is not None else None
        if last is not None:
            moves += rm.after_deployment(release.version, env, last.state, last.id, places, order)
    names = env_names(loaded)
    attempts = [lc.Attempt(names.get(r.environment_id, "?"), outcome(r.state)) for r in rows]
    return _allowed(caller, loaded, project, moves, release.version, attempts, lifecycle)


async def for_deployment(services: Services, caller: Caller, deployment: str) -> list[rm.Move]:
    """From one deployment (the task page, which has checked that the reader may see it)."""
    number = parse_public_id("deployments", deployment)
    if number is None:
        return []
    loaded = await load(services)
    async with services.read() as session:
        row = (
            await session.execute(
                select(
                    D.id,
                    D.project_id,
                    D.environment_id,
                    D.state,
                    D.release_id,
                    t.releases.c.version,
                    t.releases.c.channel,
                )
                .join(t.releases, t.releases.c.id == D.release_id)
                .where(D.id == number)
            )
        ).first()
        if row is None:
            return []
        places = await _places(session, loaded, row.project_id)
        attempts = await history(session, row.release_id, env_names(loaded))
    name = loaded.name_of("projects", row.project_id)
    env = loaded.name_of("environments", row.environment_id)
    project = loaded.model.get("projects", name) if name else None
    if not isinstance(project, Project) or env is None:
        return []
    lifecycle = ch.lifecycle_of(project, row.channel)  # the release's channel's
    order = rm.lifecycle_order(loaded.model.get("lifecycles", lifecycle))
    moves = rm.after_deployment(row.version, env, row.state, row.id, places, order)
    return _allowed(caller, loaded, project, moves, row.version, attempts, lifecycle)


async def _cell_channels(
    services: Services, loaded: Loaded, by_project: Mapping[str, Mapping[str, rm.Place]]
) -> dict[tuple[str, str], str]:
    """(project, environment key) -> the channel of the cell's release, for the projects with
    a channel of another lifecycle than theirs (read only for those: most have none)."""
    ids: dict[int, str] = {}
    for name in by_project:
        project = loaded.model.get("projects", name)
        if isinstance(project, Project) and ch.channels_by_lifecycle(project):
            project_id = loaded.id_of("projects", name)
            if project_id is not None:
                ids[project_id] = name
    if not ids:
        return {}
    B = t.dashboard.c
    async with services.read() as session:
        rows = (
            await session.execute(
                select(B.project_id, B.environment_id, t.releases.c.channel)
                .join(t.releases, t.releases.c.id == B.release_id)
                .where(B.project_id.in_(list(ids)))
            )
        ).all()
    out = {}
    for row in rows:
        env = loaded.name_of("environments", row.environment_id)
        if env is not None:
            out[(ids[row.project_id], key(env))] = row.channel
    return out


# The dashboard offers the two moves a cell asks for; the release and task pages offer all.
ON_THE_BOARD = (rm.MoveKind.PROMOTE, rm.MoveKind.RETRY)


async def for_board(
    services: Services, caller: Caller, board: Board
) -> Mapping[tuple[str, str], list[rm.Move]]:
    """Per (project, environment) cell: promote a success, retry a failure. From the cells the
    board already read (the projection): no history is read, so no rollback is offered here."""
    loaded = await load(services)
    env_keys = {env: key(env) for env in board.environments}
    by_project: dict[str, dict[str, rm.Place]] = {}
    for (name, env), cell in board.cells.items():
        by_project.setdefault(name, {})[env_keys[env]] = rm.Place(
            env, cell.deployment_id, cell.release, cell.state, cell.success_version
        )
    channel_of = await _cell_channels(services, loaded, by_project)
    orders = _Orders(loaded)
    may = _May(caller)
    out: dict[tuple[str, str], list[rm.Move]] = {}
    for name, places in by_project.items():
        project = loaded.model.get("projects", name)
        if not isinstance(project, Project) or project.disabled:
            continue
        for env_key, place in places.items():
            # The cell's release follows its channel's lifecycle (by default the project's).
            order = orders(ch.lifecycle_of(project, channel_of.get((name, env_key), "")))
            kept = _on_board(project, place, places, order, may)
            if kept:
                out[(name, place.environment)] = kept
    return out


async def for_lines(
    services: Services, caller: Caller, lines: Iterable[ChannelLine]
) -> Mapping[tuple[str, str, str], list[rm.Move]]:
    """Per (project, channel, environment) cell of the dashboard's channel lines: promote and
    retry as on the board, from that channel's releases, in that channel's lifecycle."""
    loaded = await load(services)
    orders = _Orders(loaded)
    may = _May(caller)
    out: dict[tuple[str, str, str], list[rm.Move]] = {}
    for line in lines:
        project = loaded.model.get("projects", line.project)
        if not isinstance(project, Project) or project.disabled:
            continue
        places = {
            key(env): rm.Place(env, c.deployment_id, c.release, c.state, c.success_version)
            for env, c in line.cells.items()
        }
        order = orders(ch.lifecycle_of(project, line.channel))
        for place in places.values():
            kept = _on_board(project, place, places, order, may)
            if kept:
                out[(line.project, line.channel, place.environment)] = kept
    return out


class _Orders:
    """Each lifecycle's order once: the dashboard asks for a few lifecycles thousands of times."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.known: dict[str, tuple[str, ...]] = {}

    def __call__(self, lifecycle: str) -> tuple[str, ...]:
        order = self.known.get(key(lifecycle))
        if order is None:
            found = self.loaded.model.get("lifecycles", lifecycle)
            order = self.known[key(lifecycle)] = rm.lifecycle_order(found)
        return order


class _May:
    """DeploymentCreate for a project and environment, asked once per pair."""

    def __init__(self, caller: Caller) -> None:
        self.principal = caller.principal
        self.known: dict[tuple[str, str], bool] = {}

    def __call__(self, project: Project, environment: str) -> bool:
        allowed = self.known.get((project.name, environment))
        if allowed is None:
            ref = perms.ProjectRef(project.name, project.group)
            allowed = self.known[(project.name, environment)] = perms.allows(
                self.principal, P.DeploymentCreate, project=ref, environment=environment
            )
        return allowed


def _on_board(
    project: Project,
    place: rm.Place,
    places: Mapping[str, rm.Place],
    order: tuple[str, ...],
    may: _May,
) -> list[rm.Move]:
    moves = rm.after_deployment(
        place.latest_version or "",
        place.environment,
        place.latest_state or "",
        place.latest_deployment,
        places,
        order,
    )
    return [m for m in moves if m.kind in ON_THE_BOARD and may(project, m.environment)]
