"""Rules that a whole configuration must satisfy, checked on the model a change would produce.

Every problem carries the path of the bad field (``projects[Deploy All].process.steps[QA
approval].responsible_teams[0]``) so the API and config as code can point at it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import pathspec

from conveyor.domain import channels as ch
from conveyor.domain import targets
from conveyor.domain.codec_channels import channel_problems
from conveyor.domain.documents import (
    DeployReleaseAction,
    ManualInterventionAction,
    NotificationAction,
    PackageAction,
    Project,
    RunCondition,
    ScriptAction,
    StartTrigger,
    key,
    slugify,
)
from conveyor.domain.errors import Problem
from conveyor.domain.governance import checks_problems
from conveyor.domain.inputs import field_problems
from conveyor.domain.model import KIND_LABELS, KINDS, Model, doc_name
from conveyor.domain.oidc import trust_problems
from conveyor.domain.subscriptions import subscription_problems

Path = tuple[str | int, ...]

MAX_NAME = 200
MAX_EMAIL = 320
# The width of a delivery's address column.
MAX_URL = 2000
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PACKAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
ADMIN_PERMISSION = "AdministerSystem"


def validate(model: Model, known_permissions: Iterable[str]) -> list[Problem]:
    problems: list[Problem] = []
    _names(model, problems)
    _lifecycles(model, problems)
    _environment_checks(model, problems)
    for project in model.projects:
        _project(model, project, problems)
    _deploy_release_cycles(model, problems)
    _targets(model, problems)
    _users(model, problems)
    _roles(model, set(known_permissions), problems)
    _teams(model, problems)
    problems += subscription_problems(model)
    _someone_administers(model, problems)
    return problems


def _environment_checks(model: Model, problems: list[Problem]) -> None:
    teams = {key(t.name) for t in model.teams}
    groups = {key(g.name) for g in model.project_groups}
    for env in model.environments:
        problems += checks_problems(env, ("environments", env.name), teams, groups)


def _refs(
    model: Model,
    kind: str,
    names: Iterable[str],
    path: Path,
    problems: list[Problem],
    *,
    within: Iterable[str] | None = None,
    within_what: str = "",
) -> None:
    allowed = {key(n) for n in within} if within is not None else None
    seen: set[str] = set()
    for i, name in enumerate(names):
        label = KIND_LABELS[kind]
        if not model.has(kind, name):  # type: ignore[arg-type]
            problems.append(Problem((*path, i), f'{label} "{name}" does not exist'))
        elif allowed is not None and key(name) not in allowed:
            problems.append(Problem((*path, i), f'{label} "{name}" is not {within_what}'))
        if key(name) in seen:
            problems.append(Problem((*path, i), f'{label} "{name}" is named twice'))
        seen.add(key(name))


def _names(model: Model, problems: list[Problem]) -> None:
    for kind in KINDS:
        docs = model.docs(kind)
        counts = Counter(key(doc_name(d)) for d in docs)
        reported: set[str] = set()
        for i, doc in enumerate(docs):
            name = doc_name(doc)
            if not name.strip():
                problems.append(Problem((kind, i), "a name is required"))
            elif len(name) > MAX_NAME or len(slugify(name)) > MAX_NAME:
                # The slug is stored too (URLs, identity without case); it may be the longer.
                problems.append(Problem((kind, name), f"names are at most {MAX_NAME} characters"))
            elif counts[key(name)] > 1 and key(name) not in reported:
                reported.add(key(name))
                problems.append(
                    Problem(
                        (kind, i),
                        f'there is more than one {KIND_LABELS[kind]} named "{name}" '
                        f'(names compare without case: "{slugify(name)}")',
                    )
                )


def _lifecycles(model: Model, problems: list[Problem]) -> None:
    for lc in model.lifecycles:
        path: Path = ("lifecycles", lc.name)
        if not lc.phases:
            problems.append(Problem((*path, "phases"), "a lifecycle needs at least one phase"))
        seen_envs: dict[str, str] = {}
        phase_names = Counter(key(p.name) for p in lc.phases)
        for ph in lc.phases:
            p_path: Path = (*path, "phases", ph.name)
            if phase_names[key(ph.name)] > 1:
                problems.append(Problem(p_path, f'phase "{ph.name}" is named twice'))
            if not ph.environments:
                problems.append(
                    Problem((*p_path, "environments"), "a phase needs at least one environment")
                )
            _refs(model, "environments", ph.environments, (*p_path, "environments"), problems)
            for i, env in enumerate(ph.environments):
                other = seen_envs.get(key(env))
                if other is not None and other != ph.name:
                    problems.append(
                        Problem(
                            (*p_path, "environments", i),
                            f'environment "{env}" is already in phase "{other}"; '
                            "a lifecycle names each environment once",
                        )
                    )
                seen_envs[key(env)] = ph.name
            _refs(
                model,
                "environments",
                ph.automatic,
                (*p_path, "automatic"),
                problems,
                within=ph.environments,
                within_what=f'in phase "{ph.name}"',
            )
            if ph.minimum_environments > len(ph.environments):
                problems.append(
                    Problem(
                        (*p_path, "minimum_environments"),
                        f"is {ph.minimum_environments} but the phase has only "
                        f"{len(ph.environments)} environment(s)",
                    )
                )


def _project(model: Model, project: Project, problems: list[Problem]) -> None:
    path: Path = ("projects", project.name)
    if not model.has("project_groups", project.group):
        problems.append(
            Problem((*path, "group"), f'project group "{project.group}" does not exist')
        )
    if not model.has("lifecycles", project.lifecycle):
        problems.append(
            Problem((*path, "lifecycle"), f'lifecycle "{project.lifecycle}" does not exist')
        )
    for i, pattern in enumerate(project.watch_paths):
        try:
            pathspec.PathSpec.from_lines("gitignore", [pattern])
        except Exception as exc:  # pathspec raises several types for a bad pattern
            problems.append(
                Problem((*path, "watch_paths", i), f'"{pattern}" is not a valid pattern: {exc}')
            )
    _process(model, project, problems)
    _variables(model, project, problems)
    known = {key(lc.name) for lc in model.lifecycles}
    problems.extend(channel_problems(project, known, path))


def _reachable(model: Model, project: Project) -> tuple[list[str] | None, str]:
    """Where a step may be scoped: an environment the project's lifecycle or one of its
    channels' reaches (a release of that channel may go there); and how to say it is not.
    None when the project's lifecycle is missing (reported on its own)."""
    if not model.has("lifecycles", project.lifecycle):
        return None, ""
    label = f'in lifecycle "{project.lifecycle}" of this project'
    others = ch.channels_by_lifecycle(project)
    if others:
        label += ", nor in " + ", nor in ".join(
            f'lifecycle "{lifecycle}" of its channel{"s" if len(names) > 1 else ""} '
            + ", ".join(f'"{n}"' for n in names)
            for lifecycle, names in others.items()
        )
    return ch.reachable(project, model.lifecycle_environments), label


