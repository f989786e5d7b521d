"""The Octo Pet Shop story (1, 2, 4 to 8 and 10; 3 only by its outcome) against a real server.

One server per database (SQLite, PostgreSQL). The stories build on each other, so they run in
order, sharing one module-scoped ``Story``; a story whose predecessor did not finish is skipped
(the predecessor's failure is the one to read). Every command runs as the user of the story,
with that user's own API key, exactly as they would type it; only the test's own waiting (until
a task asks for a person) reads the HTTP API directly.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from tests import loopback
from tests.e2e.conftest import EXAMPLE, Server, describe

pytestmark = pytest.mark.e2e

EXAMPLES = EXAMPLE.parent
USERS = ("build", "dev", "qa", "owner", "ops", "auditor")
COMPONENTS = {
    # project: (package id, folder in the example)
    "Database": ("OctoPetShop.Database", "database"),
    "Shopping Cart Service": ("OctoPetShop.ShoppingCartService", "src/ShoppingCartService"),
    "Product Service": ("OctoPetShop.ProductService", "src/ProductService"),
    "Website": ("OctoPetShop.Web", "src/Web"),
}
SERVICES = ("Shopping Cart Service", "Product Service")
STEP_OF = {project: f"Deploy {project}" for project in COMPONENTS}
ALREADY_IN_TEST = "1.0.0 is already the current release in Test"
WAIT_SECONDS = 60.0


@dataclass
class Story:
    server: Server
    keys: dict[str, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    tasks: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ the CLI, as a user

    def run(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, api_key=self.keys[user])

    def ok(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(user, *args)
        assert result.returncode == 0, f"as {user}: {describe(result)}"
        return result

    def json(self, user: str, *args: str) -> Any:
        return json.loads(self.ok(user, *args, "--output", "json").stdout)

    def refused(self, user: str, *args: str, code: int = 3) -> str:
        """The command exits ``code`` with one readable sentence; returns it."""
        result = self.run(user, *args)
        assert result.returncode == code, f"as {user}, expected exit {code}: {describe(result)}"
        assert result.stderr.strip(), describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        return str(result.stderr)

    # ------------------------------------------------------------ waiting (test plumbing)

    def api(self, user: str) -> httpx.Client:
        return loopback.client(
            base_url=f"{self.server.url}/api/v1",
            headers={"X-Api-Key": self.keys[user]},
            timeout=30,
        )

    def pending(self, user: str, task: str, step: str) -> dict[str, Any]:
        """Wait until ``task`` asks a person at ``step``; the interruption as ``user`` sees it."""
        deadline = time.monotonic() + WAIT_SECONDS
        with self.api(user) as api:
            while time.monotonic() < deadline:
                state = api.get(f"/tasks/{task}").json()["state"]
                assert state not in ("success", "failed", "canceled", "timed_out"), (
                    f"{task} ended {state} before asking at {step}"
                )
                found = [
                    i
                    for i in api.get("/interruptions", params={"task": task}).json()
                    if i["step"] == step and i["state"] == "pending"
                ]
                if found and state == "waiting":
                    return dict(found[0])
                time.sleep(0.2)
        pytest.fail(f"{task} did not wait at {step} within {WAIT_SECONDS:.0f} s")

    def wait(self, user: str, task: str) -> dict[str, Any]:
        """`conveyor task wait` as the user; it must succeed."""
        data = self.json(user, "task", "wait", task, "--timeout", str(WAIT_SECONDS))
        assert data == {"id": task, "state": "success"}, data
        return dict(data)

    def deployments(self, user: str, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json(user, "deployment", "list", *args)
        return rows

    def require(self, *stories: int) -> None:
        missing = [s for s in stories if s not in self.done]
        if missing:
            pytest.skip(f"story {', '.join(map(str, missing))} did not complete")


@pytest.fixture(scope="module")
def story(server: Server) -> Story:
    """The example applied, and an API key for each user of the story."""
    result = server.cli("apply", "-f", str(EXAMPLE))
    assert result.returncode == 0, describe(result)
    with ThreadPoolExecutor(max_workers=len(USERS)) as pool:
        keys = dict(zip(USERS, pool.map(server.api_key_for, USERS), strict=True))
    return Story(server, keys)


def at(value: str | None) -> datetime:
    assert value, "a deployment time is missing"
    return datetime.fromisoformat(value)


def children_in_order(rows: list[dict[str, Any]], parent: str) -> dict[str, dict[str, Any]]:
    """The children of ``parent`` by project, after checking the order their times show:
    Database done before either service starts, the Website after both services are done."""
    children = {r["project"]: r for r in rows if r["parent"] == parent}
    assert set(children) == set(COMPONENTS), children
    for row in children.values():
        assert row["state"] == "success", row
        assert at(row["queued"]) <= at(row["started"]) <= at(row["completed"]), row
    database, website = children["Database"], children["Website"]
    for name in SERVICES:
        service = children[name]
        assert at(database["completed"]) <= at(service["started"]), (database, service)
        assert at(service["completed"]) <= at(website["started"]), (service, website)
    return children


def deploy_all(story: Story, user: str, release: str, to: str, *extra: str) -> dict[str, Any]:
    return dict(
        story.json(
            user,
            "release",
            "deploy",
            "--project",
            "Deploy All",
            "--version",
            release,
            "--to",
            to,
            *extra,
        )
    )


def build(
    story: Story, project: str, folder: Path, version: str | None, out: Path, *, text: bool = False
) -> Any:
    """What the build server does for one component: pack, push, create the release (with
    ``version``, or the next one). Returns the release as JSON, or what it said in text."""
    package_id = COMPONENTS[project][0]
    package_version = version or (folder / "VERSION").read_text(encoding="utf-8").strip()
    made = story.json(
        "build",
        "package",
        "pack",
        str(folder),
        "--id",
        package_id,
        "--version",
        package_version,
        "-o",
        str(out),
    )
    story.ok("build", "package", "push", made["path"])
    args = ("release", "create", "--project", project, *(("--version", version) if version else ()))
    if text:
        return story.ok("build", *args).stdout
    return story.json("build", *args)


def test_story_1_build_server_releases_each_component(story: Story, tmp_path: Path) -> None:
    """The build server packs, pushes and releases each component (the four builds run side by
    side, as build agents do); each release deploys by itself to Development."""

    def one(project: str) -> Any:
        return build(story, project, EXAMPLES / COMPONENTS[project][1], "1.0.0", tmp_path)

    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        releases = dict(zip(COMPONENTS, pool.map(one, COMPONENTS), strict=True))
    for project, release in releases.items():
        assert set(release) == {"id", "project", "version", "packages", "children"}, release
        assert release["project"] == project and release["version"] == "1.0.0"
        assert release["packages"] == {COMPONENTS[project][0]: "1.0.0"}, release
        assert release["children"] == {}, release
    development = story.deployments("build", "--environment", "Development")
    assert {r["project"] for r in development} == set(COMPONENTS), development
    with ThreadPoolExecutor(max_workers=len(development)) as pool:
        list(pool.map(lambda row: story.wait("build", row["task"]), development))
    board = story.json("auditor", "dashboard")
    assert set(board) == {"environments", "projects", "cells"}
    cells = {(c["project"], c["environment"]): c for c in board["cells"]}
    for project in COMPONENTS:
        cell = cells[(project, "Development")]
        assert set(cell) == {"project", "environment", "release", "state", "task", "completed"}
        assert (cell["release"], cell["state"]) == ("1.0.0", "success"), cell
    story.done.add(1)


def test_story_2_deploy_all_to_test_in_order(story: Story) -> None:
    story.require(1)
    created = story.json(
        "dev", "release", "create", "--project", "Deploy All", "--version", "1.0.0"
    )
    assert created["children"] == dict.fromkeys(COMPONENTS, "1.0.0"), created
    result = story.ok(
        "dev",
        "release",
        "deploy",
        "--project",
        "Deploy All",
        "--version",
        "1.0.0",
        "--to",
        "Test",
        "--wait",
    )
    # --wait shows the progress: the log lines as they come, then the outcome.
    assert "Deploying Database 1.0.0" in result.stdout, describe(result)
    assert "succeeded" in result.stdout.splitlines()[-1], describe(result)
    rows = story.deployments("dev", "--environment", "Test")
    parent = next(r for r in rows if r["project"] == "Deploy All")
    assert (parent["release"], parent["state"], parent["parent"]) == ("1.0.0", "success", None)
    assert parent["created_by"] == "dev"
    children = children_in_order(rows, parent["id"])
    assert {r["release"] for r in children.values()} == {"1.0.0"}
    # The log shows the order too: each child is started in turn.
    log = story.ok("dev", "task", "log", parent["task"]).stdout
    started = [log.index(f"Deploying {project} 1.0.0 as") for project in COMPONENTS]
    assert started[0] < min(started[1:3]) and max(started[1:3]) < started[3], log
    story.done.add(2)


def component_copy(tmp_path: Path, folder: str, version: str) -> Path:
    copy = tmp_path / "src" / folder
    shutil.copytree(EXAMPLES / folder, copy)
    (copy / "VERSION").write_text(f"{version}\n", encoding="utf-8")
    return copy


def test_story_3_database_and_website_1_0_1(story: Story, tmp_path: Path) -> None:
    """Story 3 itself (conveyor changes) is another issue's; here only its outcome: the build
    server releases Database 1.0.1 (with a new migration) and Website 1.0.1."""
    story.require(2)
    database = component_copy(tmp_path, "database", "1.0.1")
    (database / "migrations" / "0003_add_reviews.sql").write_text(
        "-- Product reviews.\nCREATE TABLE reviews (\n    id INTEGER PRIMARY KEY,\n"
        "    product_id INTEGER NOT NULL REFERENCES products (id),\n"
        "    stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5)\n);\n",
        encoding="utf-8",
    )
    website = component_copy(tmp_path, "src/Web", "1.0.1")
    with ThreadPoolExecutor(max_workers=2) as pool:
        made = pool.submit(build, story, "Database", database, None, tmp_path)
        # In text, release create also says where the release went by itself.
        said = build(story, "Website", website, None, tmp_path, text=True)
        release = made.result()
    assert release["version"] == "1.0.1", release  # the next version after 1.0.0
    assert release["packages"] == {"OctoPetShop.Database": "1.0.1"}, release
    assert "Created Website 1.0.1" in said, said
    assert "OctoPetShop.Web 1.0.1" in said, said
    assert "Deploying automatically to Development" in said, said
    development = story.deployments("build", "--environment", "Development")
    newest = [r for r in development if r["release"] == "1.0.1"]
    assert {r["project"] for r in newest} == {"Database", "Website"}, development
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda row: story.wait("build", row["task"]), newest))
    story.done.add(3)


def test_story_4_deploy_all_1_0_1_chooses_the_latest_and_plans_the_skips(story: Story) -> None:
    story.require(3)
    created = story.json(
        "dev", "release", "create", "--project", "Deploy All", "--version", "1.0.1"
    )
    assert created["children"] == {
        "Database": "1.0.1",
        "Shopping Cart Service": "1.0.0",
        "Product Service": "1.0.0",
        "Website": "1.0.1",
    }, created
    plan = story.json(
        "dev", "release", "plan", "--project", "Deploy All", "--version", "1.0.1", "--to", "Test"
    )
    assert set(plan) == {"environment", "steps", "changes"} and plan["environment"] == "Test", plan
    steps = {s["name"]: s for s in plan["steps"]}
    for step in plan["steps"]:
        assert set(step) == {"name", "action", "reason", "child"}, step
    assert steps["QA approval"]["action"] == "skip" and steps["QA approval"]["child"] is None
    assert steps[STEP_OF["Database"]]["action"] == "run", steps
    assert steps[STEP_OF["Database"]]["child"] == {
        "project": "Database",
        "version": "1.0.1",
        "current": "1.0.0",
    }
    for name in SERVICES:
        step = steps[STEP_OF[name]]
        assert step["action"] == "skip", step
        assert ALREADY_IN_TEST in step["reason"] and name in step["reason"], step
        assert step["child"] == {"project": name, "version": "1.0.0", "current": "1.0.0"}
    assert steps[STEP_OF["Website"]]["action"] == "run", steps
    # The lifecycle holds: 1.0.1 has not succeeded in Test, so not even ops may take it further.
    message = story.refused(
        "ops",
        "release",
        "deploy",
        "--project",
        "Deploy All",
        "--version",
        "1.0.1",
        "--to",
        "Staging",
        code=5,
    )
    assert "Test" in message, message
    story.done.add(4)


def test_story_5_deploy_all_1_0_1_to_test(story: Story) -> None:
    story.require(4)
    queued = deploy_all(story, "dev", "1.0.1", "Test", "--wait")
    assert set(queued) == {"deployment", "task", "state"} and queued["state"] == "success"
    log = story.ok("dev", "task", "log", queued["task"]).stdout
    for name in SERVICES:
        assert f'"{STEP_OF[name]}" skipped: {name} {ALREADY_IN_TEST}' in log, log
    rows = story.deployments("dev", "--environment", "Test")
    children = [r for r in rows if r["parent"] == queued["deployment"]]
    assert sorted((r["project"], r["release"]) for r in children) == [
        ("Database", "1.0.1"),
        ("Website", "1.0.1"),
    ], children
    database = children[[r["project"] for r in children].index("Database")]
    website = children[[r["project"] for r in children].index("Website")]
    assert at(database["completed"]) <= at(website["started"])
    # The files the deployments wrote: Test's database has the new migration ...
    test_folder = next(story.server.data_dir.glob("targets/*/test"))
    db = test_folder / "database" / "octopetshop-Test.sqlite"
    assert db.is_file(), sorted(str(p) for p in test_folder.rglob("*"))
    with sqlite3.connect(db) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == ["0001_create_products.sql", "0002_create_carts.sql", "0003_add_reviews.sql"], (
        names
    )
    # ... and Website 1.0.1 is what is live in Test.
    current = test_folder / "website" / "current"
    assert current.is_symlink() and current.resolve().name == "1.0.1", current
    assert (current / "VERSION").read_text(encoding="utf-8").strip() == "1.0.1"
    story.tasks["test"] = queued["task"]
    story.done.add(5)


def config_without(step_name: str) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    deploy_all_doc = next(p for p in config["projects"] if p["name"] == "Deploy All")
    steps = deploy_all_doc["process"]["steps"]
    deploy_all_doc["process"]["steps"] = [s for s in steps if s["name"] != step_name]
    return dict(config)


def database_only(extra_step: dict[str, Any]) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    database = next(p for p in config["projects"] if p["name"] == "Database")
    database["process"]["steps"].append(extra_step)
    return {"projects": [database]}


def write_yaml(tmp_path: Path, name: str, data: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def test_story_6_what_dev_may_not_do(story: Story, tmp_path: Path) -> None:
    story.require(5)
    message = story.refused(
        "dev",
        "release",
        "deploy",
        "--project",
        "Deploy All",
        "--version",
        "1.0.1",
        "--to",
        "Staging",
    )
    assert "DeploymentCreate" in message, message
    no_qa = write_yaml(tmp_path, "no-qa.yaml", config_without("QA approval"))
    message = story.refused("dev", "apply", "-f", no_qa)
    assert "ProcessEdit" in message or "Deploy All" in message, message
    checked = database_only(
        {"name": "Smoke check", "type": "script", "syntax": "bash", "script": "echo checked"}
    )
    result = story.ok("dev", "apply", "-f", write_yaml(tmp_path, "database.yaml", checked))
    assert "Database" in result.stdout, result.stdout
    # The refused file changed nothing: Deploy All still asks QA.
    exported = yaml.safe_load(story.ok("ops", "export").stdout)
    deploy_all_doc = next(p for p in exported["projects"] if p["name"] == "Deploy All")
    assert "QA approval" in [s["name"] for s in deploy_all_doc["process"]["steps"]]
    story.done.add(6)


def test_story_7_ops_deploys_to_staging_through_both_approvals(story: Story) -> None:
    story.require(5)
    queued = deploy_all(story, "ops", "1.0.1", "Staging")
    assert set(queued) == {"deployment", "task", "state"}, queued
    task = queued["task"]
    qa_step = story.pending("ops", task, "QA approval")
    listed = story.json("ops", "interruption", "list", "--task", task)
    assert [i["id"] for i in listed] == [qa_step["id"]], listed
    item = listed[0]
    assert set(item) == {
        "id",
        "task",
        "step",
        "kind",
        "responsible_teams",
        "taken_by",
        "state",
        "result",
    }, item
    assert item == {
        "id": qa_step["id"],
        "task": task,
        "step": "QA approval",
        "kind": "manual_intervention",
        "responsible_teams": ["QA"],
        "taken_by": None,
        "state": "pending",
        "result": None,
    }, item
    interruption = item["id"]
    # ops may deploy but not approve; owner is not in QA: both refused, with the reason.
    refusals = [
        ("ops", "interruption", "submit", interruption, "--result", "proceed"),
        ("owner", "interruption", "submit", interruption, "--result", "proceed"),
        ("owner", "interruption", "take", interruption),
    ]
    with ThreadPoolExecutor(max_workers=len(refusals)) as pool:
        messages = list(pool.map(lambda args: story.refused(*args), refusals))
    assert all("QA" in m for m in messages[1:]), messages
    mine = story.json("qa", "interruption", "list", "--mine")
    assert [i["id"] for i in mine] == [interruption], mine
    taken = story.json("qa", "interruption", "take", interruption)
    assert taken["taken_by"] == "qa", taken
    answered = story.json(
        "qa", "interruption", "submit", interruption, "--result", "proceed", "--notes", "tested"
    )
    assert (answered["state"], answered["result"]) == ("answered", "proceed"), answered
    owner_step = story.pending("owner", task, "Business Owner approval")
    assert owner_step["responsible_teams"] == ["Business Owner"], owner_step
    story.refused("qa", "interruption", "submit", owner_step["id"], "--result", "proceed")
    story.ok("owner", "interruption", "take", owner_step["id"])
    story.ok(
        "owner", "interruption", "submit", owner_step["id"], "--result", "proceed", "--notes", "go"
    )
    story.wait("ops", task)
    rows = story.deployments("auditor", "--environment", "Staging")
    children = children_in_order(rows, queued["deployment"])
    assert {p: r["release"] for p, r in children.items()} == {
        "Database": "1.0.1",
        "Shopping Cart Service": "1.0.0",
        "Product Service": "1.0.0",
        "Website": "1.0.1",
    }
    # Each child ran as the person who started the parent.
    assert {r["created_by"] for r in children.values()} == {"ops"}
    story.done.add(7)


def test_story_8_qa_aborts_the_promotion_to_production(story: Story) -> None:
    story.require(7)
    queued = story.json(
        "ops",
        "release",
        "promote",
        "--project",
        "Deploy All",
        "--from",
        "Staging",
        "--to",
        "Production",
    )
    assert set(queued) == {"deployment", "task", "state"}, queued
    task = queued["task"]
    step = story.pending("qa", task, "QA approval")
    story.ok("qa", "interruption", "take", step["id"])
    story.ok(
        "qa",
        "interruption",
        "submit",
        step["id"],
        "--result",
        "abort",
        "--notes",
        "the checkout is broken",
    )
    waited = story.run(
        "ops", "task", "wait", task, "--timeout", str(WAIT_SECONDS), "--output", "json"
    )
    assert waited.returncode == 1, describe(waited)
    assert json.loads(waited.stdout) == {"id": task, "state": "failed"}, describe(waited)
    shown = story.json("ops", "task", "show", task)
    assert shown["state"] == "failed", shown
    assert "aborted by qa" in (shown["error"] or ""), shown
    assert "the checkout is broken" in shown["error"], shown
    production = story.deployments("auditor", "--environment", "Production")
    assert [(r["project"], r["release"], r["state"]) for r in production] == [
        ("Deploy All", "1.0.1", "failed")
    ], production
    board = story.json("auditor", "dashboard")
    in_production = [c for c in board["cells"] if c["environment"] == "Production"]
    assert [(c["project"], c["state"]) for c in in_production] == [("Deploy All", "failed")]
    story.done.add(8)


def test_story_10_ops_may_not_edit_a_component_process(story: Story, tmp_path: Path) -> None:
    story.require(1)
    changed = database_only(
        {"name": "Ops shortcut", "type": "script", "syntax": "bash", "script": "echo nope"}
    )
    message = story.refused("ops", "apply", "-f", write_yaml(tmp_path, "ops.yaml", changed))
    assert "ProcessEdit" in message or "Database" in message, message


def test_people_read_it_all_in_text(story: Story) -> None:
    """The same commands for people: short, aligned tables and sentences."""
    story.require(8)
    commands = {
        "dashboard": ("dashboard",),
        "deployments": ("deployment", "list", "--environment", "Staging"),
        "releases": ("release", "list", "--project", "Deploy All"),
        "release": ("release", "show", "--project", "Deploy All", "--version", "1.0.1"),
        "interruptions": ("interruption", "list"),
        "task": ("task", "show", story.tasks["test"]),
        "plan": (
            "release",
            "plan",
            "--project",
            "Deploy All",
            "--version",
            "1.0.1",
            "--to",
            "Production",
        ),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        said = dict(
            zip(
                commands,
                pool.map(lambda a: story.ok("auditor", *a).stdout, commands.values()),
                strict=True,
            )
        )
    board = said["dashboard"].splitlines()
    assert board[0].split()[:5] == ["project", "Development", "Test", "Staging", "Production"]
    website = next(line for line in board if line.startswith("Website"))
    assert website.split()[1:] == ["1.0.1", "✓", "1.0.1", "✓", "1.0.1", "✓"], board
    assert "Deploy All" in said["deployments"] and "Deployments-" in said["deployments"]
    assert said["releases"].index("1.0.1") < said["releases"].index("1.0.0")
    assert "child   Database 1.0.1" in said["release"], said["release"]
    assert "QA approval" in said["interruptions"] and "abort" in said["interruptions"]
    assert "Deploy Shopping Cart Service" in said["task"] and "skipped" in said["task"]
    assert "Deploy Website" in said["plan"]


GOVERNANCE = EXAMPLES / "governance.yaml"
LONDON = ZoneInfo("Europe/London")
FREEZE = (datetime(2026, 12, 21, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC))


def next_production_window() -> str:
    """A start time inside Production's change window (Mon-Thu 09:00-16:00 London) and outside
    its freeze, at least two hours from now: the test never depends on today's date."""
    day = datetime.now(LONDON) + timedelta(hours=2)
    for offset in range(30):
        moment = (day + timedelta(days=offset)).replace(hour=10, minute=0, second=0, microsecond=0)
        if moment.weekday() > 3 or moment < day or FREEZE[0] <= moment < FREEZE[1]:
            continue
        return moment.isoformat()
    raise AssertionError("no window in the next 30 days")


