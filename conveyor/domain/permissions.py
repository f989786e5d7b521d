"""Permissions: the catalogue, the built-in roles, and the one evaluation behind every check.

A team holds roles, each scoped to projects, project groups and environments (empty = all). What
a person may do is the union over every role of every team they are in. ``authorize`` is the only
evaluation: services enforce with it and "why can't I" explains with it, so the explanation can
never drift from enforcement (Octopus's Test Permissions page disagrees with its own export, #7629).

Rules, applied to each grant on its own (one scoped role held through one team):

- the grant holds the permission, and matches on every dimension the permission takes;
- project: both project lists empty = all projects; otherwise the project is named, or its group
  is; the two lists unite;
- project group and environment: empty = all; otherwise the value must be listed;
- a restriction on a dimension the permission does not take is ignored;
- a context left as ``None`` means "anywhere": does the person hold it in some scope?

Where we differ from Octopus, and why
-------------------------------------

- Deploying and editing are separate duties. Octopus's Project Deployer and Project Lead inherit
  ProcessEdit and ProjectEdit from Project Contributor, so a "deployer" can delete the manual
  intervention step that was meant to stop them. Ours: Project Deployer = Project Viewer + deploy;
  Project Lead = Project Contributor + releases, no deploy. Whoever needs both holds both roles.
  Only System Administrator deploys and edits processes, and its description says so.
- Grants are evaluated one at a time: one team's environments never widen another team's
  permission (environment scoping leaked across a user's two teams, #947).
- A grant scoped to a project group covers that group's projects and nothing else, even when the
  group is empty (an empty group meant "all projects", #3728); a grant scoped to projects and
  groups covers both (#5379).
- Roles Octopus lacks: Approver (view + answer the interruptions of teams one is in; Octopus
  needed a custom role, #573) and Auditor (every View permission, the audit log included, and
  nothing else).
- Variables are scoped by project only: an unscoped variable applies in every environment, so
  an environment-scoped edit right would be a hole (Octopus patches it with VariableEditUnscoped).
- Feed and build-information permissions take no scope: a package belongs to no single project.
  Build Server may push but not replace or delete packages (no BuiltInFeedAdminister).
- No spaces, tenants or channels; an inactive account is denied everything.
- InterruptionViewSubmitResponsible is checked here for scope only; the interruption service
  also requires membership of one of the interruption's responsible teams.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from conveyor.domain.documents import Team, UserRole, key


class Permission(StrEnum):
    AdministerSystem = "AdministerSystem"
    ConfigureServer = "ConfigureServer"
    ProjectView = "ProjectView"
    ProjectCreate = "ProjectCreate"
    ProjectEdit = "ProjectEdit"
    ProjectDelete = "ProjectDelete"
    ProcessView = "ProcessView"
    ProcessEdit = "ProcessEdit"
    VariableView = "VariableView"
    VariableEdit = "VariableEdit"
    ReleaseView = "ReleaseView"
    ReleaseCreate = "ReleaseCreate"
    ReleaseEdit = "ReleaseEdit"
    ReleaseDelete = "ReleaseDelete"
    DeploymentView = "DeploymentView"
    DeploymentCreate = "DeploymentCreate"
    DeploymentFreezeAdminister = "DeploymentFreezeAdminister"
    EnvironmentView = "EnvironmentView"
    EnvironmentCreate = "EnvironmentCreate"
    EnvironmentEdit = "EnvironmentEdit"
    EnvironmentDelete = "EnvironmentDelete"
    MachineView = "MachineView"
    MachineCreate = "MachineCreate"
    MachineEdit = "MachineEdit"
    MachineDelete = "MachineDelete"
    LifecycleView = "LifecycleView"
    LifecycleCreate = "LifecycleCreate"
    LifecycleEdit = "LifecycleEdit"
    LifecycleDelete = "LifecycleDelete"
    ProjectGroupView = "ProjectGroupView"
    ProjectGroupCreate = "ProjectGroupCreate"
    ProjectGroupEdit = "ProjectGroupEdit"
    ProjectGroupDelete = "ProjectGroupDelete"
    TeamView = "TeamView"
    TeamCreate = "TeamCreate"
    TeamEdit = "TeamEdit"
    TeamDelete = "TeamDelete"
    UserView = "UserView"
    UserEdit = "UserEdit"
    UserRoleView = "UserRoleView"
    UserRoleEdit = "UserRoleEdit"
    TaskView = "TaskView"
    TaskCreate = "TaskCreate"
    TaskCancel = "TaskCancel"
    InterruptionView = "InterruptionView"
    InterruptionSubmit = "InterruptionSubmit"
    InterruptionViewSubmitResponsible = "InterruptionViewSubmitResponsible"
    EventView = "EventView"
    FeedView = "FeedView"
    BuiltInFeedPush = "BuiltInFeedPush"
    BuiltInFeedAdminister = "BuiltInFeedAdminister"
    BuiltInFeedDownload = "BuiltInFeedDownload"
    BuildInformationPush = "BuildInformationPush"
    SubscriptionView = "SubscriptionView"
    SubscriptionCreate = "SubscriptionCreate"
    SubscriptionEdit = "SubscriptionEdit"
    SubscriptionDelete = "SubscriptionDelete"


class Dimension(StrEnum):
    PROJECT = "project"
    PROJECT_GROUP = "project_group"
    ENVIRONMENT = "environment"


@dataclass(frozen=True)
class PermissionInfo:
    permission: Permission
    description: str
    dimensions: frozenset[Dimension]
    # Server-wide administration rather than work on projects and environments.
    system: bool


_P = Permission
_NONE: frozenset[Dimension] = frozenset()
_PRJ = frozenset({Dimension.PROJECT})
_GRP = frozenset({Dimension.PROJECT_GROUP})
_ENV = frozenset({Dimension.ENVIRONMENT})
_PRJ_ENV = frozenset({Dimension.PROJECT, Dimension.ENVIRONMENT})

_SYSTEM = frozenset(
    {_P.AdministerSystem, _P.ConfigureServer, _P.UserView, _P.UserEdit, _P.UserRoleView}
    | {_P.UserRoleEdit, _P.TeamView, _P.TeamCreate, _P.TeamEdit, _P.TeamDelete}
)

_Entry = tuple[Permission, str, frozenset[Dimension]]
_VERBS = ("View", "Create", "Edit", "Delete")


def _family(noun: str, plural: str, dims: frozenset[Dimension]) -> list[_Entry]:
    return [(Permission(noun + verb), f"{verb} {plural}", dims) for verb in _VERBS]


# Descriptions are Octopus's (OctopusClients Permission.cs) wherever it has the permission.
_ENTRIES: tuple[_Entry, ...] = (
    (
        _P.AdministerSystem,
        "Perform system-level functions like configuring HTTP web hosting, the public URL, "
        "server nodes, maintenance mode, and server diagnostics",
        _NONE,
    ),
    (
        _P.ConfigureServer,
        "Configure server settings like Authentication, SMTP, and HTTP Security Headers",
        _NONE,
    ),
    (_P.ProjectView, "View the details of projects", _PRJ),
    (_P.ProjectCreate, "Create projects", _GRP),
    (_P.ProjectEdit, "Edit project details", _PRJ),
    (_P.ProjectDelete, "Delete projects", _PRJ),
    (_P.ProcessView, "View the deployment process associated with a project", _PRJ),
    (_P.ProcessEdit, "Edit the deployment process associated with a project", _PRJ),
    (_P.VariableView, "View variables belonging to a project", _PRJ),
    (_P.VariableEdit, "Edit variables belonging to a project", _PRJ),
    (_P.ReleaseView, "View a release of a project", _PRJ),
    (_P.ReleaseCreate, "Create a release for a project", _PRJ),
    (
        _P.ReleaseEdit,
        "Edit a release of a project: block or unblock it, refresh its variables",
        _PRJ,
    ),
    (_P.ReleaseDelete, "Delete a release of a project", _PRJ),
    (_P.DeploymentView, "View deployments", _PRJ_ENV),
    (_P.DeploymentCreate, "Deploy releases to target environments", _PRJ_ENV),
    (
        _P.DeploymentFreezeAdminister,
        "Override a deployment freeze: deploy while one is in force, giving a reason",
        _PRJ_ENV,
    ),
    *_family("Environment", "environments", _ENV),
    *_family("Machine", "machines", _ENV),
    *_family("Lifecycle", "lifecycles", _NONE),
    *_family("ProjectGroup", "project groups", _GRP),
    *_family("Team", "teams", _NONE),
    (_P.UserView, "View users", _NONE),
    (_P.UserEdit, "Edit users", _NONE),
    (_P.UserRoleView, "View other user's roles", _NONE),
    (_P.UserRoleEdit, "Edit user role definitions", _NONE),
    (_P.TaskView, "View summary-level information associated with a task, and its log", _PRJ_ENV),
    (_P.TaskCreate, "Explicitly create (run) server tasks", _PRJ_ENV),
    (_P.TaskCancel, "Cancel server tasks", _PRJ_ENV),
    (_P.InterruptionView, "View interruptions generated during deployments", _PRJ_ENV),
    (
        _P.InterruptionSubmit,
        "Take responsibility for and submit interruptions generated during deployments",
        _PRJ_ENV,
    ),
    (
        _P.InterruptionViewSubmitResponsible,
        "Take responsibility for and submit interruptions generated during deployments when "
        "the user is in a designated responsible team",
        _PRJ_ENV,
    ),
    (_P.EventView, "View Events, including access to the Audit screen", _PRJ_ENV),
    (_P.FeedView, "View package feeds and the packages in them", _NONE),
    (_P.BuiltInFeedPush, "Push new packages to the built-in package repository", _NONE),
    (
        _P.BuiltInFeedAdminister,
        "Replace or delete packages in the built-in package repository",
        _NONE,
    ),
    (
        _P.BuiltInFeedDownload,
        "Retrieve the contents of packages in the built-in package repository",
        _NONE,
    ),
    (_P.BuildInformationPush, "Create/update build information", _NONE),
    *_family("Subscription", "subscriptions", _NONE),
)

CATALOGUE: dict[Permission, PermissionInfo] = {
    perm: PermissionInfo(perm, text, dims, perm in _SYSTEM) for perm, text, dims in _ENTRIES
}

_BY_KEY: dict[str, Permission] = {p.value.lower(): p for p in Permission}


def parse_permission(name: str) -> Permission | None:
    """``"processedit"`` -> ``Permission.ProcessEdit``; ``None`` if it names no permission."""
    return _BY_KEY.get(name.strip().lower())


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    description: str
    permissions: frozenset[Permission]


_VIEW_SET = frozenset(
    {_P.ProjectView, _P.ProjectGroupView, _P.ProcessView, _P.ReleaseView, _P.DeploymentView}
    | {_P.EnvironmentView, _P.LifecycleView, _P.EventView, _P.TaskView, _P.InterruptionView}
    | {_P.TeamView, _P.UserView, _P.UserRoleView}
)
# VariableView comes with VariableEdit: nobody should edit what they cannot see.
_CONTRIBUTOR = _VIEW_SET | {
    _P.ProcessEdit,
    _P.ProjectEdit,
    _P.VariableView,
    _P.VariableEdit,
    _P.InterruptionViewSubmitResponsible,
}
_ENV_VIEWER = frozenset({_P.EnvironmentView, _P.MachineView, _P.TaskView, _P.TeamView})

BUILT_IN_ROLES: tuple[RoleDefinition, ...] = (
    RoleDefinition(
        "System Administrator",
        "Every permission, deploying and editing processes together: the one role that breaks "
        "separation of duties by design. Give it to few.",
        frozenset(Permission),
    ),
    RoleDefinition(
        "Project Viewer",
        "Read-only access to projects, releases, deployments, tasks, interruptions and their "
        "events; restrict by project and environment.",
        _VIEW_SET,
    ),
    RoleDefinition(
        "Project Contributor",
        "Project Viewer plus editing projects, deployment processes and variables, and answering "
        "interruptions of teams one is in. Cannot create or deploy releases.",
        _CONTRIBUTOR,
    ),
    RoleDefinition(
        "Project Deployer",
        "Project Viewer plus deploying releases, running and canceling tasks and answering "
        "interruptions. Cannot edit processes (unlike Octopus's Project Deployer).",
        _VIEW_SET | {_P.DeploymentCreate, _P.InterruptionSubmit, _P.TaskCreate, _P.TaskCancel},
    ),
    RoleDefinition(
        "Project Lead",
        "Project Contributor plus creating and deleting releases. Cannot deploy: add Project "
        "Deployer where a person should do both.",
        _CONTRIBUTOR | {_P.ReleaseCreate, _P.ReleaseEdit, _P.ReleaseDelete},
    ),
    RoleDefinition(
        "Release Creator",
        "Create releases, with the views that needs.",
        frozenset(
            {_P.ReleaseCreate, _P.ReleaseView, _P.ProjectView, _P.ProcessView, _P.EnvironmentView}
            | {_P.FeedView}
        ),
    ),
    RoleDefinition("Environment Viewer", "View environments and machines.", _ENV_VIEWER),
    RoleDefinition(
        "Environment Manager",
        "View, create, edit and delete environments and machines, and run their tasks.",
        _ENV_VIEWER
        | {_P.EnvironmentCreate, _P.EnvironmentEdit, _P.EnvironmentDelete}
        | {_P.MachineCreate, _P.MachineEdit, _P.MachineDelete, _P.TaskCreate, _P.TaskCancel},
    ),
    RoleDefinition(
        "Auditor",
        "Every View permission, the audit log included, and nothing else.",
        frozenset(p for p in Permission if p.value.endswith("View")),
    ),
    RoleDefinition(
        "Approver",
        "Project Viewer plus answering the interruptions (approvals, guided failures) of teams "
        "one is in. Cannot deploy or edit.",
        _VIEW_SET | {_P.InterruptionViewSubmitResponsible},
    ),
    RoleDefinition(
        "Build Server",
        "For a build server's service account: push packages and build information, create "
        "releases and deploy them, and view what that needs. Cannot edit processes, nor "
        "replace or delete packages.",
        frozenset(
            {_P.BuiltInFeedPush, _P.BuiltInFeedDownload, _P.BuildInformationPush, _P.FeedView}
            | {_P.ReleaseCreate, _P.ReleaseView, _P.DeploymentCreate, _P.DeploymentView}
            | {_P.ProjectView, _P.ProcessView, _P.EnvironmentView, _P.LifecycleView, _P.TaskView}
        ),
    ),
)


@dataclass(frozen=True)
class Grant:
    """One scoped role held through one team; names compare case-insensitively (``key``)."""

    team: str
    role: str
    permissions: frozenset[Permission]
    projects: frozenset[str] = frozenset()
    project_groups: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    username: str
    active: bool
    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class ProjectRef:
    name: str
    group: str


@dataclass(frozen=True)
class GrantedBy:
    team: str
    role: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # A plain string only when the caller asked about a name that is no permission.
    permission: Permission | str
    reason: str
    granted_by: tuple[GrantedBy, ...] = ()


def principal_for(
    username: str, active: bool, teams: Iterable[Team], roles: Mapping[str, UserRole]
) -> Principal:
    """The grants of every team the user is a member of; unknown roles and permissions are skipped
    (a role may name a permission a later version renamed; it must not lock anyone out)."""
    by_key = {key(name): role for name, role in roles.items()}
    by_key.update({key(role.name): role for role in roles.values()})
    me = key(username)
    grants: list[Grant] = []
    for team in teams:
        if me not in {key(member) for member in team.members}:
            continue
        for scoped in team.roles:
            role = by_key.get(key(scoped.role))
            if role is None:
                continue
            parsed = (parse_permission(name) for name in role.permissions)
            grants.append(
                Grant(
                    team=team.name,
                    role=role.name,
                    permissions=frozenset(p for p in parsed if p is not None),
                    projects=frozenset(scoped.projects),
                    project_groups=frozenset(scoped.project_groups),
                    environments=frozenset(scoped.environments),
                )
            )
    return Principal(username=username, active=active, grants=tuple(grants))


@lru_cache(maxsize=4096)
def _keys(names: frozenset[str]) -> frozenset[str]:
    return frozenset(key(name) for name in names)


def _outside(names: frozenset[str], value: str | None) -> bool:
    """A restricted list that does not name an asked-about value (empty = all; None = any)."""
    return value is not None and bool(names) and key(value) not in _keys(names)


def _missed(
    grant: Grant,
    dims: frozenset[Dimension],
    project: ProjectRef | None,
    group: str | None,
    environment: str | None,
) -> list[Dimension]:
    """The permission's dimensions this grant fails to cover (none: the grant applies)."""
    missed: list[Dimension] = []
    # Both empty = all projects; otherwise the two lists unite. A listed group covers only its
    # own projects, so a group without projects covers nothing (#3728).
    if (
        Dimension.PROJECT in dims
        and project is not None
        and (grant.projects or grant.project_groups)
        and key(project.name) not in _keys(grant.projects)
        and key(project.group) not in _keys(grant.project_groups)
    ):
        missed.append(Dimension.PROJECT)
    if Dimension.PROJECT_GROUP in dims and _outside(grant.project_groups, group):
        missed.append(Dimension.PROJECT_GROUP)
    if Dimension.ENVIRONMENT in dims and _outside(grant.environments, environment):
        missed.append(Dimension.ENVIRONMENT)
    return missed


