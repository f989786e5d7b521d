"""Target health, on SQLite and PostgreSQL, with real runners: a local target is healthy with its
OS and free disk; an ssh target whose port is closed, or that never answers, is unhealthy with
the reason; a change of health is audited once, not at every check; the periodic check runs at
its interval, one node at a time; who sees and who may check targets; and a deployment to an
environment with a target found unhealthy fails naming it, or leaves it out."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conveyor.domain.audit import Category
from conveyor.domain.errors import NotFound, PermissionDenied
from conveyor.engine.health import HealthChecks, standalone
from conveyor.engine.node import Node
from conveyor.services import documents, tasks
from conveyor.services import targets as target_service
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import caller_of
from tests.e2e.conftest import Server, describe, e2e_database, server  # noqa: F401 (fixtures)
from tests.integration.test_audit_catalogue import all_events, of
from tests.integration.test_engine import deploy, finished

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Web
users:
  - username: viewer
  - username: manager
teams:
  - name: Dev watchers
    members: [viewer]
    roles:
      - role: Environment Viewer
        environments: [Dev]
  - name: Dev managers
    members: [manager]
    roles:
      - role: Environment Manager
        environments: [Dev]
targets:
  - name: web-1
    environments: [Dev]
    roles: [web]
  - name: web-2
    environments: [Dev]
    roles: [web]
  - name: prod-web
    environments: [Prod]
    roles: [web]
  - name: old-web
    environments: [Dev]
    roles: [web]
    disabled: true
{extra}
projects:
  - name: Site
    group: Web
    lifecycle: Anywhere
    process:
      steps:
        - name: Roll
          type: script
          target_roles: [web]
{policy}          script: 'echo "ran on #{{Conveyor.Target.Name}}"'
"""

