"""Workers: script steps that name no target roles run on a worker of their pool, two real SSH
machines here (`tests/sshd.py`), the least busy one first; an unhealthy worker is passed over;
the server itself is the default pool's built-in worker. Real engine, SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from conveyor.engine.node import Node
from conveyor.services import tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.integration.test_engine import deploy, finished
from tests.sshd import Sshd, start_sshd

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Tools
targets:
{workers}
projects:
  - name: Checks
    group: Tools
    lifecycle: Anywhere
    process:
      steps:
        - name: Lint
          type: script
          worker_pool: builds
          script: |
            echo "lint on #{{Conveyor.Target.Name}} in $PWD"
            sleep 1
        - name: Test
          type: script
          worker_pool: builds
          start: with_previous
          script: |
            echo "test on #{{Conveyor.Target.Name}} in $PWD"
            sleep 1
        - name: Report
          type: script
          script: 'echo "report on #{{Conveyor.Target.Name}}"'
"""

WORKER = """  - name: {name}
    kind: ssh
    pool: builds
    host: {host}
    port: {port}
    user: {user}
    host_key: {host_key}
    private_key: ${{env:KEY_{n}}}
    work_dir: {work}
"""


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[list[Sshd]]:
    started = [start_sshd(tmp_path / f"w{i}") for i in (1, 2)]
    try:
        yield started
    finally:
        for sshd in started:
            sshd.stop()


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=2, name=f"workers-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _apply(services: Services, admin: Caller, machines: list[Sshd]) -> None:
    workers = "".join(
        WORKER.format(
            name=f"builder-{i + 1}",
            host=m.host,
            port=m.port,
            user=m.user,
            host_key=m.host_key,
            n=i + 1,
            work=m.folder / "work",
        )
        for i, m in enumerate(machines)
    )
    keys = {f"KEY_{i + 1}": m.private_key for i, m in enumerate(machines)}
    await apply_text(services, admin, CONFIG.format(workers=workers), secrets=keys)


async def _lines(services: Services, admin: Caller, task: str) -> list[str]:
    log: list[dict[str, Any]] = (await tasks.task_log(services, admin, task))["lines"]
    return [str(line["line"]) for line in log]


async def test_steps_of_a_pool_go_to_its_least_busy_workers(
    services: Services, admin: Caller, node: Node, machines: list[Sshd]
) -> None:
    await _apply(services, admin, machines)
    task = await deploy(services, admin, "Checks")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    lines = await _lines(services, admin, task)
    ran = {line.split(" in ")[0] for line in lines if line.startswith(("lint on", "test on"))}
    # The two steps ran at once: the second went to the worker the first was not busy on.
    assert ran in (
        {"lint on builder-1", "test on builder-2"},
        {"lint on builder-2", "test on builder-1"},
    ), lines
    # In a scratch folder of the step on the worker, removed when the script ended.
    scratch = [line.split(" in ")[1] for line in lines if line.startswith(("lint on", "test on"))]
    assert all("/work/" in where and not Path(where).exists() for where in scratch), scratch
    # A step of the default pool stays on the server, the built-in worker.
    assert "report on the server" in lines


async def test_an_unhealthy_worker_is_passed_over(
    services: Services, admin: Caller, node: Node, machines: list[Sshd]
) -> None:
    await _apply(services, admin, machines)
    now = datetime.now(UTC)
    async with services.write() as session:
        await session.execute(
            insert(t.target_health).values(
                target="builder-1",
                state="unhealthy",
                message="no answer",
                os="",
                agent_version="",
                checked_at=now,
                changed_at=now,
            )
        )
    task = await deploy(services, admin, "Checks")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    lines = await _lines(services, admin, task)
    assert not any("on builder-1" in line for line in lines), lines
    assert sum(line.startswith(("lint on builder-2", "test on builder-2")) for line in lines) == 2
