"""A channel's own lifecycle governs its releases everywhere, on SQLite and PostgreSQL: a
project whose "Hotfix" channel goes Patch -> Prod (Patch: an environment only that channel's
lifecycle reaches) may scope a step to Patch; a hotfix release is offered "Promote to Prod"
from Patch (on its task page and the dashboard), its approvals panel offers Patch, the
project's progress has a Patch column, and the access report has a Patch row."""

from __future__ import annotations

import pytest

from conveyor.domain.errors import ValidationFailed
from conveyor.domain.release_moves import MoveKind
from conveyor.services import (
    access_report,
    approvals,
    deployment_views,
    deployments,
    progress,
    release_moves,
    releases,
)
from conveyor.services.config import public_id
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.ended import end

CONFIG = """
environments:
  - name: Dev
  - name: Test
  - name: Patch
    checks:
      - approval: {teams: [{team: Release managers}]}
  - name: Prod
  - name: Sandbox
lifecycles:
  - name: Normal
    phases:
      - {name: Dev, environments: [Dev]}
      - {name: Test, environments: [Test]}
      - {name: Prod, environments: [Prod]}
  - name: Express
    phases:
      - {name: Patch, environments: [Patch]}
      - {name: Prod, environments: [Prod]}
project_groups:
  - name: Apps
users:
  - username: rita
teams:
  - name: Release managers
    members: [rita]
    roles:
      - role: Approver
      - role: Project Deployer
projects:
  - name: Web
    group: Apps
    lifecycle: Normal
    process:
      steps:
        - {name: Smoke test, type: script, script: echo ok, environments: [Patch]}
    channels:
      - {name: Main, default: true}
      - {name: Hotfix, lifecycle: Express}
"""


async def succeed(services: Services, admin: Caller, version: str, environment: str) -> str:
    """Deploy and record the deployment as successful through the dashboard's own projection
    (running the engine is tested elsewhere); its public id."""
    queued = await deployments.deploy(services, admin, "Web", version, environment)
    await end(services, admin, queued, version)
    return public_id("deployments", queued.deployment_id)


async def test_a_step_may_be_scoped_to_an_environment_only_a_channel_reaches(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)  # Patch: only Hotfix's lifecycle reaches it
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(
            services,
            admin,
            CONFIG.replace("echo ok, environments: [Patch]", "echo ok, environments: [Sandbox]"),
        )
    assert (
        'environment "Sandbox" is not in lifecycle "Normal" of this project, '
        'nor in lifecycle "Express" of its channel "Hotfix"'
    ) in caught.value.message


async def test_a_hotfix_release_follows_its_channel_lifecycle_everywhere(
    services: Services, admin: Caller
) -> None:
    await apply_text(services, admin, CONFIG)
    await releases.create_release(services, admin, "Web", version="1.0.0")  # Main
    hotfix = await releases.create_release(
        services, admin, "Web", version="1.0.1", channel="Hotfix"
    )
    # The release records the lifecycle it follows: its channel's.
    row = await releases.find_release(services, hotfix.project_id, "1.0.1")
    assert releases.read_snapshot(services, dict(row.snapshot)).lifecycle == "Express"
    await succeed(services, admin, "1.0.0", "Dev")
    patched = await succeed(services, admin, "1.0.1", "Patch")

    # The task page of the hotfix's deployment to Patch: promote to Prod (Express's next).
    moves = await release_moves.for_deployment(services, admin, patched)
    assert (MoveKind.PROMOTE, "1.0.1", "Prod") in {
        (m.kind, m.version, m.environment) for m in moves
    }

    # The dashboard: each cell's release by its channel's lifecycle.
    board = await deployment_views.board(services, admin)
    on_board = await release_moves.for_board(services, admin, board)
    promotes = {
        cell: [(m.version, m.environment) for m in found if m.kind is MoveKind.PROMOTE]
        for cell, found in on_board.items()
    }
    assert promotes[("Web", "Patch")] == [("1.0.1", "Prod")]
    assert promotes[("Web", "Dev")] == [("1.0.0", "Test")]

    # The approvals panel: Patch asks for approvals, and only the hotfix may go there.
    hotfix_panel = await approvals.release_panel(services, admin, "Web", "1.0.1")
    assert hotfix_panel["environments"] == ["Patch"]
    main_panel = await approvals.release_panel(services, admin, "Web", "1.0.0")
    assert main_panel["environments"] == []

    # The project's progress: every environment a release may reach, each release's channel.
    board_of_web = await progress.project_progress(services, admin, "Web")
    assert board_of_web["environments"] == ["Dev", "Test", "Prod", "Patch"]
    by_version = {r["version"]: r for r in board_of_web["releases"]}
    assert by_version["1.0.1"]["channel"] == "Hotfix"
    assert by_version["1.0.1"]["cells"]["Patch"]["state"] == "success"
    assert by_version["1.0.0"]["channel"] == "Main"

    # Who may deploy and approve where: Patch too, where rita approves.
    report = await access_report.report(services, admin, project="Web")
    rows = {r.environment: r for r in report.rows}
    assert set(rows) == {"Dev", "Test", "Patch", "Prod"}
    assert [(a.user, a.via) for a in rows["Patch"].approvers] == [
        ("rita", "approval check of Patch, as Release managers")
    ]