SSH_TARGET = """  - name: db-1
    kind: ssh
    environments: [Dev]
    roles: [web]
    host: 127.0.0.1
    port: {port}
    user: deploy
    private_key: ${{env:DB_KEY}}
    host_key: {host_key}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real ed25519 user key and a real host key (public part), as an operator would pin."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("user", "host"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
            check=True,
        )
    private = (folder / "user").read_text()
    host_key = " ".join((folder / "host.pub").read_text().split()[:2])
    return private, host_key


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says anything (a hung machine)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


async def _apply(
    services: Services,
    admin: Caller,
    keys: tuple[str, str],
    *,
    db: str = "",
    port: int = 0,
    policy: str = "",
) -> None:
    extra = ""
    if db == "ssh":
        extra = SSH_TARGET.format(port=port, host_key=keys[1])
    line = f"          unhealthy_targets: {policy}\n" if policy else ""
    text = CONFIG.format(extra=extra.rstrip("\n"), policy=line)
    await apply_text(services, admin, text, secrets={"DB_KEY": keys[0]})


def _by_name(found: list[target_service.TargetStatus]) -> dict[str, target_service.TargetStatus]:
    return {status.name: status for status in found}


async def _health_events(services: Services, admin: Caller) -> list[dict[str, Any]]:
    return of(await all_events(services, admin), Category.TARGET_HEALTH_CHANGED)


@pytest.fixture
def checks(services: Services) -> HealthChecks:
    """The runners a node has (its executor's registry), with a short time limit."""
    found = standalone(services)
    found.timeout_seconds = 3.0
    return found


async def test_local_targets_are_healthy_with_their_os_and_free_disk(
    services: Services, admin: Caller, keys: tuple[str, str], checks: HealthChecks
) -> None:
    await _apply(services, admin, keys)
    before = await target_service.list_targets(services, admin)
    assert {s.name: s.recorded.state.value for s in before} == dict.fromkeys(
        ("web-1", "web-2", "prod-web", "old-web"), "unknown"
    )
    checked = _by_name(await checks.check(admin))
    # Every enabled target; the disabled one is left alone.
    assert set(checked) == {"web-1", "web-2", "prod-web"}
    sysname = os.uname().sysname
    for status in checked.values():
        assert status.healthy, status
        assert status.recorded.os.startswith(sysname), status
        assert (status.recorded.free_disk_bytes or 0) > 100 * 1024 * 1024, status
        assert status.recorded.checked_at is not None
    listed = _by_name(await target_service.list_targets(services, admin))
    assert listed["web-1"].as_dict()["health"] == "healthy"
    assert listed["old-web"].as_dict()["health"] == "unknown"
    assert listed["old-web"].as_dict()["disabled"] is True


async def test_a_change_of_health_is_audited_once_not_at_every_check(
    services: Services, admin: Caller, keys: tuple[str, str], checks: HealthChecks
) -> None:
    await _apply(services, admin, keys, db="ssh", port=closed_port())
    for _ in range(2):
        await checks.check(admin)
    events = await _health_events(services, admin)
    by_target = {e["details"]["target"]: e for e in events}
    assert len(events) == 4, events  # web-1, web-2, prod-web and db-1: once each
    assert by_target["web-1"]["message"] == "Target web-1 found healthy"
    sick = by_target["db-1"]
    assert sick["message"].startswith("Target db-1 found unhealthy: "), sick
    assert sick["actor"] == "admin" and sick["details"]["previous"] is None
    assert sick["documents"] and sick["documents"][0].startswith("Targets-")
    assert keys[0].split("\n")[1] not in str(events)  # never a word of the private key
    [db] = await checks.check(admin, "db-1")
    assert not db.healthy and db.recorded.message == sick["details"]["message"]

    # Fixed (here: made a local target): found healthy, audited once more.
    await documents.update_document(
        services,
        admin,
        "targets",
        "db-1",
        {
            "name": "db-1",
            "environments": ["Dev"],
            "roles": ["web"],
            "private_key": "",
            "host": "",
            "user": "",
            "host_key": "",
        },
    )
    [db] = await checks.check(admin, "db-1")
    assert db.healthy, db
    await checks.check(admin, "db-1")
    healed = [e for e in await _health_events(services, admin) if e["details"]["target"] == "db-1"]
    assert [e["message"] for e in healed] == [
        sick["message"],
        "Target db-1 found healthy",
    ]
    assert healed[1]["details"]["previous"] == "unhealthy"


async def test_a_target_that_does_not_answer_is_unhealthy(
    services: Services,
    admin: Caller,
    keys: tuple[str, str],
    checks: HealthChecks,
    silent_port: int,
) -> None:
    await _apply(services, admin, keys, db="ssh", port=silent_port)
    checks.timeout_seconds = 1.0
    started = asyncio.get_running_loop().time()
    [db] = await checks.check(admin, "db-1")
    took = asyncio.get_running_loop().time() - started
    assert not db.healthy
    if "ssh" in checks.runners:
        # Connected, then no SSH banner ever: the time limit of the check decides.
        assert db.recorded.message == "no answer within 1 s", db
        assert took < 3, took
    else:
        assert db.recorded.message == "no runner for kind ssh on this server", db


class Noting:
    """The real local runner, noting when it checked which target: how often targets are
    checked, whichever node checks them."""

    def __init__(self, runner: Any, seen: dict[str, list[float]]) -> None:
        self.runner = runner
        self.seen = seen

    async def check(self, machine: Any) -> Any:
        self.seen.setdefault(machine.name, []).append(asyncio.get_running_loop().time())
        return await self.runner.check(machine)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)