def test_story_11_governance_on_top(story: Story, tmp_path: Path) -> None:
    """governance.yaml applied on top: checks on Staging and Production that process editors
    cannot remove, approvals ahead of time (for Deploy All: its train), a scheduled start in
    Production's window, run latest, revocation, and the evidence."""
    story.require(7)
    applied = story.server.cli("apply", "-f", str(GOVERNANCE))
    assert applied.returncode == 0, describe(applied)
    # The base file, which does not mention checks, would leave them in place.
    again = story.server.cli("apply", "-f", str(EXAMPLE), "--dry-run")
    assert again.returncode == 0 and "environment" not in again.stdout, describe(again)
    no_checks = {"environments": [{"name": "Production", "checks": []}]}
    message = story.refused("dev", "apply", "-f", write_yaml(tmp_path, "gov.yaml", no_checks))
    assert "EnvironmentEdit" in message, message

    # Staging: ops queues Deploy All 1.0.1; it waits for QA and the business owner.
    plan = story.json(
        *("ops", "release", "plan", "--project", "Deploy All"),
        *("--version", "1.0.1", "--to", "Staging"),
    )
    [approval] = [c for c in plan["checks"] if c["kind"] == "approval"]
    assert approval["state"] == "pending", plan["checks"]
    assert "waiting for 1 from QA, 1 from Business Owner" in approval["reason"], approval
    queued = deploy_all(story, "ops", "1.0.1", "Staging")
    assert queued["held"] is True and queued["state"] == "queued", queued
    shown = story.json("ops", "task", "show", queued["task"])
    assert "waiting for its environment's checks" in shown["queue_reason"], shown
    give = ("approval", "give", "--project", "Deploy All", "--version", "1.0.1")
    story.refused("dev", *give, "--to", "Staging")
    said = story.ok("qa", *give, "--to", "Staging", "--notes", "regression suite green").stdout
    assert "Database" in said and "approved Deploy All 1.0.1 for Staging as QA" in said, said
    said = story.ok("owner", *give, "--to", "Staging").stdout
    assert "1 waiting deployment(s) may start now" in said, said
    # Then the process's own approvals (the seed's way) run as before.
    for person, step in (("qa", "QA approval"), ("owner", "Business Owner approval")):
        pending = story.pending(person, queued["task"], step)
        story.ok(person, "interruption", "submit", pending["id"], "--result", "proceed")
    story.wait("ops", queued["task"])

    # Production: scheduled inside its window; a change ticket is asked; a newer one wins.
    start = next_production_window()
    first = deploy_all(story, "ops", "1.0.1", "Production", "--at", start)
    reasons = {c["name"]: c for c in first["checks"]}
    assert reasons["Scheduled start"]["state"] == "pending", first
    story.refused("qa", *give, "--to", "Production", code=2)  # no ChangeTicket
    story.refused("qa", *give, "--to", "Production", "--field", "ChangeTicket=7", code=2)
    given = story.json("qa", *give, "--to", "Production", "--field", "ChangeTicket=CHG-1234")
    assert given["state"] == "valid" and given["fields"] == {"ChangeTicket": "CHG-1234"}, given
    second = deploy_all(story, "ops", "1.0.1", "Production", "--at", start)
    replaced = story.json("ops", "task", "show", first["task"])
    assert replaced["state"] == "canceled", replaced
    assert replaced["error"].startswith("superseded by Deploy All 1.0.1 to Production"), replaced
    story.ok("ops", "task", "cancel", second["task"])
    waited = story.run("ops", "task", "wait", second["task"], "--timeout", str(WAIT_SECONDS))
    assert waited.returncode == 1 and "canceled" in waited.stdout + waited.stderr, describe(waited)
    story.ok("qa", "approval", "revoke", given["id"])
    listed = story.json("auditor", "approval", "list", "--project", "Deploy All")
    assert sorted((a["environment"], a["user"], a["state"]) for a in listed) == [
        ("Production", "qa", "revoked"),
        ("Staging", "owner", "valid"),
        ("Staging", "qa", "valid"),
    ], listed
    shown_as = ("release", "evidence", "--project", "Deploy All", "--version", "1.0.1")
    evidence = json.loads(story.ok("auditor", *shown_as, "--format", "json").stdout)
    markdown = story.ok("auditor", *shown_as).stdout
    assert "### Given ahead of time" in markdown and "CHG-1234" in markdown, markdown
    assert len(evidence["approvals_ahead"]) == 3, evidence["approvals_ahead"]
    categories = {e["category"] for e in evidence["events"]}
    assert {"ApprovalGiven", "ApprovalRevoked", "DeploymentHeld", "DeploymentReleased"} <= (
        categories
    ), categories
    story.done.add(11)
