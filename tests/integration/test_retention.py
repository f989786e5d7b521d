"""Retention on a real engine, SQLite and PostgreSQL: a tight policy keeps the database and the
data folder from growing under a steady stream of releases and deployments, never deletes what
an environment runs or a pinned release, records each batch as an event (the audit chain still
verifies), and runs on one node at a time."""

from __future__ import annotations

import asyncio
import os
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, func, select

from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, PermissionDenied
from conveyor.engine.node import Node
from conveyor.services import audit, deployments, packages, pins, releases, retention
from conveyor.services import retention_apply as job
from conveyor.services.audit import Filters
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.conftest import caller_of
from tests.integration.test_engine import finished

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Tight
    release_retention: {keep: 2}
    task_log_retention: {keep: 1, unit: items}
    package_retention: {keep: 2}
    phases:
      - name: Development
        environments: [Dev]
      - name: Production
        environments: [Prod]
project_groups:
  - name: Apps
users:
  - username: auditor
  - username: devviewer
teams:
  - name: Auditors
    members: [auditor]
    roles:
      - role: Auditor
  - name: Dev viewers
    members: [devviewer]
    roles:
      - role: Project Viewer
        environments: [Dev]
targets:
  - name: Box
    environments: [Dev, Prod]
    roles: [app]
projects:
  - name: Shop
    group: Apps
    lifecycle: Tight
    process:
      steps:
        - name: Install
          type: package
          package: Shop
          target_roles: [app]
          environments: [Prod]
        - name: Say
          type: script
          script: seq 1 20
