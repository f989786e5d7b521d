"""The permission catalogue, built-in roles, and the one evaluation behind enforce and explain."""

from __future__ import annotations

import pytest

from conveyor.domain.documents import ScopedRole, Team, UserRole
from conveyor.domain.permissions import (
    BUILT_IN_ROLES,
    CATALOGUE,
    Decision,
    Dimension,
    Grant,
    GrantedBy,
    Permission,
    Principal,
    ProjectRef,
    authorize,
    explain,
    matrix,
    parse_permission,
    principal_for,
)

P = Permission
ROLES = {role.name: role for role in BUILT_IN_ROLES}

# The Octo Pet Shop (shared/scenarios/octo-pet-shop.md).
ENVIRONMENTS = ("Development", "Test", "Staging", "Production")
SHOP = "Octo Pet Shop"
ORCHESTRATION = "Octo Pet Shop Orchestration"
COMPONENTS = ("Database", "Shopping Cart Service", "Product Service", "Website")
DATABASE = ProjectRef("Database", SHOP)
WEBSITE = ProjectRef("Website", SHOP)
DEPLOY_ALL = ProjectRef("Deploy All", ORCHESTRATION)
PROJECTS = (*(ProjectRef(name, SHOP) for name in COMPONENTS), DEPLOY_ALL)


def user_roles() -> dict[str, UserRole]:
    return {
        r.name: UserRole(r.name, tuple(sorted(r.permissions)), r.description, built_in=True)
        for r in BUILT_IN_ROLES
    }


TEAMS = (
    Team(
        "Developer",
        members=("dev",),
        roles=(
            ScopedRole("Project Deployer", projects=COMPONENTS, environments=ENVIRONMENTS[:2]),
            ScopedRole("Project Contributor", projects=COMPONENTS),
            ScopedRole("Release Creator", projects=("Deploy All",)),
            ScopedRole("Project Deployer", projects=("Deploy All",), environments=("Test",)),
        ),
    ),
    Team(
        "QA",
        members=("qa",),
        roles=(
            ScopedRole("Project Viewer"),
            ScopedRole("Approver", environments=("Staging", "Production")),
        ),
    ),
    Team(
        "Operations",
        members=("ops",),
        roles=(
            ScopedRole("Project Deployer"),
            ScopedRole("Release Creator"),
            ScopedRole("Project Contributor", projects=("Deploy All",)),
        ),
    ),
    Team("Auditor", members=("auditor",), roles=(ScopedRole("Auditor"),)),
)


def shop_user(username: str) -> Principal:
    return principal_for(username, True, TEAMS, user_roles())


def grant(role: str, team: str = "T", **scope: frozenset[str]) -> Grant:
    return Grant(team=team, role=role, permissions=ROLES[role].permissions, **scope)


def person(*grants: Grant, active: bool = True) -> Principal:
    return Principal("pat", active, grants)


def allowed(
    principal: Principal,
    permission: Permission | str,
    *,
    project: ProjectRef | None = None,
    project_group: str | None = None,
    environment: str | None = None,
) -> bool:
    return authorize(
        principal, permission, project=project, project_group=project_group, environment=environment
    ).allowed


# --- catalogue -------------------------------------------------------------------------------


def test_every_permission_is_catalogued_with_its_own_name() -> None:
    assert set(CATALOGUE) == set(Permission)
    for permission, info in CATALOGUE.items():
        assert permission.value == permission.name
        assert info.permission is permission
        assert info.description


def test_catalogue_uses_octopus_wording_and_dimensions() -> None:
    assert CATALOGUE[P.DeploymentCreate].description == "Deploy releases to target environments"
    assert CATALOGUE[P.DeploymentCreate].dimensions == {Dimension.PROJECT, Dimension.ENVIRONMENT}
    assert CATALOGUE[P.ProcessEdit].dimensions == {Dimension.PROJECT}
    assert CATALOGUE[P.ProjectCreate].dimensions == {Dimension.PROJECT_GROUP}
    assert CATALOGUE[P.EnvironmentEdit].dimensions == {Dimension.ENVIRONMENT}
    assert CATALOGUE[P.LifecycleEdit].dimensions == frozenset()
    assert CATALOGUE[P.AdministerSystem].system
    assert CATALOGUE[P.UserRoleEdit].system
    assert not CATALOGUE[P.ProcessEdit].system