async def test_the_periodic_check_runs_at_its_interval_and_one_node_at_a_time(
    services: Services, admin: Caller, keys: tuple[str, str]
) -> None:
    await _apply(services, admin, keys)
    every = 0.6
    services.settings = services.settings.model_copy(update={"target_check_seconds": every})
    # Two nodes, started together: their rounds would overlap but for the round lock.
    nodes = [Node(services, slots=1, name=f"health-{i}-{os.getpid()}") for i in (1, 2)]
    seen: dict[str, list[float]] = {}
    for node in nodes:
        node.executor.runners["local"] = Noting(node.executor.runners["local"], seen)
    for node in nodes:
        await node.start()
    try:
        await asyncio.sleep(3.5)
    finally:
        for node in nodes:
            await node.stop()
    assert set(seen) == {"web-1", "web-2", "prod-web"}, seen  # never the disabled one
    for target, times in seen.items():
        gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
        # Checked again once the last check is an interval old (by one node), within a tick.
        assert len(times) >= 3, (target, times)
        assert all(every * 0.9 <= gap <= every * 1.25 + 0.5 for gap in gaps), (target, gaps)
    events = await _health_events(services, admin)
    assert len(events) == 3 and {e["actor"] for e in events} == {"system"}, events

    # Another node's round waits for none: while one holds the round, the other skips it.
    async with target_service.round_lock(services) as mine:
        assert mine
        async with target_service.round_lock(services) as other:
            assert not other
        assert await standalone(services).round(every) == 0
    assert await standalone(services).round(0) == 3


async def test_who_sees_targets_and_who_may_check_them(
    services: Services, admin: Caller, keys: tuple[str, str], checks: HealthChecks
) -> None:
    await _apply(services, admin, keys)
    viewer, manager = [await caller_of(services, n) for n in ("viewer", "manager")]
    seen = [s.name for s in await target_service.list_targets(services, viewer)]
    assert seen == ["web-1", "web-2", "old-web"]  # Dev only, where viewer holds MachineView
    assert [s.name for s in await target_service.list_targets(services, admin, "Prod")] == [
        "prod-web"
    ]
    assert await target_service.list_targets(services, viewer, "Prod") == []
    with pytest.raises(NotFound, match='environment "Nowhere" does not exist'):
        await target_service.list_targets(services, admin, "Nowhere")

    with pytest.raises(PermissionDenied, match="MachineEdit"):
        await checks.check(viewer)
    with pytest.raises(PermissionDenied, match="MachineEdit"):
        await checks.check(viewer, "web-1")
    assert {s.name for s in await checks.check(manager)} == {"web-1", "web-2"}
    with pytest.raises(PermissionDenied, match="MachineEdit"):
        await checks.check(manager, "prod-web")
    # Refusing to check a target the person can see is audited, as any refused action is.
    refused = of(await all_events(services, admin), Category.ACCESS_DENIED, actor="viewer")
    assert len(refused) == 1 and "MachineEdit" in refused[0]["message"], refused
    with pytest.raises(NotFound):
        await checks.check(admin, "no-such-target")


async def test_adding_and_removing_a_target_is_audited(
    services: Services, admin: Caller, keys: tuple[str, str]
) -> None:
    await _apply(services, admin, keys)
    await documents.create_document(
        services, admin, "targets", {"name": "web-9", "environments": ["Dev"], "roles": ["web"]}
    )
    await documents.delete_document(services, admin, "targets", "web-9")
    events = await all_events(services, admin)
    [added] = of(events, Category.DOCUMENT_CREATED, message='admin created target "web-9"')
    [removed] = of(events, Category.DOCUMENT_DELETED, message='admin deleted target "web-9"')
    assert added["documents"] == removed["documents"] and added["documents"][0].startswith(
        "Targets-"
    )


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=2, name=f"health-deploy-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_a_deployment_fails_on_a_target_found_unhealthy_or_leaves_it_out(
    services: Services, admin: Caller, keys: tuple[str, str], checks: HealthChecks, node: Node
) -> None:
    await _apply(services, admin, keys, db="ssh", port=closed_port())
    assert not _by_name(await checks.check(admin))["db-1"].healthy
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "failed", result
    assert "unhealthy target: db-1" in (result.get("error") or ""), result
    lines = [line["line"] for line in (await tasks.task_log(services, admin, task))["lines"]]
    assert not any(line.startswith("ran on") for line in lines), lines

    await _apply(services, admin, keys, db="ssh", port=closed_port(), policy="skip")
    task = await deploy(services, admin, "Site")
    result = await finished(services, admin, task, waiting=False)
    assert result["state"] == "success", result
    lines = [line["line"] for line in (await tasks.task_log(services, admin, task))["lines"]]
    assert sorted(line for line in lines if line.startswith("ran on")) == [
        "ran on web-1",
        "ran on web-2",
    ]
    assert any("Leaving out unhealthy targets: db-1" in line for line in lines), lines
    # The targets page's "last deployment" is this one, for the targets it ran on.
    listed = _by_name(await target_service.list_targets(services, admin, "Dev"))
    last = listed["web-1"].as_dict("Dev")["last_deployment"]
    assert last["project"] == "Site" and last["state"] == "success", last
    assert last["task"] == task
    # Left out of it (and the failed one before never started): db-1 was deployed by neither.
    assert listed["db-1"].as_dict("Dev")["last_deployment"] is None
    everywhere = _by_name(await target_service.list_targets(services, admin))
    assert everywhere["prod-web"].as_dict()["last_deployment"] is None


