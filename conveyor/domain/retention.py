"""Retention: what the policies of the lifecycles would delete now, given the facts.

Pure: the service reads the facts (releases, deployments, what each environment runs, pins,
packages) and carries the plan out; nothing here reads or writes. The rules (docs/retention.md):

- A release follows the lifecycle of its channel (the project's unless the channel has its own),
  and is counted among the releases of its channel only: a hotfix line's releases never push
  the main line's out, nor the other way round (as Octopus's discrete channel releases).
- A phase's ``release_retention`` keeps, among the channel's releases deployed to that phase,
  the last N (items) or those deployed there in the last N days. A phase without a policy takes
  the nearest earlier phase's that has one, else the lifecycle's (as Octopus). A release deployed
  to several phases is deleted only when every one of them lets it go; a release deployed
  nowhere follows the lifecycle's policy, over all the channel's releases. No policy anywhere on
  the way: kept forever.
- Never deleted: a release an environment currently runs, its previous one (rollback), a pinned
  release, a release with a deployment not finished yet, and the child releases (Deploy All) of
  any release kept, recursively. For a project with releases in several channels, what each
  channel's dashboard line shows counts as current too: per channel and environment, the latest
  deployment, the one before it, and the release last deployed there successfully.
- The deployments of a deleted release go with it. Of a kept release, a deployment goes once the
  phase's policy lets it go (per project, channel and environment), unless it is an
  environment's current or previous deployment, not finished, the newest of its release in that
  environment, or the child of a deployment kept.
- A task log goes (its deployment stays) once the phase's ``task_log_retention`` (inherited the
  same way) lets it go, per project, channel and environment; never the log of an environment's
  current deployment or of a deployment not finished.
- A package version goes when no kept release pinned it and every lifecycle the projects that
  use the package follow (their channels' included) has a ``package_retention`` that lets it go
  (the last N versions by precedence, or pushed in the last N days). A package that no project
  uses is kept.
- Audit events are never deleted: the service records each pruning as an event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from conveyor.domain import permissions as perms
from conveyor.domain.channels import DEFAULT_CHANNEL
from conveyor.domain.codec_retention import describe
from conveyor.domain.documents import Lifecycle, Phase, RetentionPolicy, RetentionUnit, key
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version

# ---------------------------------------------------------------- the facts

# The facts and the removals are named tuples, not dataclasses: a large history has hundreds
# of thousands of them, and a tuple is made several times faster (bench/bench_retention.py).


class ReleaseFact(NamedTuple):
    id: int
    project: str
    version: str
    created: datetime
    # (package id, version) pairs the release pinned.
    packages: tuple[tuple[str, str], ...] = ()
    # The release ids its deploy_release steps chose.
    children: tuple[int, ...] = ()
    channel: str = DEFAULT_CHANNEL


class DeploymentFact(NamedTuple):
    id: int
    release: int
    project: str
    environment: str
    created: datetime
    finished: bool = True
    parent: int | None = None
    task: int | None = None
    # False once its log was removed (nothing left to remove).
    has_log: bool = True
    succeeded: bool = True


class PackageFact(NamedTuple):
    id: int
    package_id: str
    version: str
    created: datetime
    size: int = 0


@dataclass(frozen=True)
class Facts:
    now: datetime
    # Project name -> its lifecycle (a project left out keeps everything).
    lifecycles: Mapping[str, Lifecycle]
    releases: Sequence[ReleaseFact] = ()
    deployments: Sequence[DeploymentFact] = ()
    # What environments run: the dashboard's current and previous deployments, and the
    # releases they (and the last successful deployment) are of.
    current_deployments: frozenset[int] = frozenset()
    current_releases: frozenset[int] = frozenset()
    pinned_releases: frozenset[int] = frozenset()
    packages: Sequence[PackageFact] = ()
    # Package id (any case) -> the projects that use it (their process, or a release).
    package_users: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # (package id, version) pinned by releases these facts leave out (projects kept forever).
    other_pins: frozenset[tuple[str, str]] = frozenset()
    # (project name, channel key) -> the lifecycle of a channel that has its own.
    channel_lifecycles: Mapping[tuple[str, str], Lifecycle] = field(default_factory=dict)
    # Releases that a release these facts leave out chose (Deploy All), and that one stays.
    kept_elsewhere: frozenset[int] = frozenset()

    def lifecycle_of(self, project: str, channel: str) -> Lifecycle | None:
        """The lifecycle a release of ``channel`` follows (None: kept forever)."""
        own = self.channel_lifecycles.get((project, key(channel)))
        return own if own is not None else self.lifecycles.get(project)

    def lifecycles_of(self, project: str) -> list[Lifecycle | None]:
        """Every lifecycle the project's releases may follow."""
        own = [lc for (name, _), lc in self.channel_lifecycles.items() if name == project]
        return [self.lifecycles.get(project), *own]


