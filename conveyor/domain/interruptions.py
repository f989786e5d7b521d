"""Who may take and answer an interruption, and when an answer settles it.

Octopus's rule, plus four eyes and quorum: a manual intervention with responsible teams may be
answered only by a member of one of those teams who holds InterruptionSubmit or
InterruptionViewSubmitResponsible for the project and environment; one without teams by anyone
with InterruptionSubmit there. On top of that a step may forbid the person who started the
deployment (or created the release) to answer, require N distinct people to proceed, and require
at least one of them from each of some teams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from conveyor.domain import permissions as perms
from conveyor.domain.documents import key


class Kind(StrEnum):
    MANUAL_INTERVENTION = "manual_intervention"
    GUIDED_FAILURE = "guided_failure"


class Result(StrEnum):
    PROCEED = "proceed"
    ABORT = "abort"
    RETRY = "retry"
    IGNORE = "ignore"


RESULTS: dict[Kind, tuple[Result, ...]] = {
    Kind.MANUAL_INTERVENTION: (Result.PROCEED, Result.ABORT),
    Kind.GUIDED_FAILURE: (Result.RETRY, Result.IGNORE, Result.ABORT),
}


@dataclass(frozen=True)
class Answer:
    username: str
    result: Result
    teams: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class Facts:
    """An interruption as the rules see it."""

    kind: Kind
    project: perms.ProjectRef
    environment: str
    responsible_teams: tuple[str, ...] = ()
    deployed_by: str = ""
    release_created_by: str = ""
    prevent_self_approval: bool = False
    required_approvals: int = 1
    approval_teams: tuple[str, ...] = ()
    # A required step offers no "ignore" for its guided failures.
    required_step: bool = False
    taken_by: str | None = None
    answers: tuple[Answer, ...] = field(default=())


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def may_act(principal: perms.Principal, teams: Sequence[str], facts: Facts) -> Verdict:
    """May this person take responsibility for, or answer, this interruption?"""
    who = principal.username

    def check(permission: perms.Permission) -> perms.Decision:
        return perms.authorize(
            principal, permission, project=facts.project, environment=facts.environment
        )

    if facts.responsible_teams:
        members = {key(t) for t in teams}
        if not members & {key(t) for t in facts.responsible_teams}:
            return Verdict(
                False,
                f"only members of {', '.join(facts.responsible_teams)} may answer this; "
                f"{who} is not in {'that team' if len(facts.responsible_teams) == 1 else 'any'}",
            )
        submit = check(perms.Permission.InterruptionSubmit)
        if not submit.allowed:
            submit = check(perms.Permission.InterruptionViewSubmitResponsible)
        if not submit.allowed:
            return Verdict(False, submit.reason)
    else:
        submit = check(perms.Permission.InterruptionSubmit)
        if not submit.allowed:
            return Verdict(False, submit.reason)
    if facts.prevent_self_approval and facts.kind == Kind.MANUAL_INTERVENTION:
        if key(who) == key(facts.deployed_by):
            return Verdict(False, "you started this deployment; someone else must approve it")
        if key(who) == key(facts.release_created_by):
            return Verdict(False, "you created this release; someone else must approve it")
    if any(key(a.username) == key(who) and a.result == Result.PROCEED for a in facts.answers):
        return Verdict(False, "you have already approved this; another person must approve too")
    return Verdict(True, f"{who} may answer this interruption")


def may_take(principal: perms.Principal, teams: Sequence[str], facts: Facts) -> Verdict:
    return may_act(principal, teams, facts)


def check_result(facts: Facts, result: Result) -> Verdict:
    allowed = RESULTS[facts.kind]
    if facts.kind == Kind.GUIDED_FAILURE and facts.required_step and result == Result.IGNORE:
        return Verdict(False, "the step is required: its failure cannot be ignored")
    if result not in allowed:
        options = " or ".join(r.value for r in allowed)
        return Verdict(False, f'"{result.value}" is not an answer here; answer {options}')
    return Verdict(True, "")


@dataclass(frozen=True)
class Settlement:
    """What the answers so far decide: nothing yet, or the final result."""

    settled: bool
    result: Result | None
    reason: str


def settle(facts: Facts, answers: Sequence[Answer]) -> Settlement:
    """An abort (or a guided-failure answer) settles at once; proceed needs the quorum."""
    last = answers[-1]
    if facts.kind == Kind.GUIDED_FAILURE or last.result != Result.PROCEED:
        return Settlement(True, last.result, f"{last.username} answered {last.result.value}")
    approvers = {key(a.username) for a in answers if a.result == Result.PROCEED}
    missing_teams = [
        t
        for t in facts.approval_teams
        if not any(
            key(t) in {key(x) for x in a.teams} for a in answers if a.result == Result.PROCEED
        )
    ]
    needed = max(facts.required_approvals, 1)
    if len(approvers) < needed:
        return Settlement(
            False,
            None,
            f"{len(approvers)} of {needed} required approvals so far",
        )
    if missing_teams:
        return Settlement(False, None, f"still needs an approval from {', '.join(missing_teams)}")
    return Settlement(True, Result.PROCEED, f"approved by {', '.join(a.username for a in answers)}")
