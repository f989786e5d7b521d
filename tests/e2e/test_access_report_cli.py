"""`conveyor permissions report` against a real server: a table for people, JSON and CSV for
scripts, exit 3 for someone who may not read teams and roles."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.e2e.conftest import EXAMPLE, Server, describe

pytestmark = pytest.mark.e2e


def test_the_auditor_prints_who_may_deploy_where(server: Server) -> None:
    applied = server.cli_in_process("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, describe(applied)
    auditor = server.api_key_for("auditor", in_process=True)

    table = server.cli("permissions", "report", "--project", "Deploy All", api_key=auditor)
    assert table.returncode == 0, describe(table)
    for text in ("Who may deploy where", "Deploy All", "Production", "Operations / Project"):
        assert text in table.stdout, table.stdout
    assert 'manual intervention "QA approval", as QA' in table.stdout.replace("\n", " ")

    as_json = server.cli_in_process("permissions", "report", "--output", "json", api_key=auditor)
    assert as_json.returncode == 0, describe(as_json)
    rows = json.loads(as_json.stdout)
    [prod] = [r for r in rows if (r["project"], r["environment"]) == ("Deploy All", "Production")]
    assert {"user": "ops", "team": "Operations", "role": "Project Deployer"} in prod["deployers"]

    as_csv = server.cli_in_process(
        "permissions", "report", "--output", "csv", "--environment", "staging", api_key=auditor
    )
    assert as_csv.returncode == 0, describe(as_csv)
    lines = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert lines[0] == ["project", "environment", "duty", "user", "team", "role", "via"]
    assert {line[1] for line in lines[1:]} == {"Staging"}

    build = server.api_key_for("build", in_process=True)
    refused = server.cli_in_process("permissions", "report", api_key=build)
    assert refused.returncode == 3 and "TeamView" in refused.stderr, describe(refused)