def test_parse_permission_is_case_insensitive() -> None:
    assert parse_permission("ProcessEdit") is P.ProcessEdit
    assert parse_permission(" processedit ") is P.ProcessEdit
    assert parse_permission("DEPLOYMENTCREATE") is P.DeploymentCreate
    assert parse_permission("ProcessEdt") is None
    assert parse_permission("") is None


# --- built-in roles --------------------------------------------------------------------------


def test_built_in_role_names() -> None:
    assert set(ROLES) == {
        "System Administrator",
        "Project Viewer",
        "Project Contributor",
        "Project Deployer",
        "Project Lead",
        "Release Creator",
        "Environment Viewer",
        "Environment Manager",
        "Auditor",
        "Approver",
        "Build Server",
    }
    assert len(ROLES) == len(BUILT_IN_ROLES)


def test_no_built_in_role_deploys_and_edits_processes_except_system_administrator() -> None:
    both = {r.name for r in BUILT_IN_ROLES if {P.DeploymentCreate, P.ProcessEdit} <= r.permissions}
    assert both == {"System Administrator"}
    assert "separation of duties" in ROLES["System Administrator"].description


def test_built_in_role_contents() -> None:
    viewer = ROLES["Project Viewer"].permissions
    contributor = ROLES["Project Contributor"].permissions
    assert ROLES["System Administrator"].permissions == set(Permission)
    assert ROLES["Project Deployer"].permissions == viewer | {
        P.DeploymentCreate,
        P.InterruptionSubmit,
        P.TaskCreate,
        P.TaskCancel,
    }
    assert {P.ProcessEdit, P.ProjectEdit, P.VariableEdit} <= contributor
    assert P.InterruptionViewSubmitResponsible in contributor
    assert contributor.isdisjoint({P.DeploymentCreate, P.ReleaseCreate})
    lead = ROLES["Project Lead"].permissions
    assert lead == contributor | {P.ReleaseCreate, P.ReleaseEdit, P.ReleaseDelete}
    assert P.DeploymentCreate not in lead
    approver = ROLES["Approver"].permissions
    assert approver == viewer | {P.InterruptionViewSubmitResponsible}
    assert P.EventView in viewer


def test_auditor_holds_every_view_permission_and_nothing_else() -> None:
    views = {p for p in Permission if p.value.endswith("View")}
    assert ROLES["Auditor"].permissions == views
    assert P.EventView in views
    assert P.InterruptionViewSubmitResponsible not in views


def test_build_server_pushes_creates_and_deploys_but_does_not_edit() -> None:
    build = ROLES["Build Server"].permissions
    assert {P.BuiltInFeedPush, P.BuildInformationPush, P.ReleaseCreate, P.DeploymentCreate} <= build
    assert {P.ProjectView, P.ReleaseView, P.DeploymentView} <= build
    assert not any(p.value.endswith(("Edit", "Delete", "Administer")) for p in build)


# --- principal_for ---------------------------------------------------------------------------


def test_principal_for_collects_grants_of_the_users_teams_case_insensitively() -> None:
    roles = {
        "project viewer": UserRole("Project Viewer", ("ProjectView", "NoSuchPermission")),
        "Deployer": UserRole("Deployer", ("deploymentcreate",)),
    }
    teams = [
        Team("Dev", members=("Dev",), roles=(ScopedRole("PROJECT VIEWER", projects=("Db",)),)),
        Team("Ops", members=("someone",), roles=(ScopedRole("Deployer"),)),
        Team("Both", members=("x", "dev"), roles=(ScopedRole("Deployer"), ScopedRole("Ghost"))),
    ]
    principal = principal_for("DEV", True, teams, roles)
    assert principal.username == "DEV"
    assert principal.active
    assert principal.grants == (
        Grant("Dev", "Project Viewer", frozenset({P.ProjectView}), projects=frozenset({"Db"})),
        Grant("Both", "Deployer", frozenset({P.DeploymentCreate})),
    )


