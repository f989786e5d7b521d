"""Delivery insights (the four DORA keys and a few more): what each number means, as pure formulas.

The store (``conveyor.store.facts``) computes each deployment's facts in SQL when it ends, and
the service (``conveyor.services.insights``) sums them; this module holds the rules those facts
and sums follow and turns them into the figures people read. ``facts`` is the same rule over
a constructed history, in Python: it is what the tests check against known answers, and what
the SQL is checked against; ``refreshed_span``, which facts a deployment's end rewrites.

The rules, for the deployments that ended (success, failed or timed out; a canceled deployment
changed nothing and counts nowhere) within the range ``[since, until)``:

- **deployment frequency**: successful deployments per day of the range;
- **lead time for changes**: from the earliest commit time among the commits a successful
  deployment brings to its environment (those of the project's releases after the release the
  environment last ran successfully, up to the one deployed), or, when it brings none with a
  time, the release's own commit (``commit_columns``), to the deployment's end;
- **change failure rate**: the share of deployments that were a failure: they failed or timed
  out, a guided failure in them was ignored, or the next deployment of the project to the
  environment that ended (not canceled) went back to an earlier release (a rollback);
- **time to restore**: from a failure to the next successful deployment of the same project in
  the same environment; failures that one success restores are one incident, timed from the
  first of them;
- **deployment duration**: from the start of a deployment to its end;
- **waiting for approvals**: how long a deployment waited for each approval (a manual
  intervention, from its asking to its answer, by its responsible teams; an approval given
  after the deployment was queued, from queueing to the approval, by the approver's teams);
- **approvals' share of lead time**: the summed approval waits of the deployments that have a
  lead time, over their summed lead times.

Releases are ordered by creation (a release's number), which is the order the build server
made them in; a deployment of an earlier release than the one the environment ran is a rollback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SUCCESS = "success"
FAILED_STATES = ("failed", "timed_out")
ENDED_STATES = (SUCCESS, *FAILED_STATES)
DEFAULT_DAYS = 30
MAX_DAYS = 3 * 366


NO_TEAM = "(no team)"


@dataclass(frozen=True)
class Wait:
    """One wait for an approval: a manual intervention (``intervention``: the run stopped
    until its answer) or an approval given ahead of time but after the deployment was queued
    (``approval``: it was held until then). ``teams``: who was asked, or who approved."""

    kind: str
    teams: tuple[str, ...]
    seconds: float


def deployment_wait(waits: Iterable[Wait]) -> float:
    """How long a deployment waited for approvals: interventions one after the other, plus
    the hold before it started, which ends with the last approval it needed."""
    asked = [w for w in waits if w.kind == "intervention"]
    held = [w.seconds for w in waits if w.kind != "intervention"]
    return sum(w.seconds for w in asked) + max(held, default=0.0)


@dataclass(frozen=True)
class Deployment:
    """One deployment of a constructed history (tests) or as the store knows it."""

    id: int
    project: str
    environment: str
    release: int  # the release's number: releases are ordered by it
    state: str
    queued: datetime
    started: datetime | None
    completed: datetime | None
    guided_failure_ignored: bool = False
    approval_waits: tuple[Wait, ...] = ()


@dataclass(frozen=True)
class Release:
    id: int
    project: str
    commit_times: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Fact:
    """What one ended deployment adds to the sums."""

    deployment: Deployment
    failure: bool
    lead_seconds: float | None
    duration_seconds: float | None
    approval_seconds: float
    # When the failure was restored (the next success's end), None while it is not.
    restored_at: datetime | None = None


@dataclass
class Totals:
    """Additive sums over some deployments: what SQL returns per (project, environment) and
    what adding up projects into groups, or everything into one line, keeps exact."""

    deployments: int = 0
    successes: int = 0
    failures: int = 0
    lead_count: int = 0
    lead_seconds: float = 0.0
    # Approval waits of the deployments that have a lead time (for the share of lead time).
    lead_approval_seconds: float = 0.0
    duration_count: int = 0
    duration_seconds: float = 0.0
    restored: int = 0
    restore_seconds: float = 0.0
    open_failures: int = 0

    def add(self, other: Totals) -> Totals:
        self.deployments += other.deployments
        self.successes += other.successes
        self.failures += other.failures
        self.lead_count += other.lead_count
        self.lead_seconds += other.lead_seconds
        self.lead_approval_seconds += other.lead_approval_seconds
        self.duration_count += other.duration_count
        self.duration_seconds += other.duration_seconds
        self.restored += other.restored
        self.restore_seconds += other.restore_seconds
        self.open_failures += other.open_failures
        return self


@dataclass(frozen=True)
class Metrics:
    deployments: int
    successes: int
    failures: int
    deployment_frequency: float  # successful deployments per day
    lead_time_seconds: float | None  # mean
    lead_time_count: int
    change_failure_rate: float | None  # 0..1
    time_to_restore_seconds: float | None  # mean over restored incidents
    restored: int
    open_failures: int
    duration_seconds: float | None  # mean
    approvals_share_of_lead_time: float | None  # 0..1


@dataclass(frozen=True)
class TeamWait:
    team: str
    waits: int
    seconds: float

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.waits if self.waits else 0.0


@dataclass
class Window:
    since: datetime
    until: datetime
    days: float = field(init=False)

    def __post_init__(self) -> None:
        self.days = (self.until - self.since).total_seconds() / 86400


# ---------------------------------------------------------------- commit times


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def commit_columns(build: Mapping[str, Any] | None) -> dict[str, datetime | None]:
    """What a release keeps of its build information for lead times, so that SQL reads two
    columns rather than parse every release's commit list: ``first_commit_at``, the earliest
    commit time, and ``commit_at``, the time of the release's own commit (the build's
    ``commit`` when its time is known, else the newest). None where no commit has a time."""
    commits = (build or {}).get("commits") or []
    times: list[datetime] = []
    own: datetime | None = None
    for commit in commits if isinstance(commits, list) else []:
        if not isinstance(commit, Mapping):
            continue
        moment = _when(commit.get("timestamp"))
        if moment is None:
            continue
        times.append(moment)
        if build and commit.get("sha") and commit.get("sha") == build.get("commit"):
            own = moment
    return {
        "first_commit_at": min(times, default=None),
        "commit_at": own or max(times, default=None),
    }


# ---------------------------------------------------------------- formulas


def mean(total: float, count: int) -> float | None:
    return total / count if count else None


def share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def per_day(count: int, days: float) -> float:
    return count / days if days > 0 else 0.0


def is_change_failure(state: str, guided_failure_ignored: bool, rolled_back: bool) -> bool:
    """A deployment that failed, or that succeeded only by ignoring a failure, or was undone."""
    return state in FAILED_STATES or guided_failure_ignored or rolled_back


def is_rollback(release: int, environment_had: int | None) -> bool:
    return environment_had is not None and release < environment_had


def refreshed_span(
    ended: int, succeeded: bool, success_before: int | None, success_after: int | None
) -> tuple[int, int]:
    """The deployments (first and last number, in the same project and environment) whose
    facts a deployment's end changes: itself; those after the success before it, which it may
    roll back (that success) or restore (the failures since); and, when it succeeded, those up
    to the next success, whose lead time starts from it now (when deployments end out of
    order). Everything else, it cannot change."""
    low = success_before if success_before is not None else 0
    high = success_after if succeeded and success_after is not None else ended
    return low, high


def metrics(totals: Totals, window: Window) -> Metrics:
    return Metrics(
        deployments=totals.deployments,
        successes=totals.successes,
        failures=totals.failures,
        deployment_frequency=per_day(totals.successes, window.days),
        lead_time_seconds=mean(totals.lead_seconds, totals.lead_count),
        lead_time_count=totals.lead_count,
        change_failure_rate=share(totals.failures, totals.deployments),
        time_to_restore_seconds=mean(totals.restore_seconds, totals.restored),
        restored=totals.restored,
        open_failures=totals.open_failures,
        duration_seconds=mean(totals.duration_seconds, totals.duration_count),
        approvals_share_of_lead_time=share(totals.lead_approval_seconds, totals.lead_seconds),
    )


def window(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The range asked for, defaulting to the last ``DEFAULT_DAYS`` days up to now; raises
    ``ValueError`` with what to change when it is empty or too long."""
    end = until or now
    start = since or end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise ValueError("since must be before until")
    if end - start > timedelta(days=MAX_DAYS):
        raise ValueError(f"the range is longer than {MAX_DAYS} days: choose a shorter one")
    return start, end


