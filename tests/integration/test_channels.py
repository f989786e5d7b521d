"""Channels on a real store (SQLite and PostgreSQL): a new release goes to the channel whose
rules its versions satisfy, or is refused naming the rule; ``channel`` chooses explicitly;
Deploy All's children are the highest within the channel; the channel's lifecycle governs
where the release may go; the dashboard shows a release line per channel."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.domain.errors import PolicyViolation, ValidationFailed
from conveyor.services import channels, deployments, octopus_executions, packages, releases
from conveyor.services.config import load
from conveyor.services.configfile import apply_text, export_text
from conveyor.services.core import Caller, Services

CONFIG = """
environments:
  - name: Dev
  - name: Test
  - name: Prod
lifecycles:
  - name: Normal
    phases:
      - {name: Dev, environments: [Dev]}
      - {name: Test, environments: [Test]}
      - {name: Prod, environments: [Prod]}
  - name: Fast
    phases:
      - {name: Test, environments: [Test]}
      - {name: Prod, environments: [Prod]}
project_groups:
  - name: Apps
projects:
  - name: Web
    group: Apps
    lifecycle: Normal
    process:
      steps:
        - {name: Install, type: package, package: Web, target_roles: [web]}
    channels:
      - name: Main
        default: true
        rules: [{package: Web, tag: "^$"}]
      - name: Hotfix
        lifecycle: Fast
        rules: [{step: Install, range: "[1.4,1.5)", tag: "^$"}]
      - name: Beta
        rules: [{package: Web, tag: "^beta"}]
  - name: All
    group: Apps
    lifecycle: Normal
    process:
      steps:
        - {name: Deploy Web, type: deploy_release, project: Web}
    channels:
      - name: Default
        rules: [{step: Deploy Web, tag: "^$"}]
      - name: Hotfix