def _process(model: Model, project: Project, problems: list[Problem]) -> None:
    steps = project.process.steps
    counts = Counter(key(s.name) for s in steps)
    lifecycle_envs, lc_label = _reachable(model, project)
    for i, step in enumerate(steps):
        s_path: Path = ("projects", project.name, "process", "steps", step.name)
        if not step.name.strip():
            problems.append(
                Problem(("projects", project.name, "process", "steps", i), "needs a name")
            )
            continue
        if len(step.name) > MAX_NAME:
            # Stored with each run's steps and interruptions, in columns of this width.
            problems.append(Problem((*s_path, "name"), f"is at most {MAX_NAME} characters"))
        if counts[key(step.name)] > 1:
            problems.append(
                Problem(
                    ("projects", project.name, "process", "steps", i),
                    f'step "{step.name}" is named twice',
                )
            )
        for field in ("environments", "excluded_environments"):
            _refs(
                model,
                "environments",
                getattr(step, field),
                (*s_path, field),
                problems,
                within=lifecycle_envs,
                within_what=lc_label,
            )
        if step.condition == RunCondition.VARIABLE and not step.condition_expression.strip():
            problems.append(
                Problem(
                    (*s_path, "condition_expression"),
                    "is required when the condition is variable, e.g. #{RunThisStep}",
                )
            )
        if step.condition != RunCondition.VARIABLE and step.condition_expression:
            problems.append(
                Problem((*s_path, "condition_expression"), "is used only with condition: variable")
            )
        if i == 0 and step.start == StartTrigger.WITH_PREVIOUS:
            problems.append(
                Problem((*s_path, "start"), "the first step has no previous step to start with")
            )
        _action(model, project, step.action, s_path, problems)