# ---------------------------------------------------------------- the plan


class Removal(NamedTuple):
    """One thing the plan deletes: its row id, what it is, and why it may go."""

    id: int
    project: str
    what: str
    reason: str
    environment: str = ""
    release: int | None = None
    task: int | None = None
    size: int = 0


@dataclass(frozen=True)
class Plan:
    releases: tuple[Removal, ...] = ()
    # Deployments that go, those of the releases that go included.
    deployments: tuple[Removal, ...] = ()
    # Logs that go from deployments that stay.
    task_logs: tuple[Removal, ...] = ()
    packages: tuple[Removal, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.releases or self.deployments or self.task_logs or self.packages)

    def counts(self) -> dict[str, int]:
        return {
            "releases": len(self.releases),
            "deployments": len(self.deployments),
            "task_logs": len(self.task_logs),
            "packages": len(self.packages),
        }


# Reading the plan without AdministerSystem: these, unscoped (the Auditor role has them).
READ_PERMISSIONS = (perms.Permission.ReleaseView, perms.Permission.DeploymentView)


def may_read_plan(principal: perms.Principal) -> bool:
    """The plan names releases and deployments of every project and environment: it is for
    administrators and for those who may read all of those anyway."""
    if perms.authorize(principal, perms.Permission.AdministerSystem).allowed:
        return True
    return all(perms.unscoped(principal, p) for p in READ_PERMISSIONS)


def has_policy(lifecycle: Lifecycle) -> bool:
    return any(
        p is not None
        for p in (
            lifecycle.release_retention,
            lifecycle.task_log_retention,
            lifecycle.package_retention,
            *(ph.release_retention for ph in lifecycle.phases),
            *(ph.task_log_retention for ph in lifecycle.phases),
        )
    )


def phase_of(lifecycle: Lifecycle, environment: str) -> Phase | None:
    wanted = key(environment)
    return next((ph for ph in lifecycle.phases if wanted in map(key, ph.environments)), None)


def _inherited(
    lifecycle: Lifecycle, phase: Phase | None, attr: str
) -> tuple[RetentionPolicy | None, Phase | None]:
    """A phase's policy and the phase it is written on: its own, else the nearest earlier
    phase's that has one, else the lifecycle's (None). Octopus's rule: "phase policies inherit
    from the latest previous phase with a custom policy, else from the lifecycle"."""
    if phase is not None:
        found: tuple[RetentionPolicy | None, Phase | None] = (None, None)
        for ph in lifecycle.phases:
            own = getattr(ph, attr)
            if own is not None:
                found = (own, ph)
            if key(ph.name) == key(phase.name):
                if found[0] is not None:
                    return found
                break
    return getattr(lifecycle, attr), None


def release_policy(lifecycle: Lifecycle, phase: Phase | None) -> RetentionPolicy | None:
    return _inherited(lifecycle, phase, "release_retention")[0]


def task_log_policy(lifecycle: Lifecycle, phase: Phase | None) -> RetentionPolicy | None:
    return _inherited(lifecycle, phase, "task_log_retention")[0]


def policy_source(lifecycle: Lifecycle, phase: Phase, attr: str) -> str:
    """Where a phase's policy comes from: "own", an earlier phase's name, or "lifecycle"."""
    policy, written = _inherited(lifecycle, phase, attr)
    if policy is None or written is None:
        return "lifecycle"
    return "own" if key(written.name) == key(phase.name) else written.name


def _keeps(policy: RetentionPolicy | None, rank: int, when: datetime, now: datetime) -> bool:
    """Whether ``policy`` keeps the item that is ``rank``-th newest (0: newest), dated ``when``."""
    if policy is None:
        return True
    if policy.unit == RetentionUnit.DAYS:
        return when >= now - timedelta(days=policy.keep)
    return rank < policy.keep