def _named(kind: str, names: Iterable[str]) -> str:
    ordered = sorted(names, key=key)
    return f"{kind}{'s' if len(ordered) > 1 else ''} {', '.join(ordered)}"


def _scope(grant: Grant, missed: Iterable[Dimension]) -> str:
    """Where a grant applies, on the dimensions where it missed the question."""
    parts: list[str] = []
    for dim in missed:
        if dim is Dimension.PROJECT:
            named = [("project", grant.projects), ("project group", grant.project_groups)]
            parts.append("for " + " or ".join(_named(k, names) for k, names in named if names))
        elif dim is Dimension.PROJECT_GROUP:
            parts.append("in " + _named("project group", grant.project_groups))
        else:
            parts.append("in " + _named("environment", grant.environments))
    return " ".join(parts)


def _where(
    dims: frozenset[Dimension],
    project: ProjectRef | None,
    group: str | None,
    environment: str | None,
    allowed: bool,
) -> str:
    if not dims:
        return ""
    values = {
        Dimension.PROJECT: project.name if project is not None else None,
        Dimension.PROJECT_GROUP: group,
        Dimension.ENVIRONMENT: environment,
    }
    if all(values[d] is None for d in dims):
        return " somewhere" if allowed else " anywhere"
    some = "some" if allowed else "any"
    parts: list[str] = []
    for dim, preposition, noun in (
        (Dimension.PROJECT, "for", "project"),
        (Dimension.PROJECT_GROUP, "in", "project group"),
        (Dimension.ENVIRONMENT, "in", "environment"),
    ):
        if dim in dims:
            value = values[dim]
            parts.append(
                f"{preposition} {noun} {value}"
                if value is not None
                else f"{preposition} {some} {noun}"
            )
    return " " + " ".join(parts)


