"""A target keeps the last few versions of a package (CONVEYOR_KEEP_PACKAGE_VERSIONS, the live
one included) and removes older ones after each deployment, so the data folder does not grow
with every release while a rollback to a kept version stays a link switch plus its script.
Real packages, real extraction, real scripts, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.engine.node import Node
from conveyor.services import deployments, packages, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.integration.test_engine import finished

CONFIG = """
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
  - name: Box
    environments: [Dev]
    roles: [app]
projects:
  - name: Shop
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Install
          type: package
          package: Shop
          target_roles: [app]
          post_deploy_script: mkdir -p ../mine && cat version.txt
"""


@pytest.fixture
async def node(services: Services) -> AsyncIterator[Node]:
    running = Node(services, slots=2, name=f"versions-{os.getpid()}")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _push(services: Services, admin: Caller, tmp_path: Path, version: str) -> None:
    path = tmp_path / f"Shop.{version}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("version.txt", f"shop {version}\n")

    async def body() -> AsyncIterator[bytes]:
        yield path.read_bytes()

    await packages.push_package(services, admin, body(), file_name=path.name)


async def _deploy(services: Services, admin: Caller, release: str) -> None:
    queued = await deployments.deploy(services, admin, "Shop", release, "Dev")
    done = await finished(services, admin, queued.as_dict()["task"], waiting=False)
    assert done["state"] == "success", done


async def test_a_target_keeps_the_last_versions_and_rolls_back_by_link(
    services: Services, admin: Caller, node: Node, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    base = services.settings.data_dir / "targets" / "box" / "dev" / "shop"
    made: dict[str, str] = {}
    for minor in range(5):
        version = f"1.0.{minor}"
        await _push(services, admin, tmp_path, version)
        release = await releases.create_release(services, admin, "Shop")
        made[version] = release.version
        await _deploy(services, admin, release.version)

    def versions() -> set[str]:
        return {p.name for p in base.iterdir() if p.name.startswith("1.0.")}

    assert versions() == {"1.0.2", "1.0.3", "1.0.4"}  # the default keeps three
    assert os.readlink(base / "current") == "1.0.4"
    assert (base / "mine").is_dir(), "a folder a script made is never taken for a version"

    await _deploy(services, admin, made["1.0.2"])  # a rollback to a kept version
    assert os.readlink(base / "current") == "1.0.2"
    assert (base / "current" / "version.txt").read_text() == "shop 1.0.2\n"
    assert versions() == {"1.0.2", "1.0.3", "1.0.4"}

    services.settings.keep_package_versions = 1
    await _deploy(services, admin, made["1.0.3"])
    assert versions() == {"1.0.3"}
    assert os.readlink(base / "current") == "1.0.3"
