"""Channels as people read them: a project's channels with their rules, and the dashboard's
release line per channel for the projects that have several (conveyor/domain/channels.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from conveyor.domain import channels as ch
from conveyor.domain.documents import Project, key
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, aware
from conveyor.services.deployment_views import Board, BoardCell, board
from conveyor.store import tables as t

C = t.dashboard_channels.c  # keyed by the channel's key (documents.key)


@dataclass(frozen=True)
class ChannelLine:
    """One channel of a project on the dashboard: the latest deployment of a release of that
    channel in each environment."""

    project: str
    channel: str
    cells: dict[str, BoardCell]  # environment -> cell


def describe(project: Project) -> list[dict[str, Any]]:
    """A project's channels for a page or the API: the implicit default when it has none."""
    first = ch.default_channel(project)
    return [
        {
            "name": c.name,
            "default": c is first,
            "lifecycle": ch.lifecycle_of(project, c.name),
            "description": c.description,
            "rules": [
                {"package": r.package, "step": r.step, "range": r.range, "tag": r.tag}
                for r in c.rules
            ],
        }
        for c in ch.channels_of(project)
    ]


async def lines(services: Services, found: Board) -> list[ChannelLine]:
    """For each shown project with several channels, a line per channel (in the order the
    project lists them), each cell only where the board itself shows one (visibility)."""
    loaded = await load(services)
    several = {}
    for name in found.projects:
        project = loaded.model.get("projects", name)
        if isinstance(project, Project) and len(project.channels) > 1:
            project_id = loaded.id_of("projects", name)
            if project_id is not None:
                several[project_id] = project
    if not several:
        return []
    envs = {loaded.id_of("environments", e): e for e in found.environments}
    # The projection (store/runs.py keeps it as deployments change): a few rows per project,
    # however long its history.
    query = select(
        C.project_id,
        C.environment_id,
        C.channel,
        C.deployment_id,
        C.release_version,
        C.state,
        C.task_id,
        C.completed_at,
        C.success_version,
    ).where(C.project_id.in_(list(several)))
    async with services.read() as session:
        rows = (await session.execute(query)).all()
    cells: dict[tuple[int, str, str], BoardCell] = {}
    for r in rows:
        env = envs.get(r.environment_id)
        project = several[r.project_id]
        if env is None or (project.name, env) not in found.cells:
            continue
        completed = aware(r.completed_at) if r.completed_at is not None else None
        # The line's "current" is its last success (what its promote and redeploy moves start
        # from).
        cells[(r.project_id, r.channel, env)] = BoardCell(
            r.release_version, r.state, r.task_id, r.deployment_id, completed, r.success_version
        )
    out = []
    for project_id, project in several.items():
        for channel in project.channels:
            mine = {
                env: cell
                for env in found.environments
                if (cell := cells.get((project_id, key(channel.name), env))) is not None
            }
            out.append(ChannelLine(project.name, channel.name, mine))
    return out


async def dashboard_lines(services: Services, caller: Caller) -> list[dict[str, Any]]:
    """The API's form: ``[{"project", "channel", "cells": [{"environment", "release", …}]}]``."""
    found = await board(services, caller)
    return [
        {
            "project": line.project,
            "channel": line.channel,
            "cells": [
                {
                    "environment": env,
                    "release": cell.release,
                    "state": cell.state,
                    "task": public_id("tasks", cell.task_id) if cell.task_id else None,
                    "completed": cell.completed_at.isoformat() if cell.completed_at else None,
                }
                for env, cell in line.cells.items()
            ],
        }
        for line in await lines(services, found)
    ]
