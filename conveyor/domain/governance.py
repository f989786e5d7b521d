"""Environment checks: what every deployment to an environment must pass, whatever its process.

Checks belong to environments (``documents.EnvironmentChecks``), optionally only for some project
groups: approvals (teams with a quorum each, "and" across teams, four eyes), change windows,
freezes and "run latest". ``evaluate`` decides each check for one deployment (or a preview) at
one instant; the service evaluates when a deployment is queued, whenever something it waits for
changes, and again just before it starts. Time is always passed in, never read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.domain import permissions as perms
from conveyor.domain.documents import (
    ApprovalCheck,
    ChangeWindow,
    Environment,
    EnvironmentChecks,
    Freeze,
    User,
    key,
)
from conveyor.domain.errors import Problem
from conveyor.domain.inputs import field_problems

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CheckState(StrEnum):
    PASSED = "passed"
    PENDING = "pending"  # the deployment waits for it (approvals, a window, a freeze's end)


class CheckKind(StrEnum):
    APPROVAL = "approval"
    WINDOW = "window"
    FREEZE = "freeze"
    RUN_LATEST = "run_latest"


@dataclass(frozen=True)
class CheckResult:
    kind: CheckKind
    name: str
    state: CheckState
    reason: str

    @property
    def passed(self) -> bool:
        return self.state is CheckState.PASSED

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Approval:
    """An approval given ahead of time for a release (or its train) and an environment."""

    id: int
    username: str
    given_at: datetime
    expires_at: datetime
    # The release's digest when it was given: a changed snapshot voids it.
    digest: str
    revoked: bool = False
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Subject:
    """The deployment the checks are about (or would be, for a preview)."""

    project: perms.ProjectRef
    environment: str
    digest: str
    release_created_by: str = ""
    # Who queued it; empty in a preview, before anyone has.
    deployment_created_by: str = ""
    # The authors of the commits the release brings to the environment (build information).
    commit_authors: tuple[str, ...] = ()
    # A freeze overridden when the deployment was queued: the reason given.
    freeze_override: str = ""
    # Queued to start no earlier than this.
    start_at: datetime | None = None


# ------------------------------------------------------------------ which checks apply


def applicable(env: Environment, group: str) -> tuple[EnvironmentChecks, ...]:
    """The check sets of ``env`` that cover a project of ``group``."""
    return tuple(
        c
        for c in env.checks
        if not c.project_groups or key(group) in {key(g) for g in c.project_groups}
    )


def approval_checks(checks: Sequence[EnvironmentChecks]) -> list[ApprovalCheck]:
    return [c.approval for c in checks if c.approval is not None]


def runs_latest(checks: Sequence[EnvironmentChecks]) -> bool:
    return any(c.run_latest for c in checks)


# ------------------------------------------------------------------ time


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 instant with its offset (``2026-12-24T00:00:00Z``); None otherwise."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _clock(text: str) -> time | None:
    try:
        hours, minutes = text.strip().split(":")
        if len(minutes) != 2:
            return None
        return time(int(hours), int(minutes))
    except ValueError:
        return None


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _spans(window: ChangeWindow, around: datetime) -> list[tuple[datetime, datetime]]:
    """The window's openings from the day before ``around`` to eight days after, in UTC."""
    zone = _zone(window.time_zone) or UTC
    start, end = _clock(window.start), _clock(window.end)
    if start is None or end is None:
        return []
    days = {key(d)[:3] for d in window.days} or set(DAYS)
    local = around.astimezone(zone).date()
    out = []
    for offset in range(-1, 9):
        day = local + timedelta(days=offset)
        if DAYS[day.weekday()] not in days:
            continue
        opens = datetime.combine(day, start, zone)
        closes_day = day if end > start else day + timedelta(days=1)
        closes = datetime.combine(closes_day, end, zone)
        out.append((opens.astimezone(UTC), closes.astimezone(UTC)))
    return out


@dataclass(frozen=True)
class WindowState:
    open: bool
    # While open: when the opening ends; while closed: when the next one starts (None: never).
    until: datetime | None


def window_state(windows: Sequence[ChangeWindow], now: datetime) -> WindowState:
    """Whether any of ``windows`` is open at ``now``, and until when (or from when)."""
    spans = sorted(s for w in windows for s in _spans(w, now))
    current = [(a, b) for a, b in spans if a <= now < b]
    if current:
        return WindowState(True, max(b for _, b in current))
    later = [a for a, _ in spans if a > now]
    return WindowState(False, min(later) if later else None)


def describe_window(w: ChangeWindow) -> str:
    days = ", ".join(d.capitalize() for d in w.days) if w.days else "every day"
    return f"{days} {w.start} to {w.end} {w.time_zone}"


