"""Who may deploy where, and who may approve: the report, on constructed models (pure)."""

from __future__ import annotations

from typing import Any

from conveyor.domain import access_report as ar
from conveyor.domain import permissions as perms
from conveyor.domain.documents import (
    ApprovalCheck,
    Environment,
    EnvironmentChecks,
    Lifecycle,
    ManualInterventionAction,
    Phase,
    Process,
    Project,
    ProjectGroup,
    ScopedRole,
    ScriptAction,
    Step,
    Team,
    TeamQuorum,
    User,
    UserRole,
)
from conveyor.domain.model import Model

BUILT_IN = tuple(
    UserRole(r.name, tuple(p.value for p in r.permissions), built_in=True)
    for r in perms.BUILT_IN_ROLES
)
ENVS = ("Dev", "Test", "Staging", "Prod")


def manual(name: str, *teams: str, **kw: Any) -> Step:
    return Step(name, ManualInterventionAction("Look, then proceed", responsible_teams=teams), **kw)


def shop(**changes: Any) -> Model:
    """Two groups; Prod asks the approval of QA and Business Owner for the Shop group only;
    Web has a QA step in Staging and Prod, a disabled one, and a step anyone may answer."""
    prod_checks = (
        EnvironmentChecks(
            project_groups=("Shop",),
            approval=ApprovalCheck((TeamQuorum("QA"), TeamQuorum("Business Owner", 2))),
        ),
    )
    web_steps = (
        manual("QA approval", "QA", environments=("Staging", "Prod")),
        manual("Old approval", "Operations", disabled=True),
        manual("Anyone", excluded_environments=("Dev", "Test", "Prod")),
        Step("Deploy", ScriptAction("echo")),
    )
    model = Model(
        environments=tuple(Environment(e, checks=prod_checks if e == "Prod" else ()) for e in ENVS),
        lifecycles=(
            Lifecycle("All", tuple(Phase(e, (e,)) for e in ENVS)),
            Lifecycle("Late", (Phase("Staging", ("Staging",)), Phase("Prod", ("Prod",)))),
        ),
        project_groups=(ProjectGroup("Shop"), ProjectGroup("Tools")),
        user_roles=BUILT_IN,
        users=(
            User("dev"),
            User("qa"),
            User("qa2"),
            User("owner"),
            User("ops"),
            User("gone", active=False),
            User("build", service_account=True),
        ),
        projects=(
            Project("Web", "Shop", "All", process=Process(web_steps)),
            Project("Database", "Shop", "All"),
            Project("Linter", "Tools", "Late"),
        ),
        teams=(
            Team(
                "Developers",
                ("dev", "gone"),
                (
                    ScopedRole("Project Viewer"),
                    ScopedRole("Project Deployer", environments=("Dev", "Test")),
                ),
            ),
            Team("QA", ("qa", "qa2"), (ScopedRole("Approver", environments=("Staging", "Prod")),)),
            # qa2 is in Business Owner too, but holds no approving role through it.
            Team("Business Owner", ("owner", "qa2"), (ScopedRole("Project Viewer"),)),
            Team("Owners", ("owner",), (ScopedRole("Approver", environments=("Prod",)),)),
            Team("Operations", ("ops",), (ScopedRole("Project Deployer"),)),
            Team(
                "Build",
                ("build",),
                (ScopedRole("Build Server", project_groups=("Shop",), environments=("Dev",)),),
            ),
        ),
    )
    return Model(**{**model.__dict__, **changes}) if changes else model


def cell(rows: list[ar.Row], project: str, environment: str) -> ar.Row:
    [row] = [r for r in rows if r.project == project and r.environment == environment]
    return row


def deployers(row: ar.Row) -> set[tuple[str, str, str]]:
    return {(e.user, e.team, e.role) for e in row.deployers}


def approvers(row: ar.Row) -> set[tuple[str, str, str, str]]:
    return {(e.user, e.team, e.role, e.via) for e in row.approvers}


def test_each_project_only_in_the_environments_of_its_lifecycle() -> None:
    rows = ar.report(shop())
    assert [(r.project, r.environment) for r in rows] == [
        *(("Web", e) for e in ENVS),
        *(("Database", e) for e in ENVS),
        ("Linter", "Staging"),
        ("Linter", "Prod"),
    ]
    only = ar.report(shop(), environments=["prod"])
    assert [(r.project, r.environment) for r in only] == [
        ("Web", "Prod"),
        ("Database", "Prod"),
        ("Linter", "Prod"),
    ]


def test_deployers_through_environment_and_group_scoped_roles_inactive_users_left_out() -> None:
    rows = ar.report(shop())
    developers = ("dev", "Developers", "Project Deployer")
    ops = ("ops", "Operations", "Project Deployer")
    build = ("build", "Build", "Build Server")
    assert deployers(cell(rows, "Web", "Dev")) == {developers, ops, build}
    assert deployers(cell(rows, "Web", "Test")) == {developers, ops}
    assert deployers(cell(rows, "Web", "Prod")) == {ops}
    # The build server's role covers the Shop group only.
    assert deployers(cell(rows, "Database", "Dev")) == {developers, ops, build}
    assert deployers(cell(rows, "Linter", "Staging")) == {ops}
    # gone is in Developers but inactive: never listed anywhere.
    assert all(e.user != "gone" for r in rows for e in (*r.deployers, *r.approvers))