"""


async def _push(services: Services, admin: Caller, folder: Path, version: str) -> None:
    path = folder / f"Web.{version}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("version.txt", version)

    async def body() -> AsyncIterator[bytes]:
        yield path.read_bytes()

    await packages.push_package(services, admin, body(), file_name=path.name)


async def test_channels_choose_refuse_and_govern(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    for version in ("1.4.2", "1.4.3", "1.9.0", "2.0.0-beta.1", "2.0.0-rc.1"):
        await _push(services, admin, tmp_path, version)

    async def create(project: str, version: str, **options: Any) -> releases.ReleaseView:
        return await releases.create_release(services, admin, project, version=version, **options)

    # Nothing chosen: the default channel, and the highest version its rules allow.
    main = await create("Web", "1.9.0")
    assert (main.channel, main.packages) == ("Main", {"Web": "1.9.0"})
    # A pinned pre-release goes to the channel that takes it.
    beta = await create("Web", "2.0.0-beta.1", packages={"Web": "2.0.0-beta.1"})
    assert beta.channel == "Beta"
    # A channel chosen: the highest within it (a hotfix line never picks 2.0.0-beta.1).
    hotfix = await create("Web", "1.4.3", channel="hotfix")
    assert (hotfix.channel, hotfix.packages) == ("Hotfix", {"Web": "1.4.3"})
    assert hotfix.as_dict()["channel"] == "Hotfix"

    with pytest.raises(ValidationFailed) as caught:
        await create("Web", "1.4.4", channel="Hotfix", packages={"Web": "1.9.0"})
    assert caught.value.message == (
        'channel: channel "Hotfix": Web 1.9.0 does not satisfy its rule range [1.4,1.5) and tag ^$'
    )
    with pytest.raises(ValidationFailed) as caught:
        await create("Web", "2.0.0-rc.1", packages={"Web": "2.0.0-rc.1"})
    said = caught.value.message
    assert said.startswith("no channel of Web accepts these versions")
    assert 'channel "Main": Web 2.0.0-rc.1 does not satisfy its rule tag ^$' in said
    assert 'channel "Beta": Web 2.0.0-rc.1 does not satisfy its rule tag ^beta' in said
    with pytest.raises(ValidationFailed, match='no channel "Nightly"'):
        await create("Web", "1.4.5", channel="Nightly")
    listed = await releases.list_releases(services, admin, "Web")
    assert {r.version: r.channel for r in listed} == {
        "2.0.0-beta.1": "Beta",
        "1.9.0": "Main",
        "1.4.3": "Hotfix",
    }

    # Deploy All: the children are the highest within the channel.
    everything = await create("All", "1.0.0")
    assert (everything.channel, everything.as_dict()["children"]) == ("Default", {"Web": "1.9.0"})
    # The child has a channel of the same name: only its releases count.
    fix = await create("All", "1.0.1", channel="Hotfix")
    assert fix.as_dict()["children"] == {"Web": "1.4.3"}

    # The channel's lifecycle governs promotion: Hotfix starts in Test, Main in Dev.
    await deployments.deploy(services, admin, "Web", "1.4.3", "Test")
    with pytest.raises(PolicyViolation, match="cannot be deployed"):
        await deployments.deploy(services, admin, "Web", "1.9.0", "Test")
    await deployments.deploy(services, admin, "Web", "1.9.0", "Dev")
    plan = await deployments.plan(services, admin, "Web", "1.4.3", "Prod")
    assert plan["channel"] == "Hotfix"
    assert plan["lifecycle"]["allowed"] is False  # Test first, then Prod

    # The dashboard: a release line per channel of a project with several.
    lines = await channels.dashboard_lines(services, admin)
    by_channel = {
        (line["project"], line["channel"]): {c["environment"]: c["release"] for c in line["cells"]}
        for line in lines
    }
    assert by_channel[("Web", "Main")] == {"Dev": "1.9.0"}
    assert by_channel[("Web", "Hotfix")] == {"Test": "1.4.3"}
    assert by_channel[("Web", "Beta")] == {}
    assert ("All", "Default") in by_channel and ("All", "Hotfix") in by_channel


async def test_the_octopus_api_chooses_the_channel_by_name_or_by_rules(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    for version in ("1.4.3", "1.9.0", "2.0.0-beta.1"):
        await _push(services, admin, tmp_path, version)
    command = octopus_executions.ReleaseCommand
    by_name = await octopus_executions.create_release(
        services, admin, command(project="Web", version="1.4.3", channel="Hotfix")
    )
    by_rules = await octopus_executions.create_release(
        services, admin, command(project="Web", version="1.9.0")
    )
    beta = await octopus_executions.create_release(
        services,
        admin,
        command(project="Web", version="2.0.0-beta.1", package_version="2.0.0-beta.1"),
    )
    made = {
        r.version: (r.channel, r.packages["Web"])
        for r in await releases.list_releases(services, admin, "Web")
    }
    assert made == {
        by_name.version: ("Hotfix", "1.4.3"),
        by_rules.version: ("Main", "1.9.0"),
        beta.version: ("Beta", "2.0.0-beta.1"),
    }
    with pytest.raises(ValidationFailed, match='channel "Nightly" does not exist: Web has "Main"'):
        await octopus_executions.create_release(
            services, admin, command(project="Web", channel="Nightly")
        )


async def test_channels_in_config_are_checked(services: Services, admin: Caller) -> None:
    bad = CONFIG.replace('range: "[1.4,1.5)"', 'range: "[1.5,1.4)"').replace(
        "lifecycle: Fast\n        rules", "lifecycle: Slow\n        rules"
    )
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, bad)
    said = caught.value.message
    assert "holds no version at all" in said
    assert 'no lifecycle "Slow"' in said
    # A project written without channels keeps them (as its process); [] removes them.
    await apply_text(services, admin, CONFIG)
    loaded = await load(services)
    assert len(loaded.model.get("projects", "Web").channels) == 3  # type: ignore[union-attr]
    await apply_text(
        services, admin, "projects:\n  - {name: Web, group: Apps, lifecycle: Normal}\n"
    )
    exported = await export_text(services, admin)
    assert "name: Hotfix" in exported and "range: '[1.4,1.5)'" in exported
    await apply_text(
        services,
        admin,
        "projects:\n  - {name: All, group: Apps, lifecycle: Normal, channels: []}\n",
    )
    loaded = await load(services)
    assert loaded.model.get("projects", "All").channels == ()  # type: ignore[union-attr]
