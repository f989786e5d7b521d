"""Who can deploy where, and who can approve: the report auditors ask for.

For each project and each environment a release of it may reach (its lifecycle's, and its
channels' lifecycles'): the people who may deploy it there and the people who may approve a
deployment there, each with the team and role that grants it. It is computed by the functions
that enforce (``permissions.authorize``, ``governance.may_approve``, ``interruptions.may_act``),
never by a copy of their rules, so it cannot drift from what the server allows.

An approver is someone who may approve one of the gates a deployment passes there: an approval
check of the environment (a member of one of its teams), or a manual intervention step of the
project's process that runs in the environment (a member of its responsible teams or, for a
step without any, anyone who may answer interruptions there).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from conveyor.domain import channels as ch
from conveyor.domain import governance
from conveyor.domain import interruptions as rules
from conveyor.domain import permissions as perms
from conveyor.domain.documents import (
    ApprovalCheck,
    Environment,
    ManualInterventionAction,
    Project,
    Step,
    User,
    key,
)
from conveyor.domain.model import Model
from conveyor.domain.planning import scope_refusal

_P = perms.Permission
# The permissions an approval takes (``governance.authorize_approval``, ``may_act``): a person
# holding none of them anywhere is never an approver, and is not asked about each cell.
_APPROVING = frozenset({_P.InterruptionSubmit, _P.InterruptionViewSubmitResponsible})

T = TypeVar("T")

DEPLOY = "deploy"
APPROVE = "approve"


@dataclass(frozen=True)
class Entry:
    """One person holding a duty through one team and role; ``via``: the gate they approve."""

    user: str
    team: str
    role: str
    via: str = ""


@dataclass(frozen=True)
class Row:
    project: str
    environment: str
    deployers: tuple[Entry, ...]
    approvers: tuple[Entry, ...]
    # The approval gates a deployment passes here (an approver-less gate blocks every one).
    gates: tuple[str, ...] = ()

    @property
    def deploy_and_approve(self) -> tuple[str, ...]:
        """People who may both deploy and approve here: a separation-of-duties finding (a
        gate that blocks the creator still refuses their own deployment, not another's)."""
        approvers = {key(e.user) for e in self.approvers}
        both = {key(e.user): e.user for e in self.deployers if key(e.user) in approvers}
        return tuple(both[k] for k in sorted(both))


@dataclass(frozen=True)
class _Person:
    user: User
    principal: perms.Principal
    teams: tuple[str, ...]
    team_keys: frozenset[str]
    # The projects some grant of theirs names (keys): see ``_Memo``.
    named_projects: frozenset[str]


# Whom a gate's approval goes through: the teams the person approves as ("" when the gate names
# none) and the team and role granting the permission it takes.
Found = tuple[str, tuple[perms.GrantedBy, ...]]


@dataclass(frozen=True)
class _Gate:
    """An approval gate of one project in one environment, and who may approve it."""

    name: str
    # The same for gates that decide alike for the same person, project and environment.
    signature: tuple[object, ...]
    # Team keys a person must be in (empty: anyone may be asked).
    teams: frozenset[str]
    approve: Callable[[_Person], Found | None]


@dataclass(frozen=True)
class _Cell:
    """One project and environment, with the name keys the memo compares."""

    ref: perms.ProjectRef
    env: str
    project_key: str
    group_key: str
    env_key: str


class _Memo(Generic[T]):
    """Answers per (question, person, project, environment), shared by projects alike.

    ``authorize`` reads a project only as whether a grant names it and which group it is in; for
    a person none of whose grants names the project, every project of the group gets the same
    answer (all but the wording of the reason, which the report does not use). So 500 projects
    in ten groups ask the enforcing functions ten times, not 500."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], T] = {}

    def get(
        self,
        question: tuple[object, ...],
        index: int,
        person: _Person,
        cell: _Cell,
        compute: Callable[[_Person], T],
    ) -> T:
        project = cell.project_key if cell.project_key in person.named_projects else ""
        token = (question, index, project, cell.group_key, cell.env_key)
        if token not in self._found:
            self._found[token] = compute(person)
        return self._found[token]


def _holds(principal: perms.Principal, wanted: Collection[perms.Permission]) -> bool:
    return any(p in g.permissions for g in principal.grants for p in wanted)


def _people(model: Model, principal_of: Callable[[User], perms.Principal] | None) -> list[_Person]:
    roles = {key(r.name): r for r in model.user_roles}

    def from_model(user: User) -> perms.Principal:
        return perms.principal_for(user.username, user.active, model.teams, roles)

    build = principal_of or from_model
    people = []
    for user in model.users:
        if not user.active:
            continue  # an inactive account may do nothing (authorize refuses it too)
        principal = build(user)
        teams = tuple(t.name for t in model.teams_of(user.username))
        named = frozenset(key(p) for g in principal.grants for p in g.projects)
        people.append(_Person(user, principal, teams, frozenset(key(t) for t in teams), named))
    return people


def _check_gate(check: ApprovalCheck, ref: perms.ProjectRef, env: str) -> _Gate:
    named = frozenset(key(tq.team) for tq in check.teams)
    subject = governance.Subject(project=ref, environment=env, digest="")

    def approve(person: _Person) -> Found | None:
        verdict = governance.may_approve(
            person.principal, person.teams, [check], subject, person.user
        )
        if not verdict.allowed:
            return None
        decision = governance.authorize_approval(person.principal, ref, env)
        return ", ".join(verdict.teams), decision.granted_by

    return _Gate(f"approval check of {env}", ("check", named), named, approve)


def _step_gate(
    step: Step, action: ManualInterventionAction, ref: perms.ProjectRef, env: str
) -> _Gate:
    facts = rules.Facts(
        kind=rules.Kind.MANUAL_INTERVENTION,
        project=ref,
        environment=env,
        responsible_teams=action.responsible_teams,
    )
    responsible = frozenset(key(t) for t in action.responsible_teams)

    def approve(person: _Person) -> Found | None:
        if not rules.may_act(person.principal, person.teams, facts).allowed:
            return None
        if responsible:
            through = ", ".join(t for t in person.teams if key(t) in responsible)
            return through, governance.authorize_approval(person.principal, ref, env).granted_by
        decision = perms.authorize(
            person.principal, _P.InterruptionSubmit, project=ref, environment=env
        )
        return "", decision.granted_by

    name = f'manual intervention "{step.name}"'
    return _Gate(name, ("step", responsible), responsible, approve)


def _gates(project: Project, ref: perms.ProjectRef, env: Environment) -> list[_Gate]:
    gates = [
        _check_gate(check, ref, env.name)
        for check in governance.approval_checks(governance.applicable(env, project.group))
    ]
    for step in project.process.steps:
        action = step.action
        if step.disabled or not isinstance(action, ManualInterventionAction):
            continue
        if scope_refusal(step, env.name) is None:
            gates.append(_step_gate(step, action, ref, env.name))
    return gates


def _deployers(
    people: Sequence[_Person], cell: _Cell, memo: _Memo[tuple[Entry, ...]]
) -> list[Entry]:
    ref, env = cell.ref, cell.env

    def entries(person: _Person) -> tuple[Entry, ...]:
        # ``allows`` first: the same grant test without a reason, for the many who may not.
        if not perms.allows(person.principal, _P.DeploymentCreate, project=ref, environment=env):
            return ()
        decision = perms.authorize(
            person.principal, _P.DeploymentCreate, project=ref, environment=env
        )
        return tuple(Entry(person.user.username, g.team, g.role) for g in decision.granted_by)

    out: list[Entry] = []
    for index, person in enumerate(people):
        out.extend(memo.get(("deploy",), index, person, cell, entries))
    return out


def _approver_entries(gate: _Gate, person: _Person) -> tuple[Entry, ...]:
    found = gate.approve(person)
    if found is None:
        return ()
    through, granted_by = found
    via = f"{gate.name}, as {through}" if through else gate.name
    return tuple(Entry(person.user.username, g.team, g.role, via) for g in granted_by)


def _approvers(
    people: Sequence[_Person], gates: Sequence[_Gate], cell: _Cell, memo: _Memo[tuple[Entry, ...]]
) -> list[Entry]:
    out: list[Entry] = []
    for index, person in enumerate(people):
        for gate in gates:
            if gate.teams and not person.team_keys & gate.teams:
                continue  # refused first by the gate's rule too; this only spares asking
            question = (gate.signature, gate.name)
            out.extend(memo.get(question, index, person, cell, partial(_approver_entries, gate)))
    return list(dict.fromkeys(out))  # two check sets of one environment may name one team


def report(
    model: Model,
    *,
    projects: Iterable[Project] | None = None,
    environments: Collection[str] | None = None,
    principal_of: Callable[[User], perms.Principal] | None = None,
) -> list[Row]:
    """A row per project (``projects``, default all) and environment of its lifecycles (only
    ``environments`` when given), in the global environment order. ``principal_of`` builds a
    user's principal (the services pass their cached one); by default from the model."""
    # By username, so that each cell's lists come out in order, person by person.
    people = sorted(_people(model, principal_of), key=lambda p: key(p.user.username))
    deploying = [p for p in people if _holds(p.principal, (_P.DeploymentCreate,))]
    approving = [p for p in people if _holds(p.principal, _APPROVING)]
    only = {key(e) for e in environments} if environments is not None else None
    deploy_memo: _Memo[tuple[Entry, ...]] = _Memo()
    approve_memo: _Memo[tuple[Entry, ...]] = _Memo()
    rows = []
    for project in model.projects if projects is None else projects:
        ref = perms.ProjectRef(project.name, project.group)
        # A release may reach the environments of its channel's lifecycle too.
        lifecycle = {key(e) for e in ch.reachable(project, model.lifecycle_environments)}
        for env in model.environments:
            if key(env.name) not in lifecycle or (only is not None and key(env.name) not in only):
                continue
            cell = _Cell(ref, env.name, key(ref.name), key(ref.group), key(env.name))
            gates = _gates(project, ref, env)
            deployers = _deployers(deploying, cell, deploy_memo)
            approvers = _approvers(approving, gates, cell, approve_memo)
            rows.append(
                Row(
                    project=project.name,
                    environment=env.name,
                    deployers=tuple(deployers),
                    approvers=tuple(approvers),
                    gates=tuple(g.name for g in gates),
                )
            )
    return rows


def as_dict(row: Row) -> dict[str, Any]:
    return {
        "project": row.project,
        "environment": row.environment,
        "deployers": [{"user": e.user, "team": e.team, "role": e.role} for e in row.deployers],
        "approvers": [
            {"user": e.user, "team": e.team, "role": e.role, "via": e.via} for e in row.approvers
        ],
        "gates": list(row.gates),
        "deploy_and_approve": list(row.deploy_and_approve),
    }


CSV_COLUMNS = ("project", "environment", "duty", "user", "team", "role", "via")


def csv_rows(rows: Iterable[Row]) -> Iterable[tuple[str, ...]]:
    """One line per (project, environment, duty, user, team, role, via)."""
    for row in rows:
        for e in row.deployers:
            yield (row.project, row.environment, DEPLOY, e.user, e.team, e.role, "")
        for e in row.approvers:
            yield (row.project, row.environment, APPROVE, e.user, e.team, e.role, e.via)