def test_principal_for_a_user_in_no_team_has_no_grants() -> None:
    principal = principal_for("nobody", True, TEAMS, user_roles())
    assert principal.grants == ()
    decision = authorize(principal, P.ProjectView, project=DATABASE)
    assert not decision.allowed
    assert decision.reason == (
        "nobody may not ProjectView for project Database: nobody holds no role through any team."
    )


# --- evaluation rules ------------------------------------------------------------------------


def test_union_over_grants() -> None:
    pat = person(grant("Project Viewer"), grant("Release Creator", team="U"))
    assert allowed(pat, P.ProjectView, project=DATABASE)
    assert allowed(pat, P.ReleaseCreate, project=DATABASE)
    assert not allowed(pat, P.DeploymentCreate, project=DATABASE, environment="Test")


def test_unscoped_grant_covers_everything() -> None:
    pat = person(grant("Project Deployer"))
    for project in PROJECTS:
        for environment in ENVIRONMENTS:
            assert allowed(pat, P.DeploymentCreate, project=project, environment=environment)


def test_project_dimension_by_name_and_case_insensitively() -> None:
    pat = person(grant("Project Contributor", projects=frozenset({"database"})))
    assert allowed(pat, P.ProcessEdit, project=DATABASE)
    assert allowed(pat, "processedit", project=ProjectRef("DATABASE", SHOP))
    assert not allowed(pat, P.ProcessEdit, project=WEBSITE)


def test_project_group_dimension() -> None:
    pat = person(
        Grant("T", "Initiator", frozenset({P.ProjectCreate}), project_groups=frozenset({SHOP}))
    )
    assert allowed(pat, P.ProjectCreate, project_group="octo pet shop")
    assert not allowed(pat, P.ProjectCreate, project_group=ORCHESTRATION)
    # A project-group permission asked about a project is asked about its group.
    assert allowed(pat, P.ProjectCreate, project=DATABASE)
    assert not allowed(pat, P.ProjectCreate, project=DEPLOY_ALL)
    unscoped = person(Grant("T", "Initiator", frozenset({P.ProjectCreate})))
    assert allowed(unscoped, P.ProjectCreate, project_group=ORCHESTRATION)


def test_environment_dimension() -> None:
    pat = person(grant("Environment Manager", environments=frozenset({"Development"})))
    assert allowed(pat, P.EnvironmentEdit, environment="development")
    assert not allowed(pat, P.EnvironmentEdit, environment="Production")
    assert allowed(pat, P.MachineCreate, environment="Development")


def test_restriction_on_a_dimension_the_permission_does_not_take_is_ignored() -> None:
    pat = person(
        grant("Project Contributor", environments=frozenset({"Development"})),
        grant("Environment Manager", team="U", projects=frozenset({"Website"})),
    )
    # ProcessEdit takes no environment; EnvironmentEdit takes no project.
    assert allowed(pat, P.ProcessEdit, project=DATABASE, environment="Production")
    assert allowed(pat, P.EnvironmentEdit, project=DATABASE, environment="Development")


def test_context_left_as_none_means_anywhere() -> None:
    pat = person(
        grant("Project Deployer", projects=frozenset({"Website"}), environments=frozenset({"Test"}))
    )
    assert allowed(pat, P.DeploymentCreate)
    assert allowed(pat, P.DeploymentCreate, project=WEBSITE)
    assert allowed(pat, P.DeploymentCreate, environment="Test")
    assert not allowed(pat, P.DeploymentCreate, environment="Production")
    assert not allowed(pat, P.DeploymentCreate, project=DATABASE)
    decision = authorize(pat, P.DeploymentCreate, project=WEBSITE)
    assert decision.reason == (
        "pat may DeploymentCreate for project Website in some environment: "
        "granted by team T through role Project Deployer."
    )
    assert authorize(pat, P.DeploymentCreate).reason.startswith(
        "pat may DeploymentCreate somewhere:"
    )
    nobody = person(grant("Project Viewer"))
    assert authorize(nobody, P.DeploymentCreate).reason.startswith(
        "pat may not DeploymentCreate anywhere:"
    )


