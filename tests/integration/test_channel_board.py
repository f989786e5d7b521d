"""The dashboard's cells per channel as a projection (``dashboard_channels``), on SQLite and
PostgreSQL: after real deployments (successes, a failure, a redeploy, two channels, a release
in Default made before the project had channels) the projection holds what grouping every
deployment by channel finds, and the lines show it; an upgrade fills it from the history, so the
lines an upgraded server shows are the ones it showed before; and retention deleting a
deployment a cell points at writes the cell anew from what is left."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.documents import key
from conveyor.engine.node import Node
from conveyor.services import channels, deployments, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.settings import Settings
from conveyor.store import runs
from conveyor.store import tables as t
from conveyor.store.db import downgrade, upgrade

D, R, C = t.deployments.c, t.releases.c, t.dashboard_channels.c

BEFORE_CHANNELS = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Test]
project_groups:
  - name: Apps
projects:
  - name: Web
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Run
          type: script
          script: 'case "#{Conveyor.Release.Number}" in *.9) exit 1;; esac'
"""
WITH_CHANNELS = (
    BEFORE_CHANNELS
    + """    channels:
      - {name: Main, default: true}
      - {name: Beta}
"""
)


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=2, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def _deploy(services: Services, admin: Caller, version: str, environment: str) -> str:
    queued = await deployments.deploy(services, admin, "Web", version, environment)
    task = queued.as_dict()["task"]
    for _ in range(600):
        state = str((await tasks.get_task(services, admin, task))["state"])
        if state in ("success", "failed", "timed_out", "canceled"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} never ended")


async def _history(services: Services, admin: Caller) -> None:
    await apply_text(services, admin, BEFORE_CHANNELS)
    await releases.create_release(services, admin, "Web", version="0.9.0")  # stays in Default
    assert await _deploy(services, admin, "0.9.0", "Dev") == "success"
    await apply_text(services, admin, WITH_CHANNELS)
    await releases.create_release(services, admin, "Web", version="1.0.0")  # Main
    await releases.create_release(services, admin, "Web", version="1.0.9")  # Main, fails
    await releases.create_release(services, admin, "Web", version="2.0.0", channel="Beta")
    await releases.create_release(services, admin, "Web", version="2.0.9", channel="Beta")
    for version, environment, ended in [
        ("1.0.0", "Dev", "success"),
        ("1.0.0", "Test", "success"),
        ("1.0.9", "Dev", "failed"),
        ("2.0.0", "Dev", "success"),
        ("1.0.0", "Dev", "success"),  # a redeploy after the failure
        ("2.0.9", "Dev", "failed"),
    ]:
        assert await _deploy(services, admin, version, environment) == ended


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _grouped(services: Services) -> dict[tuple[int, int, str], tuple[Any, ...]]:
    """What the dashboard computed before the projection: the latest deployment of each
    project, environment and channel, and the channel's latest success there (GROUP BY)."""
    joined = t.deployments.join(t.releases, R.id == D.release_id)
    latest = (
        select(func.max(D.id))
        .select_from(joined)
        .group_by(D.project_id, D.environment_id, R.channel)
    )
    succeeded = (
        select(func.max(D.id))
        .select_from(joined)
        .where(D.state == "success")
        .group_by(D.project_id, D.environment_id, R.channel)
    )
    fields = (D.id, D.project_id, D.environment_id, D.state, D.task_id, D.completed_at)
    async with services.read() as session:
        rows = (
            await session.execute(
                select(*fields, R.version, R.channel)
                .select_from(joined)
                .where(D.id.in_(latest.scalar_subquery()))
            )
        ).all()
        success = {
            (r.project_id, r.environment_id, key(r.channel)): r.version
            for r in await session.execute(
                select(D.project_id, D.environment_id, R.channel, R.version)
                .select_from(joined)
                .where(D.id.in_(succeeded.scalar_subquery()))
            )
        }
    return {
        (r.project_id, r.environment_id, key(r.channel)): (
            r.id,
            r.version,
            r.state,
            r.task_id,
            _utc(r.completed_at),
            success.get((r.project_id, r.environment_id, key(r.channel))),
        )
        for r in rows
    }