def active_freeze(freezes: Sequence[Freeze], now: datetime) -> tuple[Freeze, datetime] | None:
    """The freeze in force at ``now`` and its end; of several, the one that ends last."""
    found: tuple[Freeze, datetime] | None = None
    for f in freezes:
        start, end = parse_instant(f.start), parse_instant(f.end)
        if start is None or end is None or not start <= now < end:
            continue
        if found is None or end > found[1]:
            found = (f, end)
    return found


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------ approvals


def authored(user: User | None, username: str, authors: Sequence[str]) -> bool:
    """Whether a commit author text (``Dana <dev@x.example>``, an e-mail or a name) is this
    person: their e-mail address, username or display name."""
    marks = {key(username)}
    email = user.email.strip().lower() if user and user.email else ""
    if user and user.display_name.strip():
        marks.add(key(user.display_name))
    for author in authors:
        text = author.strip().lower()
        if email and email in text:
            return True
        name = text.split("<", 1)[0].strip()
        if name and key(name) in marks:
            return True
    return False


@dataclass(frozen=True)
class Counted:
    """Why one approval counts or does not."""

    approval: Approval
    counts: bool
    reason: str


def _judge(
    approval: Approval,
    check: ApprovalCheck,
    subject: Subject,
    users: Mapping[str, User],
    now: datetime,
) -> Counted:
    who = approval.username
    if approval.revoked:
        return Counted(approval, False, f"{who}'s approval was revoked")
    if approval.expires_at <= now:
        return Counted(approval, False, f"{who}'s approval expired at {stamp(approval.expires_at)}")
    if approval.digest != subject.digest:
        return Counted(approval, False, f"{who} approved the release before it changed")
    if check.block_creator:
        if subject.deployment_created_by and key(who) == key(subject.deployment_created_by):
            return Counted(approval, False, f"{who} queued this deployment: not their own approval")
        if subject.release_created_by and key(who) == key(subject.release_created_by):
            return Counted(approval, False, f"{who} created this release: not their own approval")
    if check.block_commit_authors and authored(users.get(key(who)), who, subject.commit_authors):
        return Counted(approval, False, f"{who} wrote commits in this release")
    return Counted(approval, True, f"{who} approved at {stamp(approval.given_at)}")


def _assign(
    approvers: list[str], teams_of: Mapping[str, set[str]], quorum: Mapping[str, int]
) -> dict[str, list[str]]:
    """Each approver counts for at most one team (one person cannot be both the QA and the
    business owner approval): the assignment that fills the most places (augmenting paths)."""
    slots = [team for team, n in quorum.items() for _ in range(n)]
    holder: dict[int, str] = {}

    def place(person: str, seen: set[int]) -> bool:
        for i, team in enumerate(slots):
            if team not in teams_of.get(person, set()) or i in seen:
                continue
            seen.add(i)
            if i not in holder or place(holder[i], seen):
                holder[i] = person
                return True
        return False

    for person in approvers:
        place(person, set())
    out: dict[str, list[str]] = {team: [] for team in quorum}
    for i, person in sorted(holder.items()):
        out[slots[i]].append(person)
    return out


def judge_approvals(
    check: ApprovalCheck,
    subject: Subject,
    approvals: Sequence[Approval],
    users: Mapping[str, User],
    teams_of: Mapping[str, set[str]],
    now: datetime,
) -> tuple[CheckResult, list[Counted]]:
    """The approval check: passed when every team has its quorum of distinct, valid approvals.
    ``teams_of``: approver (key) -> the keys of the teams they are in now."""
    judged = [_judge(a, check, subject, users, now) for a in approvals]
    valid = sorted({key(c.approval.username) for c in judged if c.counts})
    quorum = {key(tq.team): tq.quorum for tq in check.teams}
    filled = _assign(valid, teams_of, quorum)
    names = {key(tq.team): tq.team for tq in check.teams}
    parts, missing = [], []
    for team, n in quorum.items():
        have = len(filled[team])
        parts.append(f"{names[team]} {have} of {n}")
        if have < n:
            missing.append(f"{n - have} from {names[team]}")
    title = "Approval by " + " and ".join(
        f"{names[t]}" + (f" ({n})" if n > 1 else "") for t, n in quorum.items()
    )
    if missing:
        refused = [c.reason for c in judged if not c.counts]
        why = f"waiting for {', '.join(missing)} ({'; '.join(parts)})"
        if refused:
            why += "; not counted: " + "; ".join(refused)
        return CheckResult(CheckKind.APPROVAL, title, CheckState.PENDING, why), judged
    by = ", ".join(f"{names[t]}: {', '.join(p)}" for t, p in filled.items())
    return CheckResult(CheckKind.APPROVAL, title, CheckState.PASSED, f"approved ({by})"), judged


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    teams: tuple[str, ...] = ()