def test_every_role_that_grants_it_is_named() -> None:
    model = shop()
    teams = (
        *model.teams,
        Team("Release train", ("ops",), (ScopedRole("Project Deployer", projects=("Web",)),)),
    )
    rows = ar.report(shop(teams=teams))
    assert deployers(cell(rows, "Web", "Prod")) == {
        ("ops", "Operations", "Project Deployer"),
        ("ops", "Release train", "Project Deployer"),
    }
    assert deployers(cell(rows, "Database", "Prod")) == {("ops", "Operations", "Project Deployer")}


def test_an_environment_check_with_two_teams_is_approved_by_their_members_who_may_approve() -> None:
    rows = ar.report(shop())
    check = "approval check of Prod"
    assert cell(rows, "Database", "Prod").gates == (check,)
    assert approvers(cell(rows, "Database", "Prod")) == {
        ("qa", "QA", "Approver", f"{check}, as QA"),
        # qa2 approves as QA or Business Owner: the Approver role comes through QA.
        ("qa2", "QA", "Approver", f"{check}, as QA, Business Owner"),
        ("owner", "Owners", "Approver", f"{check}, as Business Owner"),
    }
    # ops may answer interruptions in Prod but is in neither team: not an approver here.
    assert "ops" not in {e.user for e in cell(rows, "Database", "Prod").approvers}
    # The check covers the Shop group only.
    assert cell(rows, "Linter", "Prod").gates == ()
    assert cell(rows, "Linter", "Prod").approvers == ()


def test_manual_steps_where_they_run_by_responsible_teams_or_anyone_who_may_answer() -> None:
    rows = ar.report(shop())
    staging = cell(rows, "Web", "Staging")
    assert staging.gates == ('manual intervention "QA approval"', 'manual intervention "Anyone"')
    assert approvers(staging) == {
        ("qa", "QA", "Approver", 'manual intervention "QA approval", as QA'),
        ("qa2", "QA", "Approver", 'manual intervention "QA approval", as QA'),
        # A step without responsible teams: whoever holds InterruptionSubmit there.
        ("ops", "Operations", "Project Deployer", 'manual intervention "Anyone"'),
    }
    # The QA step runs in Prod too, beside the environment check; Anyone is excluded there;
    # the disabled step of Operations is no gate anywhere.
    prod = cell(rows, "Web", "Prod")
    assert prod.gates == ("approval check of Prod", 'manual intervention "QA approval"')
    assert ("qa", "QA", "Approver", 'manual intervention "QA approval", as QA') in approvers(prod)
    assert not any("Old approval" in gate for r in rows for gate in r.gates)
    assert cell(rows, "Web", "Test").gates == ()
    assert cell(rows, "Web", "Test").approvers == ()


def test_a_person_who_both_deploys_and_approves_is_flagged() -> None:
    rows = ar.report(shop())
    assert cell(rows, "Web", "Staging").deploy_and_approve == ("ops",)
    assert cell(rows, "Web", "Prod").deploy_and_approve == ()
    data = ar.as_dict(cell(rows, "Web", "Staging"))
    assert data["deploy_and_approve"] == ["ops"]
    assert {"user": "ops", "team": "Operations", "role": "Project Deployer"} in data["deployers"]


def test_csv_has_one_line_per_duty_person_team_and_role() -> None:
    rows = ar.report(shop(), projects=[shop().projects[0]], environments=["Staging"])
    lines = list(ar.csv_rows(rows))
    assert ("Web", "Staging", "deploy", "ops", "Operations", "Project Deployer", "") in lines
    assert (
        "Web",
        "Staging",
        "approve",
        "qa",
        "QA",
        "Approver",
        'manual intervention "QA approval", as QA',
    ) in lines
    assert len(lines) == len(rows[0].deployers) + len(rows[0].approvers)


def test_the_report_agrees_with_authorize_for_every_person_and_cell() -> None:
    """Answers are shared between projects of a group; a grant naming one project must not
    leak to its neighbours (nor the other way round)."""
    model = shop()
    teams = (
        *model.teams,
        Team("Web only", ("dev",), (ScopedRole("Project Deployer", projects=("Web",)),)),
        Team("Not web", ("qa",), (ScopedRole("Project Deployer", projects=("Database",)),)),
    )
    model = shop(teams=teams)
    roles = {r.name.lower(): r for r in model.user_roles}
    rows = ar.report(model)
    for row in rows:
        project = model.get("projects", row.project)
        ref = perms.ProjectRef(project.name, project.group)
        for user in model.users:
            principal = perms.principal_for(user.username, user.active, model.teams, roles)
            decision = perms.authorize(
                principal,
                perms.Permission.DeploymentCreate,
                project=ref,
                environment=row.environment,
            )
            listed = {(e.team, e.role) for e in row.deployers if e.user == user.username}
            assert listed == {(g.team, g.role) for g in decision.granted_by}, (row, user)
    assert ("dev", "Web only", "Project Deployer") in deployers(cell(rows, "Web", "Prod"))
    assert "dev" not in {e.user for e in cell(rows, "Database", "Prod").deployers}
    assert "qa" in {e.user for e in cell(rows, "Database", "Prod").deployers}
    assert "qa" not in {e.user for e in cell(rows, "Web", "Prod").deployers}