def test_inactive_principal_is_denied_everything() -> None:
    pat = person(grant("System Administrator"), active=False)
    for permission in Permission:
        decision = authorize(pat, permission, project=DATABASE, environment="Test")
        assert not decision.allowed
        assert decision.granted_by == ()
        assert "inactive" in decision.reason
    assert authorize(pat, P.AdministerSystem).reason == (
        "pat may not AdministerSystem: pat's account is inactive."
    )


def test_unknown_permission_is_denied_with_a_reason_not_an_exception() -> None:
    pat = person(grant("System Administrator"))
    decision = authorize(pat, "ProcessEdt", project=DATABASE)
    assert decision == Decision(
        False, "ProcessEdt", "'ProcessEdt' is not a permission; did you mean ProcessEdit?"
    )
    assert authorize(pat, "Fly").reason == "'Fly' is not a permission."


def test_permission_given_as_a_string_is_parsed() -> None:
    pat = person(grant("Project Viewer"))
    decision = authorize(pat, "projectview", project=DATABASE)
    assert decision.allowed
    assert decision.permission is P.ProjectView


def test_allowed_decision_names_every_granting_team_and_role_once() -> None:
    pat = person(
        grant("Project Deployer", team="Dev"),
        grant("Project Deployer", team="Dev", environments=frozenset({"Test"})),
        grant("Build Server", team="Build"),
        grant("Project Viewer", team="Viewers"),
    )
    decision = authorize(pat, P.DeploymentCreate, project=DATABASE, environment="Test")
    assert decision.allowed
    assert decision.granted_by == (
        GrantedBy("Dev", "Project Deployer"),
        GrantedBy("Build", "Build Server"),
    )
    assert decision.reason == (
        "pat may DeploymentCreate for project Database in environment Test: granted by "
        "team Dev through role Project Deployer, team Build through role Build Server."
    )


def test_system_permissions_take_no_scope() -> None:
    pat = person(grant("System Administrator", projects=frozenset({"Website"})))
    assert allowed(pat, P.AdministerSystem)
    assert allowed(pat, P.TeamEdit, project=DATABASE)
    assert not allowed(pat, P.ProcessEdit, project=DATABASE)


def test_explain_is_authorize() -> None:
    dev = shop_user("dev")
    for permission in (P.DeploymentCreate, P.ProcessEdit, P.EventView, P.AdministerSystem):
        for project in PROJECTS:
            for environment in ENVIRONMENTS:
                assert explain(dev, permission, project=project, environment=environment) == (
                    authorize(dev, permission, project=project, environment=environment)
                )
    assert explain(dev, "nonsense") == authorize(dev, "nonsense")


# --- scoping surprises of other tools (competitors.md §2 C.9) ---------------------------------


def test_regression_octopus_3728_empty_project_group_does_not_mean_all() -> None:
    pat = person(grant("Project Viewer", project_groups=frozenset({"Empty Group"})))
    for project in PROJECTS:
        assert not allowed(pat, P.ProjectView, project=project)
    assert allowed(pat, P.ProjectGroupView, project_group="Empty Group")
    assert not allowed(pat, P.ProjectGroupView, project_group=SHOP)
    assert authorize(pat, P.ProjectView, project=DATABASE).reason == (
        "pat may not ProjectView for project Database: team T grants it through role "
        "Project Viewer only for project group Empty Group."
    )


def test_regression_octopus_947_environment_scope_does_not_leak_across_teams() -> None:
    pat = person(
        grant("Project Deployer", team="Deployers", environments=frozenset({"Development"})),
        grant("Project Viewer", team="Watchers", environments=frozenset({"Production"})),
        grant("Approver", team="Approvers", environments=frozenset({"Production"})),
        grant("Project Deployer", team="Web", projects=frozenset({"Website"})),
    )
    assert allowed(pat, P.DeploymentCreate, project=DATABASE, environment="Development")
    assert not allowed(pat, P.DeploymentCreate, project=DATABASE, environment="Production")
    assert allowed(pat, P.DeploymentCreate, project=WEBSITE, environment="Production")
    # Neither Watchers' Production nor Web's project widens Deployers' InterruptionSubmit.
    assert not allowed(pat, P.InterruptionSubmit, project=DATABASE, environment="Production")
    assert allowed(
        pat, P.InterruptionViewSubmitResponsible, project=DATABASE, environment="Production"
    )
    assert not allowed(
        pat, P.InterruptionViewSubmitResponsible, project=DATABASE, environment="Test"
    )


