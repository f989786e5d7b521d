"""`conveyor release create --channel`, the plan and the dashboard against a real server: the
channel chosen, checked (exit 2 naming channel, package, version and rule) and shown. One
database is enough here: the store's side runs on both in tests/integration/test_channels.py."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.e2e.conftest import Server, describe
from tests.integration.test_channels import CONFIG

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_database() -> str | None:
    return None  # SQLite


def _ok(server: Server, *args: str) -> str:
    result = server.cli_in_process(*args)
    assert result.returncode == 0, describe(result)
    return result.stdout


def test_release_create_with_a_channel_plan_and_dashboard(server: Server) -> None:
    config = server.tmp / "channels.yaml"
    config.write_text(CONFIG)
    _ok(server, "apply", "-f", str(config))
    for version in ("1.4.3", "1.9.0"):
        path = server.tmp / f"Web.{version}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("version.txt", version)
        _ok(server, "package", "push", str(path))

    # The real process: what a person sees, and CLI.md's exit code for a refusal.
    refused = server.cli(
        "release", "create", "--project", "Web", "--version", "1.4.4", "--channel", "Hotfix",
        "--package", "Web:1.9.0",
    )  # fmt: skip
    assert refused.returncode == 2, describe(refused)
    assert (
        'channel "Hotfix": Web 1.9.0 does not satisfy its rule range [1.4,1.5) and tag ^$'
        in refused.stderr + refused.stdout
    ), describe(refused)

    made = json.loads(
        _ok(server, "release", "create", "--project", "Web", "--version", "1.4.3",
            "--channel", "hotfix", "--output", "json")
    )  # fmt: skip
    assert (made["channel"], made["packages"]) == ("Hotfix", {"Web": "1.4.3"})
    main = json.loads(
        _ok(
            server,
            "release",
            "create",
            "--project",
            "Web",
            "--version",
            "1.9.0",
            "--output",
            "json",
        )
    )
    assert (main["channel"], main["packages"]) == ("Main", {"Web": "1.9.0"})

    plan = _ok(server, "release", "plan", "--project", "Web", "--version", "1.4.3", "--to", "Test")
    assert "Deploying Web 1.4.3 (channel Hotfix) to Test would:" in plan
    as_json = json.loads(
        _ok(server, "release", "plan", "--project", "Web", "--version", "1.4.3", "--to", "Test",
            "--output", "json")
    )  # fmt: skip
    assert as_json["channel"] == "Hotfix"

    _ok(server, "release", "deploy", "--project", "Web", "--version", "1.4.3", "--to", "Test")
    board = json.loads(_ok(server, "dashboard", "--output", "json"))
    lines = {(line["project"], line["channel"]): line["cells"] for line in board["channels"]}
    assert [c["release"] for c in lines[("Web", "Hotfix")]] == ["1.4.3"]
    assert "  Hotfix" in _ok(server, "dashboard")
