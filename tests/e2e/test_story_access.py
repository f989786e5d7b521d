"""The Octo Pet Shop story's access matrix, against a running server, through the CLI.

For each of the six users, the decisions the scenario implies, asked with `conveyor permissions
explain` (as admin); then the same users, with their own keys, really are refused by the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import EXAMPLE, Server, describe

pytestmark = pytest.mark.e2e

EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
USERS = ("dev", "qa", "owner", "auditor", "ops", "build")
COMPONENTS = ("Database", "Shopping Cart Service", "Product Service", "Website")
PROJECTS = (*COMPONENTS, "Deploy All")
ENVIRONMENTS = ("Development", "Test", "Staging", "Production")


@dataclass(frozen=True)
class Row:
    user: str
    permission: str
    project: str | None
    environment: str | None
    allowed: bool
    # For allowed rows: the team and role expected among granted_by.
    team: str | None = None
    role: str | None = None

    @property
    def id(self) -> str:
        where = " ".join(x for x in (self.project, self.environment) if x) or "anywhere"
        verdict = "may" if self.allowed else "may-not"
        return f"{self.user} {verdict} {self.permission} {where}"

    def args(self) -> tuple[str, ...]:
        args = ("permissions", "explain", "--user", self.user, "--permission", self.permission)
        if self.project:
            args += ("--project", self.project)
        if self.environment:
            args += ("--environment", self.environment)
        return (*args, "--output", "json")


def allow(user: str, perm: str, project: str | None, env: str | None, team: str, role: str) -> Row:
    return Row(user, perm, project, env, True, team, role)


def deny(user: str, perm: str, project: str | None = None, env: str | None = None) -> Row:
    return Row(user, perm, project, env, False)


def _rows() -> list[Row]:
    rows: list[Row] = []
    add = rows.append
    # dev: edits the component processes, not Deploy All's; deploys components to Development and
    # Test, Deploy All to Test only; nothing to Staging or Production; creates Deploy All releases.
    for project in COMPONENTS:
        add(allow("dev", "ProcessEdit", project, None, "Developer", "Project Contributor"))
    add(deny("dev", "ProcessEdit", "Deploy All"))
    for project, env in (("Database", "Development"), ("Website", "Test"), ("Deploy All", "Test")):
        add(allow("dev", "DeploymentCreate", project, env, "Developer", "Project Deployer"))
    for project, env in (
        ("Database", "Staging"),
        ("Shopping Cart Service", "Production"),
        ("Deploy All", "Development"),
        ("Deploy All", "Staging"),
        ("Deploy All", "Production"),
    ):
        add(deny("dev", "DeploymentCreate", project, env))
    add(allow("dev", "ReleaseCreate", "Deploy All", None, "Developer", "Release Creator"))
    add(deny("dev", "UserRoleEdit"))
    # ops: deploys everything everywhere, edits Deploy All's process and no component's.
    for project, env in zip(PROJECTS, (*ENVIRONMENTS, "Production"), strict=True):
        add(allow("ops", "DeploymentCreate", project, env, "Operations", "Project Deployer"))
    add(allow("ops", "ProcessEdit", "Deploy All", None, "Operations", "Project Contributor"))
    for project in ("Database", "Website"):
        add(deny("ops", "ProcessEdit", project))
    add(deny("ops", "UserRoleEdit"))
    # qa and owner: answer their interruptions in Staging and Production; deploy and edit nothing.
    for user, team in (("qa", "QA"), ("owner", "Business Owner")):
        for env in ("Staging", "Production"):
            add(
                allow(
                    user, "InterruptionViewSubmitResponsible", "Deploy All", env, team, "Approver"
                )
            )
        add(deny(user, "InterruptionViewSubmitResponsible", "Deploy All", "Test"))
        add(deny(user, "DeploymentCreate"))
        add(deny(user, "ProcessEdit"))
    # auditor: sees every event, changes nothing.
    for project, env in zip(PROJECTS, (*ENVIRONMENTS, "Production"), strict=True):
        add(allow("auditor", "EventView", project, env, "Auditor", "Auditor"))
    for perm in ("DeploymentCreate", "ProcessEdit", "ReleaseCreate", "VariableEdit"):
        add(deny("auditor", perm))
    # build: pushes packages, creates component releases and deploys them to Development only.
    add(allow("build", "BuiltInFeedPush", None, None, "Build Server", "Build Server"))
    add(deny("build", "BuiltInFeedAdminister"))
    add(allow("build", "ReleaseCreate", "Database", None, "Build Server", "Build Server"))
    for project in ("Database", "Product Service"):
        add(
            allow(
                "build", "DeploymentCreate", project, "Development", "Build Server", "Build Server"
            )
        )
        add(deny("build", "DeploymentCreate", project, "Test"))
    for perm in ("ReleaseCreate", "ProcessEdit", "ProcessView"):
        add(deny("build", perm, "Deploy All"))
    add(deny("build", "ProcessEdit", "Database"))
    return rows


ROWS = _rows()
assert len({r.id for r in ROWS}) == len(ROWS), "duplicate rows"


@pytest.fixture(scope="module")
def story(server: Server) -> Server:
    """The example applied: the scenario's set-up."""
    result = server.cli("apply", "-f", str(EXAMPLE))
    assert result.returncode == 0, describe(result)
    return server