def test_regression_octopus_5379_project_and_group_scopes_unite() -> None:
    pat = person(
        grant(
            "Project Viewer", projects=frozenset({"Deploy All"}), project_groups=frozenset({SHOP})
        )
    )
    assert allowed(pat, P.ProjectView, project=DEPLOY_ALL)
    for name in COMPONENTS:
        assert allowed(pat, P.ProjectView, project=ProjectRef(name, SHOP))
    assert not allowed(pat, P.ProjectView, project=ProjectRef("Billing", "Finance"))
    assert authorize(pat, P.ProjectView, project=ProjectRef("Billing", "Finance")).reason == (
        "pat may not ProjectView for project Billing: team T grants it through role "
        "Project Viewer only for project Deploy All or project group Octo Pet Shop."
    )


def test_regression_octopus_9038_single_project_scope_can_view_that_project() -> None:
    pat = person(grant("Project Viewer", projects=frozenset({"Database"})))
    assert allowed(pat, P.ProjectView, project=DATABASE)
    assert allowed(pat, P.ProjectView)  # the Projects menu shows
    assert allowed(pat, P.ProjectGroupView, project_group=SHOP)  # and the group it lives in
    assert allowed(pat, P.DeploymentView, project=DATABASE, environment="Production")
    assert not allowed(pat, P.ProjectView, project=WEBSITE)


def test_regression_octopus_7629_matrix_agrees_with_authorize_for_every_cell() -> None:
    for username in ("dev", "qa", "ops", "auditor"):
        principal = shop_user(username)
        cells = matrix(principal, PROJECTS, ENVIRONMENTS)
        assert {cell.permission for cell in cells} == set(Permission)
        for cell in cells:
            project = next((p for p in PROJECTS if p.name == cell.project), None)
            decision = authorize(
                principal, cell.permission, project=project, environment=cell.environment
            )
            assert (cell.allowed, cell.granted_by) == (decision.allowed, decision.granted_by)


def test_matrix_cells_follow_the_permission_dimensions() -> None:
    cells = matrix(person(), PROJECTS, ENVIRONMENTS)
    per = {p: [c for c in cells if c.permission is p] for p in Permission}
    assert len(per[P.DeploymentCreate]) == len(PROJECTS) * len(ENVIRONMENTS)
    assert {c.environment for c in per[P.ProcessEdit]} == {None}
    assert len(per[P.ProcessEdit]) == len(PROJECTS)
    assert {c.project for c in per[P.EnvironmentEdit]} == {None}
    assert len(per[P.EnvironmentEdit]) == len(ENVIRONMENTS)
    assert [(c.project, c.environment) for c in per[P.LifecycleEdit]] == [(None, None)]
    assert [(c.project, c.environment) for c in per[P.ProjectCreate]] == [(None, None)]
    assert not any(c.allowed for c in cells)
    only = matrix(person(grant("Project Viewer")), PROJECTS, ENVIRONMENTS, [P.ProjectView])
    assert [c.project for c in only] == [p.name for p in PROJECTS]
    assert all(c.allowed for c in only)


# --- the Octo Pet Shop -----------------------------------------------------------------------


def test_pet_shop_developer_edits_components_but_not_deploy_all() -> None:
    dev = shop_user("dev")
    for name in COMPONENTS:
        assert allowed(dev, P.ProcessEdit, project=ProjectRef(name, SHOP))
    decision = authorize(dev, P.ProcessEdit, project=DEPLOY_ALL)
    assert not decision.allowed
    assert "team Developer grants it through role Project Contributor only for projects" in (
        decision.reason
    )