# ---------------------------------------------------------------- the rule over a history


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def facts(
    history: Sequence[Deployment], releases: Sequence[Release], since: datetime, until: datetime
) -> list[Fact]:
    """The facts of the deployments that ended within ``[since, until)``, from the whole
    history (earlier deployments say what an environment ran; later ones, rollbacks and
    restores)."""
    by_pair: dict[tuple[str, str], list[Deployment]] = {}
    for d in sorted(history, key=lambda d: d.id):
        by_pair.setdefault((d.project, d.environment), []).append(d)
    commits = {r.id: r for r in releases}
    out: list[Fact] = []
    for runs in by_pair.values():
        for i, d in enumerate(runs):
            if d.state not in ENDED_STATES or d.completed is None:
                continue
            if not since <= d.completed < until:
                continue
            following = next((n for n in runs[i + 1 :] if n.state in ENDED_STATES), None)
            rolled_back = (
                d.state == SUCCESS
                and following is not None
                and is_rollback(following.release, d.release)
            )
            failure = is_change_failure(d.state, d.guided_failure_ignored, rolled_back)
            lead = None
            if d.state == SUCCESS:
                before = [p.release for p in runs[:i] if p.state == SUCCESS]
                start = _lead_start(d, before[-1] if before else None, commits)
                lead = _seconds(d.completed, start) if start is not None else None
            duration = _seconds(d.completed, d.started) if d.started is not None else None
            restored_at = None
            if failure:
                restored_at = next(
                    (n.completed for n in runs[i + 1 :] if n.state == SUCCESS and n.completed),
                    None,
                )
            waits = deployment_wait(d.approval_waits)
            out.append(Fact(d, failure, lead, duration, waits, restored_at))
    return out