# ---------------------------------------------------------------- the CLI, against a real server


@pytest.fixture(scope="module")
def configured(server: Server, keys: tuple[str, str]) -> Server:  # noqa: F811
    """The server with the targets of CONFIG and db-1, an ssh target on a closed port."""
    text = CONFIG.format(
        extra=SSH_TARGET.format(port=closed_port(), host_key=keys[1]).rstrip("\n"), policy=""
    )
    config = server.tmp / "targets.yaml"
    config.write_text(text)
    result = server.cli("apply", "-f", str(config), env={"DB_KEY": keys[0]})
    assert result.returncode == 0, describe(result)
    return server


def test_target_list_filters_by_environment(configured: Server) -> None:
    listed = configured.ok("target", "list", "--environment", "Prod", "--output", "json")
    [prod] = json.loads(listed.stdout)
    assert (prod["name"], prod["kind"], prod["environments"], prod["roles"]) == (
        "prod-web",
        "local",
        ["Prod"],
        ["web"],
    )
    assert prod["health"] in ("unknown", "healthy")
    everything = json.loads(configured.ok("target", "list", "--output", "json").stdout)
    assert [t["name"] for t in everything] == ["web-1", "web-2", "prod-web", "old-web", "db-1"]
    table = configured.ok("target", "list", "--environment", "Dev").stdout
    assert "web-1" in table and "db-1" in table and "prod-web" not in table
    unknown = configured.cli("target", "list", "--environment", "Nowhere")
    assert unknown.returncode == 4 and 'environment "Nowhere" does not exist' in unknown.stderr


def test_target_check_exits_0_when_healthy_and_1_when_not(configured: Server) -> None:
    healthy = configured.cli("target", "check", "web-1", "--output", "json")
    assert healthy.returncode == 0, describe(healthy)
    [web] = json.loads(healthy.stdout)
    assert web["health"] == "healthy" and web["os"] and web["free_disk_bytes"] > 0, web

    every = configured.cli("target", "check")
    assert every.returncode == 1, describe(every)
    row = next(line for line in every.stdout.splitlines() if line.startswith("db-1"))
    assert "unhealthy" in row and "cannot connect to db-1" in every.stdout, every.stdout
    assert all(
        "healthy" in line and "unhealthy" not in line
        for line in every.stdout.splitlines()
        if line.startswith(("web-1", "web-2", "prod-web"))
    ), every.stdout
    # What the check found is what `target list` shows from now on.
    listed = json.loads(configured.ok("target", "list", "--output", "json").stdout)
    assert {t["name"]: t["health"] for t in listed} == {
        "web-1": "healthy",
        "web-2": "healthy",
        "prod-web": "healthy",
        "old-web": "unknown",
        "db-1": "unhealthy",
    }
    missing = configured.cli("target", "check", "no-such-target")
    assert missing.returncode == 4 and 'target "no-such-target" does not exist' in missing.stderr