"""


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=2, name=f"retention-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def push(services: Services, admin: Caller, tmp_path: Path, version: str) -> None:
    path = tmp_path / f"Shop.{version}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("version.txt", f"shop {version}\n")
        zf.writestr("payload.bin", os.urandom(4000))  # incompressible: the feed's size shows

    async def body() -> AsyncIterator[bytes]:
        yield path.read_bytes()

    await packages.push_package(services, admin, body(), file_name=path.name)


async def ship(services: Services, admin: Caller, version: str, env: str) -> None:
    queued = await deployments.deploy(services, admin, "Shop", version, env)
    done = await finished(services, admin, queued.as_dict()["task"], waiting=False)
    assert done["state"] == "success", done


async def count(services: Services, table: Table) -> int:
    async with services.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def logged_tasks(services: Services) -> int:
    query = select(func.count(func.distinct(t.task_logs.c.task_id)))
    async with services.read() as session:
        return int((await session.execute(query)).scalar_one())


def data_bytes(services: Services) -> int:
    """The data folder's files (the package feed, targets' folders, scratch space), less the
    SQLite database, whose rows are counted instead (its file reuses freed pages)."""
    root = services.settings.data_dir
    files = (p for p in root.rglob("*") if p.is_file() and not p.name.startswith("conveyor.db"))
    return sum(p.stat().st_size for p in files)


async def versions(services: Services) -> set[str]:
    async with services.read() as session:
        return set((await session.execute(select(t.releases.c.version))).scalars())


async def test_a_tight_policy_keeps_the_database_and_the_feed_from_growing(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    # 1.0.0 goes to Prod and is pinned there: it must outlive every cycle.
    await push(services, admin, tmp_path, "1.0.0")
    await releases.create_release(services, admin, "Shop", version="1.0.0")
    await ship(services, admin, "1.0.0", "Dev")
    await ship(services, admin, "1.0.0", "Prod")
    await pins.pin(services, admin, "Shop", "1.0.0", "Prod", "the audited build")

    auditor = await caller_of(services, "auditor")
    devviewer = await caller_of(services, "devviewer")
    with pytest.raises(PermissionDenied, match="ReleaseView and DeploymentView"):
        await retention.show_plan(services, devviewer)
    with pytest.raises(PermissionDenied):
        await job.apply_now(services, auditor, "elsewhere")

    sizes: list[tuple[int, ...]] = []
    planned: dict[str, set[str]] = {"deployments": set(), "task_logs": set()}
    for minor in range(1, 5):
        version = f"1.0.{minor}"
        await push(services, admin, tmp_path, version)
        await releases.create_release(services, admin, "Shop", version=version)
        await ship(services, admin, version, "Dev")
        if minor == 1:
            await ship(services, admin, version, "Dev")  # a redeployment: one of them may go
        shown = (await retention.show_plan(services, auditor)).as_dict()  # auditors read it
        for kind, found in planned.items():
            found.update(x["description"] for x in shown[kind])
        if minor == 3:
            assert [r["version"] for r in shown["releases"]] == ["1.0.1"], shown
            assert shown["releases"][0]["reason"] == "Development keeps the last 2 releases"
            assert [p["version"] for p in shown["packages"]] == ["1.0.1"], shown["packages"]
        applied = await job.apply_now(services, admin, node.name)
        assert applied.ran and applied.spared == 0, applied
        assert (await retention.current_plan(services)).empty  # applied: nothing left to do
        kept = await versions(services)
        assert {"1.0.0", version} <= kept and len(kept) <= 3, kept
        sizes.append(
            (
                await count(services, t.releases),
                await count(services, t.deployments),
                await count(services, t.tasks),
                await count(services, t.task_logs),
                await logged_tasks(services),
                await count(services, t.packages),
                data_bytes(services),
            )
        )
    # From the third cycle on, nothing grows: every count and the data folder's size stay put.
    steady = sizes[2]
    assert all(n <= most for later in sizes[3:] for n, most in zip(later, steady, strict=True)), (
        sizes
    )
    # The redeployment of 1.0.1 went on its own; logs went from deployments that stayed.
    assert planned["deployments"] >= {"Shop 1.0.1 to Dev"}, planned
    assert "Shop 1.0.0 to Dev" in planned["task_logs"], planned
    releases_n, deployments_n, tasks_n, _, logged, packages_n, _ = sizes[-1]
    assert (releases_n, packages_n) == (3, 3)  # the pinned 1.0.0 and the last two
    assert logged <= 3 and deployments_n == tasks_n <= 6, sizes[-1]
    root = packages.feed_root(services.settings) / "shop"
    assert sorted(p.name for p in root.iterdir()) == [
        "Shop.1.0.0.zip",
        "Shop.1.0.3.zip",
        "Shop.1.0.4.zip",
    ]

    # Audit events are never deleted: the chain verifies, and each batch is on record.
    verified = await audit.verify_chain(services, admin)
    assert verified["intact"], verified
    page = await audit.list_events(
        services, admin, Filters(categories=(Category.RETENTION_APPLIED.value,))
    )
    recorded = page["events"]
    assert recorded and all(e["actor"] == "admin" for e in recorded)
    total = sum(e["details"]["counts"]["releases"] for e in recorded)
    assert total == 2  # 1.0.1 and 1.0.2
    said = " / ".join(e["message"] for e in recorded)
    assert "1 releases" not in said and "1 deployments" not in said, said
    assert "1 release" in said, said


async def test_one_node_at_a_time_with_fencing_and_the_periodic_job(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    for minor in range(4):  # deployed nowhere: the lifecycle's default keeps the last two
        await push(services, admin, tmp_path, f"2.0.{minor}")
        await releases.create_release(services, admin, "Shop", version=f"2.0.{minor}")

    first = await job.claim(services, "node-a", due_after=None)
    assert first is not None
    assert await job.claim(services, "node-b", due_after=None) is None  # a holds it
    with pytest.raises(Conflict, match="another node"):
        await job.apply_now(services, admin, "node-b")
    # a froze past its lease; b took over (the lease ran out), so a's next batch is refused.
    real = services.clock
    later = real() + timedelta(seconds=services.settings.lease_seconds + 1)
    services.clock = lambda: later
    taken = await job.claim(services, "node-b", due_after=None)
    assert taken is not None and taken.epoch == first.epoch + 1
    plan = await retention.current_plan(services)
    assert len(plan.releases) == 2
    with pytest.raises(Conflict, match="no longer holds"):
        await job.apply_plan(services, admin, first, plan, job.Applied())
    assert len(await versions(services)) == 4  # nothing deleted by the stale node
    services.clock = real
    await job.release_lease(services, taken, {"node": "node-b", "counts": {}})

    # Not due yet: the run just finished.
    assert not (await job.run_if_due(services, "node-c")).ran
    # The periodic job on a node: due at once when the interval is short.
    services.settings.retention_interval = 0.2
    running = Node(services, slots=1, name="periodic")
    await running.start()
    try:
        for _ in range(100):
            last = await retention.last_run(services)
            if last is not None and last["node"] == "periodic":
                break
            await asyncio.sleep(0.05)
    finally:
        await running.stop()
    assert await versions(services) == {"2.0.2", "2.0.3"}
    files = sorted(p.name for p in (packages.feed_root(services.settings) / "shop").iterdir())
    assert files == ["Shop.2.0.2.zip", "Shop.2.0.3.zip"]
    last = await retention.last_run(services)
    assert last is not None and last["node"] == "periodic", last
    assert last["counts"]["releases"] == 2
    assert (await audit.verify_chain(services, admin))["intact"]