def _action(
    model: Model, project: Project, action: object, path: Path, problems: list[Problem]
) -> None:
    if (
        isinstance(action, ScriptAction | PackageAction)
        and action.window
        and not action.target_roles
    ):
        problems.append(
            Problem(
                (*path, "window"),
                "applies to a step that runs on targets: give it target_roles, or remove window",
            )
        )
    if isinstance(action, ScriptAction):
        if not action.body.strip():
            problems.append(Problem((*path, "script"), "must not be empty"))
        if action.worker_pool and action.target_roles:
            problems.append(
                Problem(
                    (*path, "worker_pool"),
                    "a step with target_roles runs on those targets, not on a worker: "
                    "remove one of the two",
                )
            )
        pool = action.worker_pool
        if (
            pool
            and key(pool) != key(targets.DEFAULT_POOL)
            and not targets.pool_members(model.targets, pool)
        ):
            problems.append(
                Problem(
                    (*path, "worker_pool"),
                    f'no worker is in pool "{pool}": add a target with pool: {pool}',
                )
            )
    elif isinstance(action, PackageAction):
        if not PACKAGE_ID.match(action.package):
            problems.append(
                Problem(
                    (*path, "package"),
                    f'"{action.package}" is not a package id (letters, digits, . _ -)',
                )
            )
    elif isinstance(action, ManualInterventionAction):
        _refs(model, "teams", action.responsible_teams, (*path, "responsible_teams"), problems)
        _refs(model, "teams", action.approval_teams, (*path, "approval_teams"), problems)
        if not action.instructions.strip():
            problems.append(Problem((*path, "instructions"), "must not be empty"))
        # Conveyor.Action[Step].Output.Manual.<Field> sits beside these built-in outputs.
        reserved = ("Approved", "Notes", "ResponsibleUser")
        problems += field_problems(action.fields, (*path, "fields"), reserved)
    elif isinstance(action, NotificationAction):
        _refs(model, "teams", action.to_teams, (*path, "to_teams"), problems)
        _refs(model, "users", action.to_users, (*path, "to_users"), problems)
        for i, address in enumerate(action.to_addresses):
            if not EMAIL.match(address):
                problems.append(
                    Problem((*path, "to_addresses", i), f'"{address}" is not an email address')
                )
        for i, hook in enumerate(action.webhooks):
            if not hook.url.startswith(("http://", "https://")):
                problems.append(
                    Problem((*path, "webhooks", i, "url"), "must start with http:// or https://")
                )
            elif len(hook.url) > MAX_URL:
                problems.append(
                    Problem((*path, "webhooks", i, "url"), f"is at most {MAX_URL} characters")
                )
            if hook.secret_variable and not any(
                v.sensitive and v.name == hook.secret_variable for v in project.variables
            ):
                problems.append(
                    Problem(
                        (*path, "webhooks", i, "secret_variable"),
                        f'"{hook.secret_variable}" is not a sensitive variable of this project',
                    )
                )
        if not (action.to_teams or action.to_users or action.to_addresses or action.webhooks):
            problems.append(
                Problem(path, "a notification needs a recipient (team, user, address or webhook)")
            )
    elif isinstance(action, DeployReleaseAction):
        if key(action.project) == key(project.name):
            problems.append(Problem((*path, "project"), "a project cannot deploy itself"))
        elif not model.has("projects", action.project):
            problems.append(
                Problem((*path, "project"), f'project "{action.project}" does not exist')
            )
        for name, _ in action.variables:
            if not name.strip():
                problems.append(Problem((*path, "variables"), "variable names must not be empty"))


