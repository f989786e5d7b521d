"""What targets change in a deployment, with local targets and the real engine, on SQLite and
PostgreSQL: guided failure asks about the targets that failed and retries only those; a target
found unhealthy fails a deployment before anything runs, or is left out by a step that says so;
a script step with no target roles runs on a worker, the server's built-in one by default."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, insert

from conveyor.domain.errors import ValidationFailed
from conveyor.engine.node import Node
from conveyor.services import interruptions, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, finished

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Web
targets:
  - name: web-1
    environments: [Dev]
    roles: [web]
  - name: web-2
    environments: [Dev]
    roles: [web]
  - name: web-3
    environments: [Dev]
    roles: [web]
projects:
  - name: Site
    group: Web
    lifecycle: Anywhere
    process:
      steps:
        - name: Roll
          type: script
          target_roles: [web]
{policy}          script: |
            echo "ran on #{{Conveyor.Target.Name}}"
            [ "#{{Conveyor.Target.Name}}" != web-2 ] || [ -e fixed ] || exit 3
        - name: Report
          type: script
          script: 'echo "report ran on #{{Conveyor.Target.Name}}"'
"""


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=4, name=f"targets-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _site(services: Services, admin: Caller, policy: str = "") -> None:
    line = f"          unhealthy_targets: {policy}\n" if policy else ""
    await apply_text(services, admin, CONFIG.format(policy=line))


async def _lines(services: Services, admin: Caller, task: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = (await tasks.task_log(services, admin, task))["lines"]
    return lines


def _ran_on(lines: list[dict[str, Any]], target: str) -> int:
    return sum(1 for line in lines if line["line"] == f"ran on {target}")


async def _pending(services: Services, admin: Caller, task: str) -> dict[str, Any]:
    for _ in range(200):
        found = await interruptions.list_interruptions(
            services, admin, task=task, pending_only=True
        )
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{task} asked nobody")


async def _mark_health(services: Services, target: str, state: str) -> None:
    now = datetime.now(UTC)
    async with services.write() as session:
        await session.execute(delete(t.target_health).where(t.target_health.c.target == target))
        await session.execute(
            insert(t.target_health).values(
                target=target,
                state=state,
                message="no answer" if state == "unhealthy" else "",
                os="",
                agent_version="",
                checked_at=now,
                changed_at=now,
            )
        )


async def test_guided_failure_asks_about_the_failed_target_and_retries_only_it(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin)
    task = await deploy(services, admin, "Site", guided_failure=True)
    asked = await _pending(services, admin, task)
    assert asked["kind"] == "guided_failure"
    assert "failed on web-2" in asked["title"], asked
    assert "Retry on web-2 only" in asked["instructions"], asked
    # What the person fixes on web-2 before retrying.
    folder = services.settings.data_dir / "targets" / "web-2" / "dev" / "site"
    (folder / "fixed").touch()
    await interruptions.submit(services, admin, asked["id"], "retry")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    lines = await _lines(services, admin, task)
    # web-1 and web-3 succeeded the first time and were not deployed again.
    assert (_ran_on(lines, "web-1"), _ran_on(lines, "web-2"), _ran_on(lines, "web-3")) == (1, 2, 1)
    assert any("Retrying on web-2 only" in line["line"] for line in lines), lines
    assert any(line["line"] == "report ran on the server" for line in lines)


async def test_ignoring_a_target_failure_deploys_the_others_and_carries_on(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin)
    task = await deploy(services, admin, "Site", guided_failure=True)
    asked = await _pending(services, admin, task)
    await interruptions.submit(services, admin, asked["id"], "ignore", "web-2 is retired")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    assert "failure on web-2 ignored by admin" in result["steps"][0]["reason"]
    lines = await _lines(services, admin, task)
    assert any(line["line"] == "report ran on the server" for line in lines)


async def test_an_unhealthy_target_fails_the_deployment_before_anything_runs(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin)
    await _mark_health(services, "web-3", "unhealthy")
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "failed", result
    assert "unhealthy target: web-3" in (result.get("error") or ""), result
    assert all(step["state"] == "pending" for step in result["steps"]), result["steps"]
    text = "\n".join(line["line"] for line in await _lines(services, admin, task))
    assert "Target web-3 is unhealthy (needed by Roll)" in text
    assert "ran on" not in text


async def test_a_step_may_leave_unhealthy_targets_out(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin, policy="skip")
    await _mark_health(services, "web-2", "unhealthy")
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    lines = await _lines(services, admin, task)
    assert (_ran_on(lines, "web-1"), _ran_on(lines, "web-2"), _ran_on(lines, "web-3")) == (1, 0, 1)
    assert any("Leaving out unhealthy targets: web-2" in line["line"] for line in lines)


async def test_without_the_built_in_worker_a_serverside_step_needs_a_worker(
    services: Services, admin: Caller
) -> None:
    await _site(services, admin)
    kept = services.settings
    services.settings = kept.model_copy(update={"builtin_worker": False})
    running = Node(services, slots=2, name=f"no-builtin-{os.getpid()}")
    services.settings = kept
    await running.start()
    try:
        folder = services.settings.data_dir / "targets" / "web-2" / "dev" / "site"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fixed").touch()
        task = await deploy(services, admin, "Site")
        result = await finished(services, admin, task, waiting=False)
    finally:
        await running.stop()
    assert result["state"] == "failed", result
    report = result["steps"][1]
    assert report["state"] == "failed"
    assert 'no worker in pool "default" can run this step' in report["reason"], report
    assert "CONVEYOR_BUILTIN_WORKER=true" in report["reason"]


async def test_worker_pools_are_checked_when_the_configuration_is_applied(
    services: Services, admin: Caller
) -> None:
    await _site(services, admin)
    bad = (
        CONFIG.format(policy="").replace(
            "          script: 'echo \"report ran on #{Conveyor.Target.Name}\"'",
            "          worker_pool: builders\n          script: echo report",
        )
        + """  - name: Tools
    group: Web
    lifecycle: Anywhere
    process:
      steps:
        - name: Lint
          type: script
          target_roles: [web]
          worker_pool: default
          script: echo lint
"""
    )
    bad = bad.replace(
        "targets:\n",
        "targets:\n  - name: builder-1\n    kind: agent\n    pool: builds\n"
        "    environments: [Dev]\n",
    )
    with pytest.raises(ValidationFailed) as error:
        await apply_text(services, admin, bad)
    said = {(p.path[-1], p.message) for p in error.value.problems}
    assert (
        "worker_pool",
        'no worker is in pool "builders": add a target with pool: builders',
    ) in said
    assert any(where == "worker_pool" and "not on a worker" in text for where, text in said)
    assert any(where == "pool" and "remove its environments" in text for where, text in said)
