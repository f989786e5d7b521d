"""The insights' facts written as deployments end (``conveyor.store.facts.record``), on SQLite
and PostgreSQL: real deployments through the services and the engine (a success after a
manual intervention, a failure, its restore, a rollback, a guided failure ignored) give the
facts the bulk rebuild computes and the numbers worked out by hand; and an upgrade fills the
facts of the deployments that ended before it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.domain.insights import NO_TEAM
from conveyor.engine.node import Node
from conveyor.services import deployments, insights, interruptions, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.settings import Settings
from conveyor.store import facts
from conveyor.store import tables as t
from conveyor.store.db import downgrade, upgrade
from tests.integration.test_insights_sql import put_history
from tests.unit.test_insights import SINCE, UNTIL

CONFIG = """
environments:
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Prod]
project_groups:
  - name: Apps
projects:
  - name: Web
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Approve
          type: manual_intervention
          instructions: Look at it (no responsible team, so it may be skipped)
        - name: Flaky
          type: script
          script: exit 1
"""


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=2, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def _until(services: Services, admin: Caller, task: str, states: tuple[str, ...]) -> str:
    for _ in range(600):
        state = str((await tasks.get_task(services, admin, task))["state"])
        if state in states:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} never reached {states}")


async def _answer(services: Services, caller: Caller, task: str, result: str) -> None:
    assert await _until(services, caller, task, ("waiting",)) == "waiting"
    [pending] = await interruptions.list_interruptions(
        services, caller, task=task, pending_only=True
    )
    await interruptions.submit(services, caller, pending["id"], result, "by the test")


async def _deploy(
    services: Services,
    admin: Caller,
    version: str,
    *,
    skip: list[str],
    answer: tuple[Caller, str] | None = None,
) -> tuple[str, datetime]:
    """Deploy ``version`` of Web to Prod (answering its one question), wait for its end;
    its state and end."""
    queued = await deployments.deploy(
        services, admin, "Web", version, "Prod", skip=skip, guided_failure=True
    )
    task = queued.as_dict()["task"]
    if answer is not None:
        await _answer(services, answer[0], task, answer[1])
    state = await _until(services, admin, task, ("success", "failed", "timed_out", "canceled"))
    async with services.read() as session:
        ended = (
            await session.execute(
                select(t.deployments.c.completed_at).where(
                    t.deployments.c.id == queued.deployment_id
                )
            )
        ).scalar_one()
    return state, ended if ended.tzinfo else ended.replace(tzinfo=UTC)


async def _rows(services: Services) -> tuple[list[Any], list[Any]]:
    w = t.deployment_waits
    async with services.read() as session:
        got = await session.execute(select(t.deployment_facts).order_by("deployment_id"))
        waits = await session.execute(
            select(*(c for c in w.c if c.name != "id")).order_by(w.c.deployment_id, w.c.team)
        )
        return [tuple(r) for r in got], [tuple(r) for r in waits]


async def test_facts_written_as_deployments_end(
    services: Services, admin: Caller, engine: Node
) -> None:
    await apply_text(services, admin, CONFIG)
    now = datetime.now(UTC)
    for n in range(1, 4):  # each with a commit an hour older than the one before
        commit = f"{n:040x}"
        stamp = (now - timedelta(hours=10 - n)).isoformat()
        build = {"commit": commit, "commits": [{"sha": commit, "timestamp": stamp}]}
        await releases.create_release(services, admin, "Web", version=f"1.0.{n}", build=build)
    flaky, both = ["Flaky"], ["Approve", "Flaky"]
    # 1: a success after a manual intervention.
    one = await _deploy(services, admin, "1.0.1", skip=flaky, answer=(admin, "proceed"))
    # 2: a failure (its guided failure aborted), 3: the success that restores it.
    two = await _deploy(services, admin, "1.0.2", skip=["Approve"], answer=(admin, "abort"))
    three = await _deploy(services, admin, "1.0.2", skip=both)
    # 4: a success rolled back by 5 (an earlier release), which so restores it.
    four = await _deploy(services, admin, "1.0.3", skip=both)
    five = await _deploy(services, admin, "1.0.2", skip=both)
    # 6: a success by ignoring a guided failure: a failure nothing restored yet.
    six = await _deploy(services, admin, "1.0.3", skip=["Approve"], answer=(admin, "ignore"))
    states = [s for s, _ in (one, two, three, four, five, six)]
    assert states == ["success", "failed", "success", "success", "success", "success"]

    report = insights.as_json(
        await insights.report(services, admin, insights.Filters(since=now - timedelta(days=1)))
    )
    m = report["overall"]
    assert (m["deployments"], m["successes"], m["failures"]) == (6, 5, 3)
    assert m["change_failure_rate"] == pytest.approx(0.5)
    assert (m["restored"], m["open_failures"]) == (2, 1)
    restores = [(three[1] - two[1]).total_seconds(), (five[1] - four[1]).total_seconds()]
    assert m["time_to_restore_seconds"] == pytest.approx(sum(restores) / 2, abs=0.1)
    assert m["lead_time_count"] == 5
    [waited] = report["approval_waits"]
    assert (waited["team"], waited["waits"]) == (NO_TEAM, 1)
    assert m["approvals_share_of_lead_time"] is not None

    # What each end wrote is what the bulk rebuild computes from the same history.
    written = await _rows(services)
    assert len(written[0]) == 6 and len(written[1]) == 1
    async with services.tx(admin) as tx:
        await facts.rebuild(tx.session, sqlite=services.is_sqlite)
    assert await _rows(services) == written


async def test_an_upgrade_fills_the_facts_of_ended_deployments(
    services: Services, admin: Caller, settings: Settings
) -> None:
    """A database at 0019 with a history of ended deployments, upgraded: the report shows the
    numbers of that history (tests/integration/test_insights_sql.py's)."""
    downgrade(settings.database_url, "0019")
    # The history written as a server at 0019 would have left it: no facts.
    await put_history(services, admin, with_facts=False)
    upgrade(settings.database_url)
    found = await insights.report(
        services, admin, insights.Filters("web", environment="prod", since=SINCE, until=UNTIL)
    )
    m = insights.as_json(found)["overall"]
    assert (m["deployments"], m["successes"], m["failures"]) == (6, 5, 2)
    assert (m["restored"], m["open_failures"]) == (2, 0)
    assert m["time_to_restore_seconds"] == pytest.approx((65 * 60 + 3600) / 2, abs=0.1)