def _deploy_release_cycles(model: Model, problems: list[Problem]) -> None:
    children: dict[str, list[tuple[str, str]]] = {}
    names = {key(p.name): p.name for p in model.projects}
    for p in model.projects:
        children[key(p.name)] = [
            (key(s.action.project), s.name)
            for s in p.process.steps
            if isinstance(s.action, DeployReleaseAction) and key(s.action.project) in names
        ]
    reported: set[frozenset[str]] = set()

    def visit(node: str, trail: list[str]) -> None:
        for child, step in children.get(node, []):
            if child in trail:
                cycle = [*trail[trail.index(child) :], child]
                ident = frozenset(cycle)
                if ident not in reported:
                    reported.add(ident)
                    chain = " -> ".join(names[c] for c in cycle)
                    problems.append(
                        Problem(
                            ("projects", names[node], "process", "steps", step, "project"),
                            f"deploy_release steps form a cycle: {chain}",
                        )
                    )
                continue
            visit(child, [*trail, child])

    for start in children:
        visit(start, [start])


def _variables(model: Model, project: Project, problems: list[Problem]) -> None:
    seen: dict[tuple[str, frozenset[str]], int] = {}
    for i, var in enumerate(project.variables):
        path: Path = ("projects", project.name, "variables", i)
        if not var.name.strip():
            problems.append(Problem((*path, "name"), "must not be empty"))
            continue
        if var.name.startswith("Conveyor."):
            problems.append(
                Problem((*path, "name"), "names starting with Conveyor. are reserved for built-ins")
            )
        _refs(model, "environments", var.environments, (*path, "environments"), problems)
        ident = (key(var.name), frozenset(key(e) for e in var.environments))
        if ident in seen:
            problems.append(
                Problem(
                    (*path, "name"),
                    f'variable "{var.name}" is defined twice for the same environments',
                )
            )
        seen[ident] = i


def _targets(model: Model, problems: list[Problem]) -> None:
    for t in model.targets:
        path: Path = ("targets", t.name)
        problems.extend(targets.problems_of(t))
        _refs(model, "environments", t.environments, (*path, "environments"), problems)


def _users(model: Model, problems: list[Problem]) -> None:
    for u in model.users:
        path: Path = ("users", u.username)
        if u.username and not USERNAME.match(u.username):
            problems.append(
                Problem(
                    (*path, "username"),
                    "use letters, digits and . _ @ - (at most 100), "
                    "starting with a letter or digit",
                )
            )
        if u.email and (len(u.email) > MAX_EMAIL or not EMAIL.match(u.email)):
            problems.append(Problem((*path, "email"), f'"{u.email}" is not an email address'))
        if len(u.display_name) > MAX_NAME:
            problems.append(Problem((*path, "display_name"), f"is at most {MAX_NAME} characters"))
        problems.extend(trust_problems(u.oidc_trust, u.service_account, path))


def _roles(model: Model, known: set[str], problems: list[Problem]) -> None:
    known_keys = {p.lower() for p in known}
    for role in model.user_roles:
        for i, perm in enumerate(role.permissions):
            if perm.lower() not in known_keys:
                problems.append(
                    Problem(
                        ("user_roles", role.name, "permissions", i),
                        f'"{perm}" is not a permission (see conveyor permissions list)',
                    )
                )


def _teams(model: Model, problems: list[Problem]) -> None:
    for team in model.teams:
        path: Path = ("teams", team.name)
        _refs(model, "users", team.members, (*path, "members"), problems)
        for i, sr in enumerate(team.roles):
            r_path: Path = (*path, "roles", i)
            if not model.has("user_roles", sr.role):
                problems.append(Problem((*r_path, "role"), f'user role "{sr.role}" does not exist'))
            _refs(model, "projects", sr.projects, (*r_path, "projects"), problems)
            _refs(model, "project_groups", sr.project_groups, (*r_path, "project_groups"), problems)
            _refs(model, "environments", sr.environments, (*r_path, "environments"), problems)


def _someone_administers(model: Model, problems: list[Problem]) -> None:
    """Refuse a change that would leave nobody able to administer Conveyor."""
    if not model.users:
        return
    admin_roles = {
        key(r.name)
        for r in model.user_roles
        if any(p.lower() == ADMIN_PERMISSION.lower() for p in r.permissions)
    }
    active = {key(u.username) for u in model.users if u.active}
    for team in model.teams:
        unscoped_admin = any(
            key(r.role) in admin_roles and not (r.projects or r.project_groups or r.environments)
            for r in team.roles
        )
        if unscoped_admin and any(key(m) in active for m in team.members):
            return
    problems.append(
        Problem(
            ("teams",),
            "this change would leave no active user with AdministerSystem; "
            "keep at least one team with the System Administrator role and an active member",
        )
    )