@pytest.fixture(scope="module")
def decisions(story: Server) -> dict[str, dict[str, Any] | str]:
    """Every row's answer from `conveyor permissions explain --output json` run by the CLI's code
    in this process (a process per row would take most of the suite's time; the test below
    shows the two agree): id -> the JSON, or the failure to show."""
    answers: dict[str, dict[str, Any] | str] = {}
    for row in ROWS:
        result = story.cli_in_process(*row.args())
        ok = result.returncode == 0
        answers[row.id] = json.loads(result.stdout) if ok else describe(result)
    return answers


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_story_access_matrix(row: Row, decisions: dict[str, dict[str, Any] | str]) -> None:
    answer = decisions[row.id]
    assert isinstance(answer, dict), answer
    assert set(answer) == {"allowed", "reason", "granted_by"}, answer
    assert answer["allowed"] is row.allowed, answer["reason"]
    assert isinstance(answer["reason"], str) and row.user in answer["reason"]
    assert row.permission in answer["reason"], answer["reason"]
    granted = answer["granted_by"]
    assert all(set(g) == {"team", "role"} for g in granted), granted
    if row.allowed:
        assert {"team": row.team, "role": row.role} in granted, granted
    else:
        assert granted == []


def test_the_command_answers_as_in_the_matrix(
    story: Server, decisions: dict[str, dict[str, Any] | str]
) -> None:
    """The installed `conveyor` command, as its own process, gives the very same answers."""
    sample = [ROWS[0], ROWS[5], next(r for r in ROWS if r.user == "build" and r.allowed)]
    for row in sample:
        result = story.cli(*row.args())
        assert result.returncode == 0, describe(result)
        assert json.loads(result.stdout) == decisions[row.id]


def test_explain_refuses_unknown_names(story: Server) -> None:
    base = ("permissions", "explain", "--user", "dev")
    unknown_perm = story.cli_in_process(*base, "--permission", "ProcesEdit")
    assert unknown_perm.returncode == 2, describe(unknown_perm)
    assert "ProcesEdit" in unknown_perm.stderr
    for extra in (("--project", "Nope"), ("--environment", "Nowhere")):
        result = story.cli_in_process(*base, "--permission", "ProcessEdit", *extra)
        assert result.returncode == 4, describe(result)
        assert extra[1] in result.stderr
    nobody = story.cli_in_process(
        "permissions", "explain", "--user", "nobody", "--permission", "ProjectView"
    )
    assert nobody.returncode == 4, describe(nobody)
    # Names are case-insensitive, slugs work, and the text output says the verdict.
    text = story.cli_in_process(*base, "--permission", "processedit", "--project", "deploy-all")
    assert text.returncode == 0, describe(text)
    assert text.stdout.startswith("NOT ALLOWED: ") and "ProcessEdit" in text.stdout