def _granted_by(grants: Iterable[Grant]) -> tuple[GrantedBy, ...]:
    return tuple(dict.fromkeys(GrantedBy(g.team, g.role) for g in grants))


def authorize(
    principal: Principal,
    permission: Permission | str,
    *,
    project: ProjectRef | None = None,
    project_group: str | None = None,
    environment: str | None = None,
) -> Decision:
    """May ``principal`` use ``permission`` here? The one evaluation, with a readable reason.

    Enforcement passes every dimension the permission takes; a dimension left as ``None`` asks
    whether the person holds the permission anywhere on it (to decide what to show).
    """
    user = principal.username
    perm = permission if isinstance(permission, Permission) else parse_permission(permission)
    if perm is None:
        close = difflib.get_close_matches(permission.strip().lower(), list(_BY_KEY), n=1)
        hint = f"; did you mean {_BY_KEY[close[0]]}?" if close else "."
        return Decision(False, permission, f"{permission!r} is not a permission{hint}")
    dims = CATALOGUE[perm].dimensions
    # A project-group permission asked about a project is asked about the project's group.
    group = project_group if project_group is not None or project is None else project.group
    if not principal.active:
        where = _where(dims, project, group, environment, allowed=False)
        return Decision(False, perm, f"{user} may not {perm}{where}: {user}'s account is inactive.")

    # Each grant is judged whole: never one grant's scope with another grant's permission (#947).
    holders = [g for g in principal.grants if perm in g.permissions]
    missed = [_missed(g, dims, project, group, environment) for g in holders]
    matched = [g for g, m in zip(holders, missed, strict=True) if not m]
    if matched:
        by = _granted_by(matched)
        via = ", ".join(f"team {b.team} through role {b.role}" for b in by)
        where = _where(dims, project, group, environment, allowed=True)
        return Decision(True, perm, f"{user} may {perm}{where}: granted by {via}.", by)

    where = _where(dims, project, group, environment, allowed=False)
    if holders:
        # Name the nearest misses: the grants that fail on the fewest dimensions.
        fewest = min(len(m) for m in missed)
        detail = "; ".join(
            f"team {g.team} grants it through role {g.role} only {_scope(g, m)}"
            for g, m in zip(holders, missed, strict=True)
            if len(m) == fewest
        )
        return Decision(False, perm, f"{user} may not {perm}{where}: {detail}.")
    teams = list(dict.fromkeys(g.team for g in principal.grants))
    if teams:
        detail = f"none of {user}'s teams ({', '.join(teams)}) has a role with {perm}"
    else:
        detail = f"{user} holds no role through any team"
    return Decision(False, perm, f"{user} may not {perm}{where}: {detail}.")