def _lead_start(
    d: Deployment, environment_had: int | None, releases: dict[int, Release]
) -> datetime | None:
    brought = [
        t
        for r in releases.values()
        if r.project == d.project
        and (environment_had is None or r.id > environment_had)
        and r.id <= d.release
        for t in r.commit_times
    ]
    if brought:
        return min(brought)
    own = releases.get(d.release)
    return max(own.commit_times) if own and own.commit_times else None


def totals(items: Iterable[Fact]) -> Totals:
    """The sums of some facts; incidents are the failures one success restores."""
    out = Totals()
    incidents: dict[tuple[str, str, datetime | None], datetime] = {}
    for f in items:
        d = f.deployment
        out.deployments += 1
        out.successes += d.state == SUCCESS
        out.failures += f.failure
        if f.lead_seconds is not None:
            out.lead_count += 1
            out.lead_seconds += f.lead_seconds
            out.lead_approval_seconds += f.approval_seconds
        if f.duration_seconds is not None:
            out.duration_count += 1
            out.duration_seconds += f.duration_seconds
        if f.failure and d.completed is not None:
            incident = (d.project, d.environment, f.restored_at)
            began = incidents.get(incident)
            incidents[incident] = d.completed if began is None else min(began, d.completed)
    for (_, _, restored_at), began in incidents.items():
        if restored_at is None:
            out.open_failures += 1
        else:
            out.restored += 1
            out.restore_seconds += _seconds(restored_at, began)
    return out


def team_waits(items: Iterable[Fact]) -> list[TeamWait]:
    """Waiting for approvals, per team, most waited first."""
    sums: dict[str, tuple[int, float]] = {}
    for f in items:
        for wait in f.deployment.approval_waits:
            for team in wait.teams or (NO_TEAM,):
                count, total = sums.get(team, (0, 0.0))
                sums[team] = (count + 1, total + wait.seconds)
    return rank_waits(TeamWait(team, c, s) for team, (c, s) in sums.items())


def rank_waits(waits: Iterable[TeamWait]) -> list[TeamWait]:
    return sorted(waits, key=lambda w: (-w.seconds, w.team.lower()))


# ---------------------------------------------------------------- for people


def readable_seconds(seconds: float | None) -> str:
    """``3h 20m``, ``2d 4h``, ``45s``; an em dash for no value."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m {s}s" if s else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def readable_share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