# ---------------------------------------------------------------- planning

# A line of releases: (project, channel key). Releases are counted per line.
Line = tuple[str, str]


class _Lines:
    """Which line each release is on, the projects with releases on several, and each line's
    lifecycle and phases (looked up once per line and environment, not once per row)."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.of: dict[int, Line] = {}
        self.names: dict[Line, str] = {}
        seen: dict[str, set[str]] = defaultdict(set)
        for r in facts.releases:
            line = (r.project, key(r.channel))
            self.of[r.id] = line
            self.names.setdefault(line, r.channel)
            seen[r.project].add(line[1])
        self.several = frozenset(p for p, chs in seen.items() if len(chs) > 1)
        self._lifecycles: dict[Line, Lifecycle | None] = {}
        self._phases: dict[tuple[Line, str], Phase | None] = {}

    def line(self, d: DeploymentFact) -> Line:
        return self.of.get(d.release, (d.project, key(DEFAULT_CHANNEL)))

    def lifecycle(self, line: Line) -> Lifecycle | None:
        if line not in self._lifecycles:
            name = self.names.get(line, line[1])
            self._lifecycles[line] = self.facts.lifecycle_of(line[0], name)
        return self._lifecycles[line]

    def phase(self, line: Line, environment: str) -> Phase | None:
        at = (line, environment)
        if at not in self._phases:
            lc = self.lifecycle(line)
            self._phases[at] = phase_of(lc, environment) if lc is not None else None
        return self._phases[at]

    def said(self, line: Line) -> str:
        """ " in channel Hotfix" where the project has several, else nothing."""
        return f" in channel {self.names.get(line, line[1])}" if line[0] in self.several else ""


def plan(facts: Facts) -> Plan:
    releases = {r.id: r for r in facts.releases}
    lines = _Lines(facts)
    current = _current(facts, lines)
    kept_releases, reasons = _kept_releases(facts, lines, current)
    gone_releases = [r for r in facts.releases if r.id not in kept_releases]
    by_release: dict[int, list[DeploymentFact]] = defaultdict(list)
    for d in facts.deployments:
        by_release[d.release].append(d)
    deployments: list[Removal] = []
    for r in gone_releases:
        deployments.extend(
            _deployment_removal(d, r, f"its release {r.version} is deleted")
            for d in by_release.get(r.id, [])
        )
    kept_deployments = [d for d in facts.deployments if d.release in kept_releases]
    gone_deployments = _prune_deployments(facts, lines, current, kept_deployments)
    deployments.extend(
        _deployment_removal(d, releases[d.release], why) for d, why in gone_deployments
    )
    gone_ids = {d.id for d, _ in gone_deployments}
    staying = [d for d in kept_deployments if d.id not in gone_ids]
    return Plan(
        releases=tuple(
            Removal(r.id, r.project, f"{r.project} {r.version}", reasons[r.id], release=r.id)
            for r in gone_releases
        ),
        deployments=tuple(sorted(deployments, key=lambda x: x.id)),
        task_logs=tuple(_prune_logs(facts, lines, current, staying, releases)),
        packages=tuple(_prune_packages(facts, [releases[i] for i in sorted(kept_releases)])),
    )


def _deployment_removal(d: DeploymentFact, r: ReleaseFact, reason: str) -> Removal:
    return Removal(
        d.id,
        d.project,
        f"{d.project} {r.version} to {d.environment}",
        reason,
        environment=d.environment,
        release=d.release,
        task=d.task,
    )


def _groups(
    deployments: Iterable[DeploymentFact], lines: _Lines
) -> dict[tuple[Line, str], list[DeploymentFact]]:
    """Per line and environment: the deployments newest first."""
    out: dict[tuple[Line, str], list[DeploymentFact]] = defaultdict(list)
    for d in sorted(deployments, key=lambda d: d.id, reverse=True):
        out[(lines.line(d), key(d.environment))].append(d)
    return out


@dataclass(frozen=True)
class _Current:
    deployments: frozenset[int]
    releases: frozenset[int]


def _current(facts: Facts, lines: _Lines) -> _Current:
    """What environments run: the dashboard's cells (the facts), and for a project with
    releases in several channels each channel's line on the dashboard: per channel and
    environment the latest deployment, the one before it (rollback), and the last success."""
    deployments = set(facts.current_deployments)
    releases = set(facts.current_releases)
    several = [d for d in facts.deployments if d.project in lines.several]
    for group in _groups(several, lines).values():
        for d in group[:2]:
            deployments.add(d.id)
            releases.add(d.release)
        success = next((d for d in group if d.succeeded and d.finished), None)
        if success is not None:
            releases.add(success.release)
    return _Current(frozenset(deployments), frozenset(releases))


def _kept_releases(
    facts: Facts, lines: _Lines, current: _Current
) -> tuple[set[int], dict[int, str]]:
    """The releases kept (protected, kept by a policy, or a child of one kept), and for the
    others why they may go."""
    now = facts.now
    kept: set[int] = set()
    reasons: dict[int, str] = {}
    reached: dict[int, dict[str | None, datetime]] = defaultdict(dict)
    protected = set(current.releases | facts.pinned_releases | facts.kept_elsewhere)
    for d in facts.deployments:
        if not d.finished:
            protected.add(d.release)
        line = lines.line(d)
        if lines.lifecycle(line) is None:
            continue
        ph = lines.phase(line, d.environment)
        name = ph.name if ph is not None else None
        seen = reached[d.release].get(name)
        reached[d.release][name] = max(seen, d.created) if seen else d.created
    by_line: dict[Line, list[ReleaseFact]] = defaultdict(list)
    for r in facts.releases:
        by_line[lines.of[r.id]].append(r)
    for line, rels in by_line.items():
        lc = lines.lifecycle(line)
        if lc is None:
            kept.update(r.id for r in rels)
            continue
        said = lines.said(line)
        rels = sorted(rels, key=lambda r: r.id, reverse=True)
        phases = {ph.name: ph for ph in lc.phases}
        # Per phase: the line's releases there, newest first (by id: the order they were made).
        in_phase: dict[str | None, dict[int, int]] = defaultdict(dict)
        for r in rels:
            for name in reached.get(r.id, {}):
                in_phase[name][r.id] = len(in_phase[name])
        policies = {n: release_policy(lc, phases.get(n) if n else None) for n in in_phase}
        why = {
            n: f"{n or 'outside the lifecycle'} keeps {_what(p)}{said}" for n, p in policies.items()
        }
        for rank, r in enumerate(rels):
            if r.id in protected:
                kept.add(r.id)
                continue
            where = reached.get(r.id, {})
            if not where:
                policy = lc.release_retention
                if _keeps(policy, rank, r.created, now):
                    kept.add(r.id)
                else:
                    reasons[r.id] = (
                        f"deployed nowhere, and the lifecycle keeps {_what(policy)}{said}"
                    )
                continue
            let_go = []
            for name, when in where.items():
                policy = policies[name]
                if _keeps(policy, in_phase[name][r.id], when, now):
                    kept.add(r.id)
                    break
                let_go.append(why[name])
            else:
                reasons[r.id] = "; ".join(let_go)
    # Children of kept releases stay, however deep the trains go.
    releases = {r.id: r for r in facts.releases}
    todo = list(kept)
    while todo:
        parent = releases.get(todo.pop())
        for child in parent.children if parent else ():
            if child not in kept and child in releases:
                kept.add(child)
                todo.append(child)
    return kept, reasons


def _what(policy: RetentionPolicy | None) -> str:
    if policy is not None and policy.unit == RetentionUnit.DAYS:
        return f"those deployed in the last {describe(policy)}"
    return describe(policy, "releases")


def _prune_deployments(
    facts: Facts, lines: _Lines, current: _Current, deployments: Sequence[DeploymentFact]
) -> list[tuple[DeploymentFact, str]]:
    """The deployments of kept releases that their phase's release policy lets go."""
    newest_of_release: set[int] = set()
    seen: set[tuple[int, str]] = set()
    for d in sorted(deployments, key=lambda d: d.id, reverse=True):
        if (d.release, key(d.environment)) not in seen:
            seen.add((d.release, key(d.environment)))
            newest_of_release.add(d.id)
    candidates: dict[int, str] = {}
    for (line, _), group in _groups(deployments, lines).items():
        lc = lines.lifecycle(line)
        if lc is None:
            continue
        policy = release_policy(lc, lines.phase(line, group[0].environment))
        what = _what(policy).replace("releases", "deployments")
        for rank, d in enumerate(group):
            if (
                d.id in current.deployments
                or not d.finished
                or d.id in newest_of_release
                or _keeps(policy, rank, d.created, facts.now)
            ):
                continue
            candidates[d.id] = (
                f"{d.environment} keeps {what}{lines.said(line)}, "
                "and a newer deployment of this release is there"
            )
    # A child deployment stays with its parent (parents are older: lower ids come first).
    kept = {d.id for d in deployments if d.id not in candidates}
    for d in sorted(deployments, key=lambda d: d.id):
        if d.id in candidates and d.parent is not None and d.parent in kept:
            del candidates[d.id]
            kept.add(d.id)
    return [(d, candidates[d.id]) for d in deployments if d.id in candidates]