def named_approver(
    principal: perms.Principal,
    teams: Sequence[str],
    checks: Sequence[ApprovalCheck],
    project: perms.ProjectRef,
    environment: str,
) -> Verdict:
    """Is this person one of the approvers the checks name: a member of a named team who may
    answer approvals for the project and environment? (Who sees what they approve, and the
    first half of ``may_approve``.)"""
    if not checks:
        return Verdict(False, f"{environment} asks for no approvals")
    mine = {key(t) for t in teams}
    named = {key(tq.team): tq.team for c in checks for tq in c.teams}
    through = tuple(named[t] for t in named if t in mine)
    if not through:
        return Verdict(
            False,
            f"only members of {', '.join(named.values())} approve deployments to "
            f"{environment}; {principal.username} is in none of them",
        )
    allowed = authorize_approval(principal, project, environment)
    if not allowed.allowed:
        return Verdict(False, allowed.reason)
    return Verdict(True, f"{principal.username} approves as {', '.join(through)}", through)


def may_approve(
    principal: perms.Principal,
    teams: Sequence[str],
    checks: Sequence[ApprovalCheck],
    subject: Subject,
    user: User | None,
) -> Verdict:
    """May this person approve the subject ahead of time? A named approver
    (``named_approver``), and not the release's creator nor an author of its commits when the
    checks block them."""
    named = named_approver(principal, teams, checks, subject.project, subject.environment)
    if not named.allowed:
        return named
    who = principal.username
    creator = subject.release_created_by
    if creator and key(who) == key(creator) and any(c.block_creator for c in checks):
        return Verdict(False, "you created this release; someone else must approve it")
    if any(c.block_commit_authors for c in checks) and authored(user, who, subject.commit_authors):
        return Verdict(False, "you wrote commits in this release; someone else must approve it")
    return Verdict(True, f"{who} may approve as {', '.join(named.teams)}", named.teams)


def authorize_approval(
    principal: perms.Principal, project: perms.ProjectRef, environment: str
) -> perms.Decision:
    """The permission an approval takes: InterruptionSubmit, or InterruptionViewSubmitResponsible
    (one is in a named team), for the project and environment."""
    decision = perms.authorize(
        principal, perms.Permission.InterruptionSubmit, project=project, environment=environment
    )
    if decision.allowed:
        return decision
    return perms.authorize(
        principal,
        perms.Permission.InterruptionViewSubmitResponsible,
        project=project,
        environment=environment,
    )


# ------------------------------------------------------------------ the evaluation


@dataclass(frozen=True)
class Evaluation:
    results: tuple[CheckResult, ...]
    # A scheduled deployment whose window closed before it could start: cancel it, saying why.
    expired: str = ""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and not self.expired

    def waiting_for(self) -> str:
        return "; ".join(f"{r.name}: {r.reason}" for r in self.results if not r.passed)


def evaluate(
    checks: Sequence[EnvironmentChecks],
    subject: Subject,
    approvals: Sequence[Approval],
    users: Mapping[str, User],
    teams_of: Mapping[str, set[str]],
    now: datetime,
) -> Evaluation:
    """Every check of ``checks`` for ``subject`` at ``now``, in the order a person asks."""
    results: list[CheckResult] = []
    expired = ""
    if subject.start_at is not None and subject.start_at > now:
        results.append(
            CheckResult(
                CheckKind.WINDOW,
                "Scheduled start",
                CheckState.PENDING,
                f"queued to start at {stamp(subject.start_at)}",
            )
        )
    freezes = [f for c in checks for f in c.freezes]
    frozen = active_freeze(freezes, now)
    if frozen is not None:
        freeze, end = frozen
        name = f"Freeze {freeze.name}"
        if subject.freeze_override:
            results.append(
                CheckResult(
                    CheckKind.FREEZE,
                    name,
                    CheckState.PASSED,
                    f"in force until {stamp(end)}, overridden: {subject.freeze_override}",
                )
            )
        else:
            results.append(
                CheckResult(
                    CheckKind.FREEZE,
                    name,
                    CheckState.PENDING,
                    f"nothing deploys until {stamp(end)}",
                )
            )
    elif freezes:
        results.append(
            CheckResult(CheckKind.FREEZE, "Freezes", CheckState.PASSED, "no freeze in force")
        )
    for c in checks:
        if not c.windows:
            continue
        state = window_state(c.windows, now)
        name = "Change window " + "; ".join(describe_window(w) for w in c.windows)
        if state.open:
            reason = f"open until {stamp(state.until)}" if state.until else "open"
            results.append(CheckResult(CheckKind.WINDOW, name, CheckState.PASSED, reason))
            continue
        when = f"opens {stamp(state.until)}" if state.until else "never opens"
        results.append(CheckResult(CheckKind.WINDOW, name, CheckState.PENDING, f"closed: {when}"))
        if subject.start_at is not None and subject.start_at <= now:
            expired = f"the change window closed before the deployment could start ({when})"
    for check in approval_checks(checks):
        result, _ = judge_approvals(check, subject, approvals, users, teams_of, now)
        results.append(result)
    if runs_latest(checks):
        results.append(
            CheckResult(
                CheckKind.RUN_LATEST,
                "Run latest",
                CheckState.PASSED,
                "a newer deployment of the project cancels this one while it has not started",
            )
        )
    return Evaluation(tuple(results), expired)