def unscoped(principal: Principal, permission: Permission) -> bool:
    """Held through a grant scoped to no project, group or environment: everywhere, including
    projects and environments that no longer exist. No scope list can name the empty string,
    so only unscoped grants match it."""
    return authorize(principal, permission, project=ProjectRef("", ""), environment="").allowed


def allows(
    principal: Principal,
    permission: Permission,
    *,
    project: ProjectRef | None = None,
    environment: str | None = None,
) -> bool:
    """``authorize(...).allowed`` without composing a reason: the same grant test, for filtering
    thousands of (project, environment) pairs where a reason per pair would dominate the cost."""
    if not principal.active:
        return False
    dims = CATALOGUE[permission].dimensions
    group = project.group if project is not None else None
    return any(
        permission in g.permissions and not _missed(g, dims, project, group, environment)
        for g in principal.grants
    )


def explain(
    principal: Principal,
    permission: Permission | str,
    *,
    project: ProjectRef | None = None,
    project_group: str | None = None,
    environment: str | None = None,
) -> Decision:
    """Answer "why can't I?" with the very decision enforcement makes; read its ``reason``."""
    return authorize(
        principal, permission, project=project, project_group=project_group, environment=environment
    )


@dataclass(frozen=True)
class MatrixCell:
    permission: Permission
    project: str | None
    environment: str | None
    allowed: bool
    granted_by: tuple[GrantedBy, ...]


def matrix(
    principal: Principal,
    projects: Sequence[ProjectRef],
    environments: Sequence[str],
    permissions: Iterable[Permission] | None = None,
) -> list[MatrixCell]:
    """Effective permissions as cells: per (project, environment) where the permission takes both,
    per project or per environment where it takes one, one cell otherwise. Built on ``authorize``
    so that the chart agrees with enforcement (#7629)."""
    cells: list[MatrixCell] = []
    for perm in CATALOGUE if permissions is None else permissions:
        dims = CATALOGUE[perm].dimensions
        rows: Sequence[ProjectRef | None] = projects if Dimension.PROJECT in dims else (None,)
        cols: Sequence[str | None] = environments if Dimension.ENVIRONMENT in dims else (None,)
        for project in rows:
            for environment in cols:
                decision = authorize(principal, perm, project=project, environment=environment)
                name = project.name if project is not None else None
                cells.append(
                    MatrixCell(perm, name, environment, decision.allowed, decision.granted_by)
                )
    return cells
