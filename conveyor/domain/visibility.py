"""Who sees which deployments: one rule for the deployment list, the dashboard and progress.

A deployment is visible to a person who holds ``DeploymentView`` for its project and its
environment, as Octopus scopes it ("View deployments", project and environment). ``ProjectView``
and ``EnvironmentView`` only say which projects and environments a person knows exist (the
dashboard's rows and columns); they never reveal what was deployed where.

``deployment_scope`` answers the rule for every pair at once, grouped by environment, so that a
store query can apply it in SQL (a page of deployments is then always full) instead of
filtering a page after ``LIMIT``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.domain import permissions as perms

SEE_DEPLOYMENTS = perms.Permission.DeploymentView


def sees_deployment(
    principal: perms.Principal, project: perms.ProjectRef, environment: str
) -> bool:
    """The rule: may this person see deployments of ``project`` to ``environment``?"""
    return perms.allows(principal, SEE_DEPLOYMENTS, project=project, environment=environment)


@dataclass(frozen=True)
class DeploymentScope:
    """The (project, environment) pairs whose deployments a person sees.

    ``projects_by_environment`` maps each environment name to the project names visible in it
    (environments with none are left out). ``everything`` is true when the person holds the rule
    unscoped (every project, every environment, also deleted ones), so a query needs no filter.
    """

    projects_by_environment: Mapping[str, frozenset[str]]
    everything: bool

    @property
    def nothing(self) -> bool:
        return not self.projects_by_environment

    def sees(self, project: str, environment: str) -> bool:
        return project in self.projects_by_environment.get(environment, frozenset())


def deployment_scope(
    principal: perms.Principal,
    projects: Sequence[perms.ProjectRef],
    environments: Sequence[str],
) -> DeploymentScope:
    """``sees_deployment`` for every project in every environment."""
    by_environment: dict[str, frozenset[str]] = {}
    for environment in environments:
        visible = frozenset(p.name for p in projects if sees_deployment(principal, p, environment))
        if visible:
            by_environment[environment] = visible
    return DeploymentScope(by_environment, everything=_unscoped(principal))


def _unscoped(principal: perms.Principal) -> bool:
    """Holds the rule through a grant scoped to no project and no environment: then deployments
    of projects since deleted are visible too. No scope list can name the empty string."""
    return sees_deployment(principal, perms.ProjectRef("", ""), "")
