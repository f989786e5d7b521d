"""The deployment visibility rule, without a database: ``allows`` decides exactly as
``authorize`` does, and the scope it builds is the rule applied to every pair."""

from __future__ import annotations

import itertools

from conveyor.domain import permissions as perms
from conveyor.domain.visibility import deployment_scope, sees_deployment

P = perms.Permission
PROJECTS = [
    perms.ProjectRef(name, group) for name, group in [("A", "G1"), ("B", "G1"), ("C", "G2")]
]
ENVIRONMENTS = ["Dev", "Test", "Prod"]
GRANTS = [
    perms.Grant("t1", "Project Viewer", frozenset({P.DeploymentView}), projects=frozenset({"a"})),
    perms.Grant("t2", "Scoped", frozenset({P.DeploymentView}), project_groups=frozenset({"G2"})),
    perms.Grant(
        "t3",
        "Env",
        frozenset({P.DeploymentView, P.EnvironmentView}),
        projects=frozenset({"B"}),
        environments=frozenset({"prod"}),
    ),
    perms.Grant("t4", "Other", frozenset({P.ProjectView, P.EnvironmentView})),
]


def _principals() -> list[perms.Principal]:
    found = []
    for size in range(len(GRANTS) + 1):
        for grants in itertools.combinations(GRANTS, size):
            found.append(perms.Principal("u", True, grants))
    found.append(perms.Principal("u", False, tuple(GRANTS)))
    return found


def test_allows_decides_as_authorize_does() -> None:
    for principal in _principals():
        for permission in (P.DeploymentView, P.ProjectView, P.EnvironmentView):
            for project in [None, *PROJECTS]:
                for env in [None, *ENVIRONMENTS]:
                    expected = perms.authorize(
                        principal, permission, project=project, environment=env
                    ).allowed
                    got = perms.allows(principal, permission, project=project, environment=env)
                    assert got == expected, (principal.grants, permission, project, env)


def test_the_scope_is_the_rule_for_every_pair() -> None:
    for principal in _principals():
        scope = deployment_scope(principal, PROJECTS, ENVIRONMENTS)
        for project, env in itertools.product(PROJECTS, ENVIRONMENTS):
            assert scope.sees(project.name, env) == sees_deployment(principal, project, env)
        assert scope.everything is False  # no grant here is unscoped


def test_only_an_unscoped_grant_sees_everything() -> None:
    admin = perms.Principal("root", True, (perms.Grant("a", "Admin", frozenset(P)),))
    assert deployment_scope(admin, PROJECTS, ENVIRONMENTS).everything
    listed = perms.Grant(
        "t", "All listed", frozenset({P.DeploymentView}), projects=frozenset({"A", "B", "C"})
    )
    scope = deployment_scope(perms.Principal("u", True, (listed,)), PROJECTS, ENVIRONMENTS)
    assert not scope.everything  # a deleted project's deployments stay hidden
    assert all(scope.sees(p.name, e) for p, e in itertools.product(PROJECTS, ENVIRONMENTS))


def test_viewing_a_project_does_not_reveal_its_deployments() -> None:
    viewer = perms.Principal("u", True, (GRANTS[3],))
    assert perms.allows(viewer, P.ProjectView, project=PROJECTS[0])
    assert not sees_deployment(viewer, PROJECTS[0], "Dev")
    assert deployment_scope(viewer, PROJECTS, ENVIRONMENTS).nothing
