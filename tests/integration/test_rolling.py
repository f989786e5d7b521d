"""A step on several targets runs on all of them at once, or a window at a time (rolling), and
each target's output is its own: every log line names its target. Real scripts, real targets
(folders on this machine), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from conveyor.domain.errors import ValidationFailed
from conveyor.engine.node import Node
from conveyor.services import tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
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
{window}          script: |
            echo "started on #{{Conveyor.Target.Name}}"
            sleep 1
            [ "#{{Conveyor.Target.Name}}" != "{failing}" ] || exit 3
            echo "done on #{{Conveyor.Target.Name}}" > done.txt
"""


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=4, name=f"rolling-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _site(services: Services, admin: Caller, *, window: int | None, failing: str) -> None:
    line = f"          window: {window}\n" if window is not None else ""
    await apply_text(services, admin, CONFIG.format(window=line, failing=failing))


def _seconds(step: dict[str, object]) -> float:
    started = datetime.fromisoformat(str(step["started"]))
    completed = datetime.fromisoformat(str(step["completed"]))
    return (completed - started).total_seconds()


async def _lines(services: Services, admin: Caller, task: str) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = (await tasks.task_log(services, admin, task))["lines"]
    return lines


def _done(services: Services, target: str) -> bool:
    folder = services.settings.data_dir / "targets" / target / "dev" / "site"
    return (folder / "done.txt").exists()


async def test_targets_run_at_once_and_each_line_names_its_target(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin, window=None, failing="none")
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    # Three targets of a second each, at once: well under the three seconds one by one.
    assert _seconds(result["steps"][0]) < 2.5, result["steps"][0]
    lines = await _lines(services, admin, task)
    for target in ("web-1", "web-2", "web-3"):
        theirs = [line["line"] for line in lines if line["target"] == target]
        assert f"started on {target}" in theirs, lines
        assert all("on web-" not in text or text.endswith(target) for text in map(str, theirs)), (
            theirs
        )
        assert _done(services, target)


async def test_a_window_of_one_rolls_and_stops_at_the_first_failure(
    services: Services, admin: Caller, node: Node
) -> None:
    await _site(services, admin, window=1, failing="web-2")
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "failed", result
    step = result["steps"][0]
    assert step["state"] == "failed"
    assert _seconds(step) >= 1.9, step  # one after the other: web-1, then web-2
    lines = await _lines(services, admin, task)
    by_target = {
        target: [str(line["line"]) for line in lines if line["target"] == target]
        for target in ("web-1", "web-2", "web-3")
    }
    assert "started on web-1" in by_target["web-1"]
    assert "started on web-2" in by_target["web-2"]
    assert "started on web-3" not in by_target["web-3"]
    assert any("not started: an earlier target failed" in text for text in by_target["web-3"])
    assert _done(services, "web-1") and not _done(services, "web-2")
    assert not _done(services, "web-3")


async def test_a_window_needs_targets(services: Services, admin: Caller) -> None:
    config = CONFIG.format(window="          window: 2\n", failing="none").replace(
        "          target_roles: [web]\n", ""
    )
    with pytest.raises(ValidationFailed) as refused:
        await apply_text(services, admin, config)
    assert "applies to a step that runs on targets" in str(refused.value.problems), refused.value
    zero = CONFIG.format(window="          window: 0\n", failing="none")
    with pytest.raises(ValidationFailed) as refused:
        await apply_text(services, admin, zero)
    assert "must be at least 1" in str(refused.value.problems)
