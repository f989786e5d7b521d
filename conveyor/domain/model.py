"""The whole configuration as one value: every document of every kind.

Writes are computed on this value (change it, validate it, diff it against the stored one), so the
API, config as code and the web forms share one path and one set of rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from conveyor.domain.documents import (
    DeployReleaseAction,
    Environment,
    Lifecycle,
    ManualInterventionAction,
    NotificationAction,
    Phase,
    Project,
    ProjectGroup,
    ScopedRole,
    Step,
    Subscription,
    Target,
    Team,
    User,
    UserRole,
    Variable,
    key,
)

Kind = Literal[
    "environments",
    "lifecycles",
    "project_groups",
    "user_roles",
    "users",
    "projects",
    "targets",
    "teams",
    "subscriptions",
]

# The order in which documents are created; deletion goes the other way.
KINDS: tuple[Kind, ...] = (
    "environments",
    "lifecycles",
    "project_groups",
    "user_roles",
    "users",
    "projects",
    "targets",
    "teams",
    "subscriptions",
)

KIND_LABELS: dict[str, str] = {
    "environments": "environment",
    "lifecycles": "lifecycle",
    "project_groups": "project group",
    "user_roles": "user role",
    "users": "user",
    "projects": "project",
    "targets": "target",
    "teams": "team",
    "subscriptions": "subscription",
}

Document = (
    Environment
    | Lifecycle
    | ProjectGroup
    | UserRole
    | User
    | Project
    | Target
    | Team
    | Subscription
)


def doc_name(doc: Document) -> str:
    return doc.username if isinstance(doc, User) else doc.name


@dataclass(frozen=True)
class Model:
    environments: tuple[Environment, ...] = ()
    lifecycles: tuple[Lifecycle, ...] = ()
    project_groups: tuple[ProjectGroup, ...] = ()
    user_roles: tuple[UserRole, ...] = ()
    users: tuple[User, ...] = ()
    projects: tuple[Project, ...] = ()
    targets: tuple[Target, ...] = ()
    teams: tuple[Team, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()

    def docs(self, kind: Kind) -> tuple[Any, ...]:
        docs: tuple[Any, ...] = getattr(self, kind)
        return docs

    def get(self, kind: Kind, name: str) -> Any:
        return self._by_key(kind).get(key(name))

    def _by_key(self, kind: Kind) -> dict[str, Any]:
        """The documents of ``kind`` by name key, built on first use: a model is immutable, and
        reads resolve many names (the dashboard, one per cell) on the same cached model."""
        indexes: dict[str, dict[str, Any]] = self.__dict__.setdefault("_indexes", {})
        index = indexes.get(kind)
        if index is None:
            index = {}
            for doc in self.docs(kind):
                index.setdefault(key(doc_name(doc)), doc)  # the first one wins, as a scan would
            indexes[kind] = index
        return index

    def has(self, kind: Kind, name: str) -> bool:
        return self.get(kind, name) is not None

    def with_doc(self, kind: Kind, doc: Document, *, previous_name: str | None = None) -> Model:
        """The model with ``doc`` created or replacing the document of ``previous_name``."""
        target = key(previous_name if previous_name is not None else doc_name(doc))
        docs = list(self.docs(kind))
        for i, existing in enumerate(docs):
            if key(doc_name(existing)) == target:
                docs[i] = doc
                break
        else:
            docs.append(doc)
        model = replace(self, **{kind: tuple(docs)})
        if previous_name is not None and key(previous_name) != key(doc_name(doc)):
            model = rename(model, kind, previous_name, doc_name(doc))
        return model

    def without(self, kind: Kind, name: str) -> Model:
        k = key(name)
        return replace(self, **{kind: tuple(d for d in self.docs(kind) if key(doc_name(d)) != k)})

    def all_docs(self) -> Iterator[tuple[Kind, Document]]:
        for kind in KINDS:
            for doc in self.docs(kind):
                yield kind, doc

    def environment_names(self) -> list[str]:
        return [e.name for e in self.environments]

    def lifecycle_environments(self, lifecycle: str) -> list[str]:
        lc = self.get("lifecycles", lifecycle)
        if lc is None:
            return []
        return [env for phase in lc.phases for env in phase.environments]

    def projects_in_group(self, group: str) -> list[Project]:
        return [p for p in self.projects if key(p.group) == key(group)]

    def teams_of(self, username: str) -> list[Team]:
        k = key(username)
        return [t for t in self.teams if any(key(m) == k for m in t.members)]


def _swap(values: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    return tuple(new if key(v) == key(old) else v for v in values)


def _one(value: str, old: str, new: str) -> str:
    return new if key(value) == key(old) else value


def rename(model: Model, kind: Kind, old: str, new: str) -> Model:
    """Rewrite every reference to a renamed document; pure, so a rename is one transaction."""
    model = replace(
        model,
        subscriptions=tuple(
            _rename_in_subscription(s, kind, old, new) for s in model.subscriptions
        ),
    )
    if kind in ("teams", "project_groups"):
        model = replace(
            model,
            environments=tuple(_rename_in_checks(e, kind, old, new) for e in model.environments),
        )
    if kind == "environments":
        return _rename_environment(model, old, new)
    if kind == "lifecycles":
        projects = tuple(
            replace(
                p,
                lifecycle=_one(p.lifecycle, old, new),
                channels=tuple(
                    replace(c, lifecycle=_one(c.lifecycle, old, new)) if c.lifecycle else c
                    for c in p.channels
                ),
            )
            for p in model.projects
        )
        return replace(model, projects=projects)
    if kind == "project_groups":
        projects = tuple(replace(p, group=_one(p.group, old, new)) for p in model.projects)
        teams = tuple(
            replace(
                t,
                roles=tuple(
                    replace(r, project_groups=_swap(r.project_groups, old, new)) for r in t.roles
                ),
            )
            for t in model.teams
        )
        return replace(model, projects=projects, teams=teams)
    if kind == "user_roles":
        teams = tuple(
            replace(t, roles=tuple(replace(r, role=_one(r.role, old, new)) for r in t.roles))
            for t in model.teams
        )
        return replace(model, teams=teams)
    if kind == "users":
        teams = tuple(replace(t, members=_swap(t.members, old, new)) for t in model.teams)
        projects = tuple(
            _map_steps(p, lambda s: _rename_in_step(s, "users", old, new)) for p in model.projects
        )
        return replace(model, teams=teams, projects=projects)
    if kind == "projects":
        teams = tuple(
            replace(
                t, roles=tuple(replace(r, projects=_swap(r.projects, old, new)) for r in t.roles)
            )
            for t in model.teams
        )
        projects = tuple(
            _map_steps(p, lambda s: _rename_in_step(s, "projects", old, new))
            for p in model.projects
        )
        return replace(model, teams=teams, projects=projects)
    if kind == "teams":
        projects = tuple(
            _map_steps(p, lambda s: _rename_in_step(s, "teams", old, new)) for p in model.projects
        )
        return replace(model, projects=projects)
    return model


def _rename_in_subscription(sub: Subscription, kind: Kind, old: str, new: str) -> Subscription:
    if kind == "teams":
        return replace(sub, team=_one(sub.team, old, new) if sub.team else "")
    if kind == "users":
        return replace(sub, user=_one(sub.user, old, new) if sub.user else "")
    if kind == "projects":
        return replace(sub, projects=_swap(sub.projects, old, new))
    if kind == "project_groups":
        return replace(sub, project_groups=_swap(sub.project_groups, old, new))
    if kind == "environments":
        return replace(sub, environments=_swap(sub.environments, old, new))
    return sub


def _rename_in_checks(env: Environment, kind: Kind, old: str, new: str) -> Environment:
    """Teams and project groups named by an environment's checks follow a rename."""
    if not env.checks:
        return env
    checks = []
    for c in env.checks:
        if kind == "project_groups":
            c = replace(c, project_groups=_swap(c.project_groups, old, new))
        elif c.approval is not None:
            teams = tuple(replace(tq, team=_one(tq.team, old, new)) for tq in c.approval.teams)
            c = replace(c, approval=replace(c.approval, teams=teams))
        checks.append(c)
    return replace(env, checks=tuple(checks))