def test_pet_shop_developer_deploys_components_to_development_and_test_only() -> None:
    dev = shop_user("dev")
    for name in COMPONENTS:
        project = ProjectRef(name, SHOP)
        assert allowed(dev, P.DeploymentCreate, project=project, environment="Development")
        assert allowed(dev, P.DeploymentCreate, project=project, environment="Test")
        assert not allowed(dev, P.DeploymentCreate, project=project, environment="Staging")
        assert not allowed(dev, P.DeploymentCreate, project=project, environment="Production")
    decision = authorize(dev, P.DeploymentCreate, project=DATABASE, environment="Staging")
    assert decision.reason == (
        "dev may not DeploymentCreate for project Database in environment Staging: team "
        "Developer grants it through role Project Deployer only in environments Development, Test."
    )


def test_pet_shop_developer_creates_deploy_all_and_deploys_it_to_test_only() -> None:
    dev = shop_user("dev")
    assert allowed(dev, P.ReleaseCreate, project=DEPLOY_ALL)
    assert not allowed(dev, P.ReleaseCreate, project=DATABASE)  # the build server does that
    assert allowed(dev, P.DeploymentCreate, project=DEPLOY_ALL, environment="Test")
    assert not allowed(dev, P.DeploymentCreate, project=DEPLOY_ALL, environment="Development")
    assert not allowed(dev, P.DeploymentCreate, project=DEPLOY_ALL, environment="Staging")
    decision = authorize(dev, P.DeploymentCreate, project=DEPLOY_ALL, environment="Staging")
    assert decision.reason.endswith(
        "team Developer grants it through role Project Deployer only in environment Test."
    )


def test_pet_shop_operations_deploy_anything_anywhere_but_edit_only_deploy_all() -> None:
    ops = shop_user("ops")
    for project in PROJECTS:
        assert allowed(ops, P.ReleaseCreate, project=project)
        for environment in ENVIRONMENTS:
            assert allowed(ops, P.DeploymentCreate, project=project, environment=environment)
    assert allowed(ops, P.ProcessEdit, project=DEPLOY_ALL)
    for name in COMPONENTS:
        assert not allowed(ops, P.ProcessEdit, project=ProjectRef(name, SHOP))
        assert not allowed(ops, P.ProjectEdit, project=ProjectRef(name, SHOP))
        assert not allowed(
            ops,
            P.InterruptionViewSubmitResponsible,
            project=ProjectRef(name, SHOP),
            environment="Production",
        )


def test_pet_shop_qa_answers_approvals_in_staging_and_production_only() -> None:
    qa = shop_user("qa")
    for environment in ("Staging", "Production"):
        decision = authorize(
            qa, P.InterruptionViewSubmitResponsible, project=DEPLOY_ALL, environment=environment
        )
        assert decision.allowed
        assert decision.granted_by == (GrantedBy("QA", "Approver"),)
    assert not allowed(
        qa, P.InterruptionViewSubmitResponsible, project=DEPLOY_ALL, environment="Test"
    )
    assert not allowed(qa, P.InterruptionSubmit, project=DEPLOY_ALL, environment="Staging")
    assert not allowed(qa, P.DeploymentCreate)
    assert not allowed(qa, P.ProcessEdit)
    assert allowed(qa, P.DeploymentView, project=DATABASE, environment="Development")


def test_pet_shop_auditor_reads_everything_and_changes_nothing() -> None:
    auditor = shop_user("auditor")
    for project in PROJECTS:
        for environment in ENVIRONMENTS:
            assert allowed(auditor, P.EventView, project=project, environment=environment)
    changes = [p for p in Permission if not p.value.endswith("View")]
    for permission in changes:
        assert not allowed(auditor, permission), permission
    decision = authorize(auditor, P.ProcessEdit, project=DEPLOY_ALL)
    assert decision.reason == (
        "auditor may not ProcessEdit for project Deploy All: none of auditor's teams (Auditor) "
        "has a role with ProcessEdit."
    )


@pytest.mark.parametrize("username", ["dev", "qa", "ops", "auditor"])
def test_pet_shop_nobody_administers_the_server(username: str) -> None:
    principal = shop_user(username)
    assert not allowed(principal, P.AdministerSystem)
    assert not allowed(principal, P.UserRoleEdit)
    assert not allowed(principal, P.TeamEdit)