async def _projected(services: Services) -> dict[tuple[int, int, str], tuple[Any, ...]]:
    async with services.read() as session:
        rows = (await session.execute(select(t.dashboard_channels))).all()
    return {
        (r.project_id, r.environment_id, r.channel): (
            r.deployment_id,
            r.release_version,
            r.state,
            r.task_id,
            _utc(r.completed_at),
            r.success_version,
        )
        for r in rows
    }


def _shown(lines: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (line["channel"], cell["environment"]): (cell["release"], cell["state"])
        for line in lines
        for cell in line["cells"]
    }


@pytest.mark.usefixtures("engine")
async def test_the_projection_holds_what_grouping_every_deployment_finds(
    services: Services, admin: Caller
) -> None:
    await _history(services, admin)
    projected = await _projected(services)
    assert projected == await _grouped(services)
    # Default (the release made before channels), Main and Beta in Dev; Main in Test.
    assert sorted((k[2], v[1], v[2], v[5]) for k, v in projected.items()) == [
        ("beta", "2.0.9", "failed", "2.0.0"),
        ("default", "0.9.0", "success", "0.9.0"),
        ("main", "1.0.0", "success", "1.0.0"),
        ("main", "1.0.0", "success", "1.0.0"),
    ]
    # The lines of the channels the project lists; Default's release is on the project's line.
    assert _shown(await channels.dashboard_lines(services, admin)) == {
        ("Main", "Dev"): ("1.0.0", "success"),
        ("Main", "Test"): ("1.0.0", "success"),
        ("Beta", "Dev"): ("2.0.9", "failed"),
    }
    # Each cell points at the deployment before it in its channel (rollback).
    async with services.read() as session:
        main_dev = (
            await session.execute(
                select(C.previous_deployment_id, C.deployment_id).where(C.channel == "main")
            )
        ).all()
        states = dict((await session.execute(select(D.id, D.state))).all())
    assert sorted(states[p] for p, _ in main_dev if p is not None) == ["failed"]


@pytest.mark.usefixtures("engine")
async def test_an_upgrade_fills_the_projection_from_the_history(
    services: Services, admin: Caller, settings: Settings
) -> None:
    await _history(services, admin)
    kept = await _projected(services)
    shown = await channels.dashboard_lines(services, admin)
    downgrade(settings.database_url, "0020")  # as a server at 0020 left it: no projection
    upgrade(settings.database_url)
    assert await _projected(services) == kept
    assert await channels.dashboard_lines(services, admin) == shown
    assert len(shown) == 2 and all(line["cells"] for line in shown)


@pytest.mark.usefixtures("engine")
async def test_retention_deleting_a_cells_deployment_writes_the_cell_anew(
    services: Services, admin: Caller
) -> None:
    await _history(services, admin)
    async with services.read() as session:
        beta = (
            await session.execute(
                select(C.deployment_id, C.previous_deployment_id).where(C.channel == "beta")
            )
        ).one()
        default = (
            await session.execute(select(C.deployment_id).where(C.channel == "default"))
        ).scalar_one()
        task_of = dict((await session.execute(select(D.id, D.task_id))).all())
    async with services.tx(admin) as tx:  # Beta's latest in Dev, and Default's only one
        gone = (beta.deployment_id, default)
        await runs.forget(tx.session, {d: task_of[d] for d in gone}, tx.now)
    projected = await _projected(services)
    assert projected == await _grouped(services)
    assert sorted((k[2], v[0], v[1], v[2]) for k, v in projected.items() if k[2] != "main") == [
        ("beta", beta.previous_deployment_id, "2.0.0", "success")
    ]
    assert _shown(await channels.dashboard_lines(services, admin))[("Beta", "Dev")] == (
        "2.0.0",
        "success",
    )
