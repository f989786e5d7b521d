"""`conveyor release pin|unpin|block|unblock|update-variables` and a train's rollback, against a
running server: JSON for scripts, CLI.md's exit codes for refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Server, describe

pytestmark = pytest.mark.e2e

CONFIG = """
environments:
  - name: Dev
  - name: Staging
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Staging]
project_groups:
  - name: Shop
users:
  - username: lead
  - username: deployer
teams:
  - name: Leads
    members: [lead]
    roles:
      - role: Project Lead
  - name: Deployers
    members: [deployer]
    roles:
      - role: Project Deployer
projects:
  - name: Database
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Migrate
          type: script
          script: echo migrating
  - name: Website
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Publish
          type: script
          script: echo publishing
  - name: Train
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Deploy Database
          type: deploy_release
          project: Database
          deployment_condition: if_newer
        - name: Deploy Website
          type: deploy_release
          project: Website
          deployment_condition: if_newer
"""


def ok(server: Server, *args: str, key: str | None = None) -> Any:
    result = server.cli_in_process(*args, "--output", "json", api_key=key)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def refused(server: Server, code: int, *args: str, key: str | None = None) -> str:
    result = server.cli_in_process(*args, "--output", "json", api_key=key)
    assert result.returncode == code, describe(result)
    message: str = json.loads(result.stderr or result.stdout)["error"]["message"]
    return message


def test_rollback_pin_block_and_refresh_from_the_command_line(server: Server) -> None:
    config = server.tmp / "governance.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    server.ok("apply", "-f", str(config))
    lead = server.api_key_for("lead", in_process=True)
    deployer = server.api_key_for("deployer", in_process=True)

    def release(project: str, version: str) -> None:
        ok(server, "release", "create", "--project", project, "--version", version)

    def deploy(project: str, version: str, to: str = "Dev") -> dict[str, Any]:
        args = ("release", "deploy", "--project", project, "--version", version, "--to", to)
        result: dict[str, Any] = ok(server, *args, "--wait")
        return result

    for project in ("Database", "Website", "Train"):
        release(project, "1.0.0")
    assert deploy("Train", "1.0.0")["state"] == "success"
    release("Database", "1.1.0")
    release("Train", "1.1.0")
    assert deploy("Train", "1.1.0")["state"] == "success"

    plan = ok(server, "release", "plan", "--project", "Train", "--version", "1.0.0", "--to", "Dev")
    assert plan["rollback"] is True
    # Fields beyond CLI.md's appear only where they apply (plan_json).
    assert [(s["name"], s["action"], s.get("rollback", False)) for s in plan["steps"]] == [
        ("Deploy Database", "run", True),
        ("Deploy Website", "skip", False),
    ]
    text = server.cli("release", "plan", "--project", "Train", "--version", "1.0.0", "--to", "Dev")
    assert "This is a rollback" in text.stdout and "run (rollback)" in text.stdout
    assert deploy("Train", "1.0.0")["state"] == "success"
    board = server.get("/dashboard").json()
    current = {(c["project"], c["environment"]): c["current_success"] for c in board["cells"]}
    assert current[("Database", "Dev")] == "1.0.0"

    # Refusals for those without the permission: exit 3, naming it.
    said = refused(
        server, 3, "release", "block", "--project", "Database", "--version", "1.1.0",
        "--reason", "x", key=deployer,
    )  # fmt: skip
    assert "ReleaseEdit" in said
    refused(
        server, 3, "release", "update-variables", "--project", "Database", "--version", "1.1.0",
        key=deployer,
    )  # fmt: skip
    said = refused(
        server, 3, "release", "pin", "--project", "Database", "--version", "1.0.0",
        "--environment", "Dev", "--reason", "x", key=lead,
    )  # fmt: skip
    assert "DeploymentCreate" in said

    pinned = ok(
        server, "release", "pin", "--project", "Database", "--version", "1.0.0",
        "--environment", "Dev", "--reason", "rolled back: 1.1.0 corrupts orders", key=deployer,
    )  # fmt: skip
    assert (pinned["version"], pinned["environment"], pinned["pinned_by"]) == (
        "1.0.0",
        "Dev",
        "deployer",
    )
    said = refused(
        server, 5, "release", "deploy", "--project", "Database", "--version", "1.1.0",
        "--to", "Dev", key=deployer,
    )  # fmt: skip
    assert "pinned in Dev by deployer" in said and "conveyor release unpin" in said
    listed = ok(server, "release", "pins", "--project", "Database")
    assert [p["environment"] for p in listed] == ["Dev"]
    ok(server, "release", "unpin", "--project", "Database", "--environment", "Dev", key=deployer)
    refused(server, 4, "release", "unpin", "--project", "Database", "--environment", "Dev")

    blocked = ok(
        server, "release", "block", "--project", "Database", "--version", "1.1.0",
        "--reason", "corrupts orders", key=lead,
    )  # fmt: skip
    assert blocked["blocked"]["by"] == "lead"
    said = refused(
        server, 5, "release", "deploy", "--project", "Database", "--version", "1.1.0",
        "--to", "Staging", key=deployer,
    )  # fmt: skip
    assert "blocked by lead: corrupts orders" in said
    ok(server, "release", "unblock", "--project", "Database", "--version", "1.1.0", key=lead)
    refused(server, 5, "release", "unblock", "--project", "Database", "--version", "1.1.0")
    refreshed = ok(
        server, "release", "update-variables", "--project", "Database", "--version", "1.1.0",
        key=lead,
    )  # fmt: skip
    assert refreshed == {"project": "Database", "version": "1.1.0", "changed": []}