def _prune_logs(
    facts: Facts,
    lines: _Lines,
    current: _Current,
    deployments: Sequence[DeploymentFact],
    releases: Mapping[int, ReleaseFact],
) -> list[Removal]:
    out = []
    for (line, _), group in _groups(deployments, lines).items():
        lc = lines.lifecycle(line)
        if lc is None:
            continue
        policy = task_log_policy(lc, lines.phase(line, group[0].environment))
        for rank, d in enumerate(group):
            if (
                d.task is None
                or not d.has_log
                or not d.finished
                or d.id in current.deployments
                or _keeps(policy, rank, d.created, facts.now)
            ):
                continue
            why = f"{d.environment} keeps the logs of {_logs(policy)}{lines.said(line)}"
            out.append(_deployment_removal(d, releases[d.release], why))
    return sorted(out, key=lambda x: x.id)


def _logs(policy: RetentionPolicy | None) -> str:
    if policy is not None and policy.unit == RetentionUnit.DAYS:
        return f"the last {describe(policy)}"
    return describe(policy, "deployments")


def _prune_packages(facts: Facts, kept_releases: Sequence[ReleaseFact]) -> list[Removal]:
    users = {package_key(p): projects for p, projects in facts.package_users.items()}
    # Only the packages some policy governs are parsed (a version is parsed once).
    policies_of: dict[str, list[RetentionPolicy] | None] = {}
    by_package: dict[str, list[tuple[Version, PackageFact]]] = defaultdict(list)
    for p in facts.packages:
        package = package_key(p.package_id)
        if package not in policies_of:
            policies_of[package] = _package_policies(facts, users.get(package, frozenset()))
        if policies_of[package] is not None and (version := _parsed(p.version)) is not None:
            by_package[package].append((version, p))
    pins = [pin for r in kept_releases for pin in r.packages] + list(facts.other_pins)
    pinned = {
        (package_key(package), version)
        for package, text in pins
        if package_key(package) in by_package and (version := _parsed(text)) is not None
    }
    out = []
    for package, found in by_package.items():
        policies = policies_of[package]
        assert policies is not None
        found.sort(key=lambda vp: vp[0], reverse=True)
        for rank, (version, p) in enumerate(found):
            if (package, version) in pinned or any(
                _keeps(policy, rank, p.created, facts.now) for policy in policies
            ):
                continue
            kept = " or ".join(sorted({_versions(policy) for policy in policies}))
            out.append(
                Removal(
                    p.id,
                    "",
                    f"{p.package_id} {p.version}",
                    f"no kept release pinned it, and the feed keeps {kept}",
                    size=p.size,
                )
            )
    return sorted(out, key=lambda x: x.id)


def _parsed(text: str) -> Version | None:
    try:
        return Version(text)
    except ValidationFailed:
        return None


def _package_policies(facts: Facts, projects: frozenset[str]) -> list[RetentionPolicy] | None:
    """The package policies of the lifecycles the projects that use a package follow (their
    channels' too); None when any of them keeps it forever (or nobody uses it)."""
    if not projects:
        return None
    policies = []
    for project in projects:
        for lc in facts.lifecycles_of(project):
            if lc is None or lc.package_retention is None:
                return None
            policies.append(lc.package_retention)
    return policies


def _versions(policy: RetentionPolicy) -> str:
    if policy.unit == RetentionUnit.DAYS:
        return f"what was pushed in the last {describe(policy)}"
    return describe(policy, "versions")
