"""`conveyor retention plan` and `apply` against a real server (the commands run in this
process): a table for people, JSON for scripts, exit 3 for someone who may not apply them."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Server, describe

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """SQLite only: the command speaks the API, whose plan is tested on both databases
    (tests/api/test_retention_api.py, tests/integration/test_retention.py)."""
    return None


CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Short
    release_retention: {keep: 1, unit: items}
    phases:
      - name: Development
        environments: [Dev]
project_groups:
  - name: Shop
users:
  - username: auditor
teams:
  - name: Auditors
    members: [auditor]
    roles:
      - role: Auditor
projects:
  - name: Web
    group: Shop
    lifecycle: Short
    process:
      steps:
        - name: Say
          type: script
          script: echo hi
"""


def test_the_plan_is_shown_then_applied(server: Server) -> None:
    config = server.tmp / "retention.yaml"
    config.write_text(CONFIG)
    assert server.cli_in_process("apply", "-f", str(config)).returncode == 0
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        made = server.cli_in_process("release", "create", "--project", "Web", "--version", version)
        assert made.returncode == 0, describe(made)

    table = server.cli_in_process("retention", "plan")
    assert table.returncode == 0, describe(table)
    for said in ("Would delete 2 release(s)", "1.0.0", "1.0.1", "deployed nowhere"):
        assert said in table.stdout, table.stdout

    auditor = server.api_key_for("auditor", in_process=True)
    as_json = server.cli_in_process("retention", "plan", "--output", "json", api_key=auditor)
    assert as_json.returncode == 0, describe(as_json)
    plan = json.loads(as_json.stdout)
    assert [r["version"] for r in plan["releases"]] == ["1.0.0", "1.0.1"]
    refused = server.cli_in_process("retention", "apply", api_key=auditor)
    assert refused.returncode == 3 and "AdministerSystem" in refused.stderr, describe(refused)

    applied = server.cli_in_process("retention", "apply", "--output", "json")
    assert applied.returncode == 0, describe(applied)
    assert json.loads(applied.stdout)["counts"]["releases"] == 2
    nothing = server.cli_in_process("retention", "plan")
    assert "Nothing would be deleted" in nothing.stdout, describe(nothing)
