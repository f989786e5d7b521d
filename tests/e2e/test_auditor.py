"""The auditor's story (9) against a real server, through the CLI, on SQLite and PostgreSQL.

After some activity (the example applied, a release built and pushed by the build server, which
deploys itself to Development, and a developer's deployment to Test), `auditor` finds in the
audit log who created the release and who deployed where, exports it as CSV and JSON Lines,
gathers the release's evidence, cannot change anything, and `conveyor audit verify` reports the
chain intact; then a row edited straight in the database is named (exit 1).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conveyor.domain.audit import EventRecord, event_hash
from tests.e2e.conftest import EXAMPLE, Server, describe

pytestmark = pytest.mark.e2e

USERS = ("build", "dev", "ops", "auditor")


@dataclass
class Activity:
    server: Server
    keys: dict[str, str]
    tmp: Path

    def run(self, user: str, *args: str) -> Any:
        return self.server.cli(*args, api_key=self.keys[user])

    def ok(self, user: str, *args: str) -> Any:
        result = self.run(user, *args)
        assert result.returncode == 0, f"as {user}: {describe(result)}"
        return result

    def json(self, user: str, *args: str) -> Any:
        return json.loads(self.ok(user, *args, "--output", "json").stdout)


@pytest.fixture(scope="module")
def activity(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Activity:
    tmp = tmp_path_factory.mktemp("auditor")
    server.ok("apply", "-f", str(EXAMPLE))
    keys = {user: server.api_key_for(user, in_process=True) for user in USERS}
    act = Activity(server, keys, tmp)
    made = act.json(
        "build",
        "package",
        "pack",
        str(EXAMPLE.parent / "database"),
        "--id",
        "OctoPetShop.Database",
        "--version",
        "1.0.0",
        "-o",
        str(tmp),
    )
    act.ok("build", "package", "push", made["path"])
    act.json("build", "release", "create", "--project", "Database", "--version", "1.0.0")
    [automatic] = act.json("build", "deployment", "list", "--project", "Database")
    act.ok("build", "task", "wait", automatic["task"], "--timeout", "60")
    deploy = ("release", "deploy", "--project", "Database", "--version", "1.0.0")
    act.ok("dev", *deploy, "--to", "Test", "--wait")
    return act


def test_the_auditor_finds_who_created_the_release_and_who_deployed_where(
    activity: Activity,
) -> None:
    created = activity.json("auditor", "audit", "list", "--category", "ReleaseCreated")
    assert [(e["actor"], e["project"]) for e in created] == [("build", "Database")]
    assert "1.0.0" in created[0]["message"]

    queued = activity.json(
        "auditor", "audit", "list", "--category", "DeploymentQueued", "--project", "database"
    )
    assert {(e["actor"], e["environment"]) for e in queued} == {
        ("build", "Development"),
        ("dev", "Test"),
    }
    by_dev = activity.json("auditor", "audit", "list", "--user", "dev")
    assert by_dev and {e["actor"] for e in by_dev} == {"dev"}
    succeeded = activity.json(
        "auditor", "audit", "list", "--category", "DeploymentSucceeded", "--environment", "Test"
    )
    assert [(e["actor"], e["on_behalf_of"]) for e in succeeded] == [("system", "dev")]

    table = activity.ok("auditor", "audit", "list", "--limit", "5", "--since", "1h").stdout
    assert "category" in table and "actor" in table, table
    as_csv = activity.ok(
        "auditor", "audit", "list", "--category", "ReleaseCreated", "--output", "csv"
    ).stdout
    rows = list(csv.DictReader(as_csv.splitlines()))
    assert [r["actor"] for r in rows] == ["build"]


def test_the_auditor_exports_the_log(activity: Activity) -> None:
    listed = activity.json("auditor", "audit", "list", "--limit", "500")
    jsonl = activity.tmp / "events.jsonl"
    said = activity.ok("auditor", "audit", "export", "--format", "jsonl", "-o", str(jsonl))
    assert f"Exported {len(listed):,} events" in said.stdout, describe(said)
    exported = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [e["id"] for e in exported] == [e["id"] for e in reversed(listed)]
    # An export carries what anyone needs to check each event's hash and the links between them.
    previous = None
    for item in exported:
        record = EventRecord(
            id=int(item["id"].split("-")[1]),
            occurred_at=datetime.fromisoformat(item["occurred"]),
            category=item["category"],
            actor_id=item["actor_id"],
            actor=item["actor"],
            on_behalf_of=item["on_behalf_of"],
            ip_address=item["ip_address"],
            user_agent=item["user_agent"],
            message=item["message"],
            project_id=item["project_id"],
            environment_id=item["environment_id"],
            documents=item["documents"],
            details=item["details"],
        )
        assert event_hash(record, item["prev_hash"]) == item["hash"], item["id"]
        assert previous is None or item["prev_hash"] == previous
        previous = item["hash"]

    as_csv = activity.tmp / "deployments.csv"
    activity.ok(
        "auditor",
        "audit",
        "export",
        "--format",
        "csv",
        "--category",
        "DeploymentQueued",
        "-o",
        str(as_csv),
    )
    with as_csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["actor"], r["environment"]) for r in rows} >= {
        ("build", "Development"),
        ("dev", "Test"),
    }


def test_the_auditor_gathers_the_evidence_of_a_release(activity: Activity) -> None:
    evidence = ("release", "evidence", "--project", "Database", "--version", "1.0.0")
    report = activity.ok("auditor", *evidence).stdout
    assert "# Release evidence: Database 1.0.0" in report
    assert "by **build**" in report
    assert "OctoPetShop.Database" in report
    data = json.loads(activity.ok("auditor", *evidence, "--format", "json").stdout)
    assert {(d["environment"], d["created_by"], d["state"]) for d in data["deployments"]} == {
        ("Development", "build", "success"),
        ("Test", "dev", "success"),
    }
    assert all(len(e["hash"]) == 64 for e in data["events"])


def test_the_auditor_cannot_change_anything(activity: Activity) -> None:
    attempts = {
        "DeploymentCreate": (
            "release",
            "deploy",
            "--project",
            "Database",
            "--version",
            "1.0.0",
            "--to",
            "Staging",
        ),
        "ReleaseCreate": ("release", "create", "--project", "Database", "--version", "9.0.0"),
    }
    for permission, args in attempts.items():
        result = activity.run("auditor", *args)
        assert result.returncode == 3, describe(result)
        assert permission in result.stderr, describe(result)
    edited = activity.tmp / "edited.yaml"
    edited.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            "python3 check.py", "python3 check.py --skip-tests", 1
        ),
        encoding="utf-8",
    )
    result = activity.run("auditor", "apply", "-f", str(edited))
    assert result.returncode == 3, describe(result)
    assert "not allowed" in result.stderr or "may not" in result.stderr, describe(result)
    denied = activity.json(
        "auditor", "audit", "list", "--category", "AccessDenied", "--user", "auditor"
    )
    assert len(denied) == 3, denied


def test_verify_reports_the_chain_intact_then_names_a_tampered_event(
    activity: Activity,
) -> None:
    result = activity.ok("auditor", "audit", "verify")
    assert result.stdout.startswith("intact: "), describe(result)
    count = int(result.stdout.split()[1])
    assert count > 20
    # Someone with the database password edits an approval's message: named, exit 1.
    _sql(activity.server, "UPDATE events SET message = 'nothing to see' WHERE id = 7")
    tampered = activity.run("auditor", "audit", "verify")
    assert tampered.returncode == 1, describe(tampered)
    assert "Events-7 was altered" in tampered.stderr, describe(tampered)
    as_json = activity.run("auditor", "audit", "verify", "--output", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first_bad"] == "Events-7"


def _sql(server: Server, statement: str) -> None:
    url = server.database_url or f"sqlite:///{server.data_dir / 'conveyor.db'}"
    engine = create_engine(url.replace("sqlite+aiosqlite", "sqlite"))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()
