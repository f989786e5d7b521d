"""SSH targets on hosts of their own: each sshd runs in its own network namespace behind a veth
link (tests/netns.py), so a deployment's traffic really crosses a network, and a test can cut a
host off in the middle of a step. The step then fails with a clear reason within seconds, the
task does not hang, and the rest of a rolling deployment does what its window says. Real sshd,
real engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.engine.node import Node
from conveyor.services import tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.integration.test_engine import deploy, finished
from tests.netns import Host, make_host
from tests.sshd import Sshd, start_sshd

# Keepalives every second, two missed: a host that stops answering is noticed in about 3 s.
KEEPALIVE = 1.0

HEAD = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Apps
targets:
{targets}
projects:
  - name: Api
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Roll out
          type: script
          target_roles: [api]
{window}          script: |
            echo "begin on #{{Conveyor.Target.Name}}"
            sleep 4
            echo "end on #{{Conveyor.Target.Name}}"
"""

TARGET = """  - name: {name}
    kind: ssh
    environments: [Dev]
    roles: [api]
    host: {host}
    port: {port}
    user: {user}
    host_key: {host_key}
    private_key: ${{env:KEY_{n}}}
"""


@pytest.fixture
def hosts() -> Iterator[list[tuple[Host, Sshd]]]:
    """Hosts with an sshd each (``_machines``): sshd stopped, then the namespace removed."""
    started: list[tuple[Host, Sshd]] = []
    try:
        yield started
    finally:
        for host, sshd in started:
            sshd.stop()
            host.remove()


@pytest.fixture
def quick_keepalive(services: Services) -> Iterator[None]:
    kept = services.settings
    services.settings = kept.model_copy(update={"ssh_keepalive_seconds": KEEPALIVE})
    try:
        yield
    finally:
        services.settings = kept


@pytest.fixture
async def node(services: Services, quick_keepalive: None) -> AsyncIterator[Node]:
    running = Node(services, slots=2, name=f"netns-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def _machines(tmp_path: Path, started: list[tuple[Host, Sshd]], count: int) -> None:
    for i in range(count):
        host = make_host()
        try:
            sshd = start_sshd(
                tmp_path / f"app-{i + 1}", host=host.address, port=22, prefix=host.prefix
            )
        except BaseException:
            host.remove()
            raise
        started.append((host, sshd))


async def _apply(
    services: Services, admin: Caller, machines: list[tuple[Host, Sshd]], window: int | None
) -> None:
    targets = "".join(
        TARGET.format(
            name=f"app-{i + 1}",
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            host_key=sshd.host_key,
            n=i + 1,
        )
        for i, (_, sshd) in enumerate(machines)
    )
    line = f"          window: {window}\n" if window else ""
    keys = {f"KEY_{i + 1}": sshd.private_key for i, (_, sshd) in enumerate(machines)}
    await apply_text(services, admin, HEAD.format(targets=targets, window=line), secrets=keys)


async def _when_begun(services: Services, admin: Caller, task: str, target: str) -> None:
    for _ in range(400):
        lines = (await tasks.task_log(services, admin, task))["lines"]
        if any(line["line"] == f"begin on {target}" for line in lines):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{target} never began: {lines}")


def _by_target(lines: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        if line["target"]:
            out.setdefault(str(line["target"]), []).append(str(line["line"]))
    return out


async def test_a_host_cut_off_mid_step_fails_it_and_a_rolling_deployment_stops(
    services: Services,
    admin: Caller,
    node: Node,
    hosts: list[tuple[Host, Sshd]],
    tmp_path: Path,
) -> None:
    _machines(tmp_path, hosts, 3)
    machines = hosts
    await _apply(services, admin, machines, window=1)
    task = await deploy(services, admin, "Api")
    await _when_begun(services, admin, task, "app-1")
    cut_at = time.monotonic()
    machines[0][0].cut()
    result = await finished(services, admin, task, timeout=40, waiting=False)
    took = time.monotonic() - cut_at
    assert result["state"] == "failed", result
    reason = result["steps"][0]["reason"]
    assert "app-1" in reason and "connection" in reason, reason
    # Noticed by the keepalives, long before the script's own 4 s would have ended it.
    assert took < 15, took
    seen = _by_target((await tasks.task_log(services, admin, task))["lines"])
    assert "end on app-1" not in seen["app-1"]
    for later in ("app-2", "app-3"):  # one at a time, stopped at the first failure
        assert not any(line.startswith("begin on") for line in seen.get(later, [])), seen
        assert any("not started" in line for line in seen.get(later, [])), seen


async def test_cut_off_while_all_run_at_once_the_others_finish(
    services: Services,
    admin: Caller,
    node: Node,
    hosts: list[tuple[Host, Sshd]],
    tmp_path: Path,
) -> None:
    _machines(tmp_path, hosts, 3)
    machines = hosts
    await _apply(services, admin, machines, window=None)
    task = await deploy(services, admin, "Api")
    await _when_begun(services, admin, task, "app-2")
    machines[1][0].cut()
    result = await finished(services, admin, task, timeout=40, waiting=False)
    assert result["state"] == "failed", result
    assert "app-2" in result["steps"][0]["reason"], result
    seen = _by_target((await tasks.task_log(services, admin, task))["lines"])
    assert "end on app-1" in seen["app-1"] and "end on app-3" in seen["app-3"], seen
    assert "end on app-2" not in seen["app-2"], seen