def scheduled_problem(
    checks: Sequence[EnvironmentChecks], start_at: datetime, now: datetime
) -> str | None:
    """Why a deployment cannot be queued to start at ``start_at``: in the past, too far ahead,
    or outside every change window the environment has."""
    if start_at < now - timedelta(minutes=1):
        return f"{stamp(start_at)} is in the past"
    if start_at > now + timedelta(days=30):
        return "a deployment can be queued at most 30 days ahead"
    for c in checks:
        if c.windows and not window_state(c.windows, start_at).open:
            windows = "; ".join(describe_window(w) for w in c.windows)
            return f"{stamp(start_at)} is outside the change window ({windows})"
    return None


# ------------------------------------------------------------------ validation


def checks_problems(
    env: Environment,
    path: tuple[str | int, ...],
    teams: set[str],
    groups: set[str],
) -> list[Problem]:
    """What is wrong with an environment's checks; ``teams``/``groups``: the keys that exist."""
    problems: list[Problem] = []
    for i, c in enumerate(env.checks):
        here = (*path, "checks", i)
        for g in c.project_groups:
            if key(g) not in groups:
                problems.append(Problem((*here, "project_groups"), f'no project group "{g}"'))
        if c.approval is None and not c.windows and not c.freezes and not c.run_latest:
            problems.append(
                Problem(here, "checks nothing: give approval, windows, freezes or run_latest")
            )
        if c.approval is not None:
            a = (*here, "approval")
            if not c.approval.teams:
                problems.append(Problem((*a, "teams"), "name at least one team"))
            seen: set[str] = set()
            for j, tq in enumerate(c.approval.teams):
                if key(tq.team) not in teams:
                    problems.append(Problem((*a, "teams", j), f'no team "{tq.team}"'))
                if key(tq.team) in seen:
                    problems.append(Problem((*a, "teams", j), f'"{tq.team}" is named twice'))
                seen.add(key(tq.team))
                if tq.quorum < 1:
                    problems.append(Problem((*a, "teams", j, "quorum"), "must be at least 1"))
            problems += field_problems(c.approval.fields, (*a, "fields"))
        for j, w in enumerate(c.windows):
            problems += _window_problems(w, (*here, "windows", j))
        for j, f in enumerate(c.freezes):
            problems += _freeze_problems(f, (*here, "freezes", j))
    return problems


def _window_problems(w: ChangeWindow, path: tuple[str | int, ...]) -> list[Problem]:
    problems = []
    for name, value in (("start", w.start), ("end", w.end)):
        if _clock(value) is None:
            problems.append(Problem((*path, name), f'"{value}" is not a time of day (HH:MM)'))
    if _clock(w.start) is not None and _clock(w.start) == _clock(w.end):
        problems.append(Problem(path, "starts and ends at the same time"))
    for d in w.days:
        if key(d)[:3] not in DAYS or len(key(d)) < 3:
            problems.append(Problem((*path, "days"), f'"{d}" is not a day (mon … sun)'))
    if _zone(w.time_zone) is None:
        problems.append(
            Problem((*path, "time_zone"), f'"{w.time_zone}" is not a time zone (Europe/Berlin)')
        )
    return problems


def _freeze_problems(f: Freeze, path: tuple[str | int, ...]) -> list[Problem]:
    problems = []
    start, end = parse_instant(f.start), parse_instant(f.end)
    for name, value, parsed in (("start", f.start, start), ("end", f.end, end)):
        if parsed is None:
            problems.append(
                Problem(
                    (*path, name),
                    f'"{value}" is not an instant with its offset (2026-12-24T00:00:00Z)',
                )
            )
    if start is not None and end is not None and end <= start:
        problems.append(Problem((*path, "end"), "must be after the start"))
    if not f.name.strip():
        problems.append(Problem((*path, "name"), "is required"))
    return problems