def _map_steps(project: Project, fn: Any) -> Project:
    steps = tuple(fn(s) for s in project.process.steps)
    return replace(project, process=replace(project.process, steps=steps))


def _rename_in_step(step: Step, kind: str, old: str, new: str) -> Step:
    action = step.action
    if kind == "teams" and isinstance(action, ManualInterventionAction):
        action = replace(
            action,
            responsible_teams=_swap(action.responsible_teams, old, new),
            approval_teams=_swap(action.approval_teams, old, new),
        )
    elif kind == "teams" and isinstance(action, NotificationAction):
        action = replace(action, to_teams=_swap(action.to_teams, old, new))
    elif kind == "users" and isinstance(action, NotificationAction):
        action = replace(action, to_users=_swap(action.to_users, old, new))
    elif kind == "projects" and isinstance(action, DeployReleaseAction):
        action = replace(action, project=_one(action.project, old, new))
    elif kind == "environments":
        step = replace(
            step,
            environments=_swap(step.environments, old, new),
            excluded_environments=_swap(step.excluded_environments, old, new),
        )
    return replace(step, action=action)


def _rename_environment(model: Model, old: str, new: str) -> Model:
    lifecycles = tuple(
        replace(
            lc,
            phases=tuple(
                Phase(
                    name=ph.name,
                    environments=_swap(ph.environments, old, new),
                    automatic=_swap(ph.automatic, old, new),
                    optional=ph.optional,
                    minimum_environments=ph.minimum_environments,
                )
                for ph in lc.phases
            ),
        )
        for lc in model.lifecycles
    )
    projects = tuple(
        replace(
            _map_steps(p, lambda s: _rename_in_step(s, "environments", old, new)),
            variables=tuple(
                Variable(v.name, v.value, v.sensitive, _swap(v.environments, old, new))
                for v in p.variables
            ),
        )
        for p in model.projects
    )
    targets = tuple(replace(t, environments=_swap(t.environments, old, new)) for t in model.targets)
    teams = tuple(
        replace(
            t,
            roles=tuple(
                ScopedRole(r.role, r.projects, r.project_groups, _swap(r.environments, old, new))
                for r in t.roles
            ),
        )
        for t in model.teams
    )
    return replace(model, lifecycles=lifecycles, projects=projects, targets=targets, teams=teams)


def field_names(doc: Document) -> list[str]:
    return [f.name for f in fields(doc)]