WITHOUT_QA_APPROVAL = EXAMPLE_TEXT.replace(
    """        - name: QA approval
          type: manual_intervention
          instructions: Check the release notes and the test results, then proceed or abort.
          responsible_teams: [QA]
          prevent_self_approval: true
          environments: [Staging, Production]
""",
    "",
)
DATABASE_CHANGED = EXAMPLE_TEXT.replace(
    "# Apply the migrations not yet applied to this environment's database.",
    "# Apply, in order, the migrations this environment's database has not had yet.",
)
JUST_DATABASE = """\
projects:
  - name: Database
    group: Octo Pet Shop
    lifecycle: Components
    watch_paths: ["database/**"]
    process:
      steps:
        - name: Deploy database
          type: package
          package: OctoPetShop.Database
          target_roles: [octopetshop-database]
          post_deploy_script: python3 deploy.py
"""


def test_the_server_refuses_what_the_story_forbids(story: Server) -> None:
    """The same users, with their own keys: the server itself refuses, and nothing changes."""
    assert WITHOUT_QA_APPROVAL != EXAMPLE_TEXT and DATABASE_CHANGED != EXAMPLE_TEXT
    # One key per user: dev's through the installed command, the others by the same command's
    # code in this process (a second of start-up each saved).
    keys = {user: story.api_key_for(user, in_process=user != "dev") for user in USERS}
    files = {}
    for name, text in (
        ("no-qa-approval.yaml", WITHOUT_QA_APPROVAL),
        ("database-changed.yaml", DATABASE_CHANGED),
        ("just-database.yaml", JUST_DATABASE),
        ("sandbox.yaml", "environments:\n  - name: Sandbox\n"),
    ):
        files[name] = story.tmp / name
        files[name].write_text(text, encoding="utf-8")
    before = story.export()
    assert "QA approval" in before

    def refused(user: str, name: str, permission: str, *extra: str) -> None:
        result = story.cli("apply", "-f", str(files[name]), *extra, api_key=keys[user])
        assert result.returncode == 3, describe(result)
        assert result.stdout == ""
        if "json" in extra:
            error = json.loads(result.stderr)["error"]
            assert error["code"] == "permission_denied", error
            assert permission in error["message"], error
        else:
            assert permission in result.stderr, result.stderr

    # dev may not remove the approval step from Deploy All (story 6), not even as a dry run.
    refused("dev", "no-qa-approval.yaml", "ProcessEdit")
    refused("dev", "no-qa-approval.yaml", "ProcessEdit", "--dry-run", "--output", "json")
    # ops may not edit a component's process (story 10); the auditor may change nothing (story 9).
    refused("ops", "database-changed.yaml", "ProcessEdit")
    refused("auditor", "database-changed.yaml", "ProcessEdit")
    refused("auditor", "sandbox.yaml", "EnvironmentCreate")
    # qa may not drop its own approval, owner create an environment, build edit a process.
    for user, name, permission in (
        ("qa", "no-qa-approval.yaml", "ProcessEdit"),
        ("owner", "sandbox.yaml", "EnvironmentCreate"),
        ("build", "database-changed.yaml", "ProcessEdit"),
    ):
        result = story.cli_in_process("apply", "-f", str(files[name]), api_key=keys[user])
        assert result.returncode == 3 and permission in result.stderr, describe(result)
    after = story.export()
    assert after == before

    # Only what differs is checked: dev may apply the whole file with a component's process
    # changed (story 6), and a file that holds just that project.
    dev_apply = story.cli("apply", "-f", str(files["database-changed.yaml"]), api_key=keys["dev"])
    assert dev_apply.returncode == 0, describe(dev_apply)
    assert "Database" in dev_apply.stdout and "Deploy All" not in dev_apply.stdout
    assert "Apply, in order," in story.export()
    partial = story.cli("apply", "-f", str(files["just-database.yaml"]), api_key=keys["dev"])
    assert partial.returncode == 0, describe(partial)
    exported = story.export()
    assert "Apply, in order," not in exported and "QA approval" in exported

    # Each may ask about themselves with their own key (no UserView needed).
    for user in USERS:
        mine = story.cli_in_process(
            "permissions", "explain", "--user", user, "--permission", "ProjectView",
            "--project", "Deploy All", "--output", "json", api_key=keys[user],
        )  # fmt: skip
        assert mine.returncode == 0, describe(mine)
        assert json.loads(mine.stdout)["allowed"] is (user != "build"), mine.stdout
