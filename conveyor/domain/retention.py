"""Retention: what the policies of the lifecycles would delete now, given the facts.

Pure: the service reads the facts (releases, deployments, what each environment runs, pins,
packages) and carries the plan out; nothing here reads or writes. The rules (docs/retention.md):

- A project's releases follow its lifecycle. Each phase's ``release_retention`` (else the
  lifecycle's) keeps, among the releases deployed to that phase, the last N (items) or those
  deployed there in the last N days. A release deployed to several phases is deleted only when
  every one of them lets it go; a release deployed nowhere follows the lifecycle's policy, over
  all the project's releases. No policy anywhere on the way: kept forever.
- Never deleted: a release an environment currently runs, its previous one (rollback), a pinned
  release, a release with a deployment not finished yet, and the child releases (Deploy All) of
  any release kept, recursively.
- The deployments of a deleted release go with it. Of a kept release, a deployment goes once the
  phase's policy lets it go (per project and environment), unless it is an environment's current
  or previous deployment, not finished, the newest of its release in that environment, or the
  child of a deployment kept.
- A task log goes (its deployment stays) once the phase's ``task_log_retention`` (else the
  lifecycle's) lets it go, per project and environment; never the log of an environment's
  current deployment or of a deployment not finished.
- A package version goes when no kept release pinned it and every lifecycle of the projects that
  use the package has a ``package_retention`` that lets it go (the last N versions by precedence,
  or pushed in the last N days). A package that no project uses is kept.
- Audit events are never deleted: the service records each pruning as an event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from conveyor.domain import permissions as perms
from conveyor.domain.codec_retention import describe
from conveyor.domain.documents import Lifecycle, Phase, RetentionPolicy, RetentionUnit, key
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version, is_valid_version

# ---------------------------------------------------------------- the facts


@dataclass(frozen=True)
class ReleaseFact:
    id: int
    project: str
    version: str
    created: datetime
    # (package id, version) pairs the release pinned.
    packages: tuple[tuple[str, str], ...] = ()
    # The release ids its deploy_release steps chose.
    children: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeploymentFact:
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


@dataclass(frozen=True)
class PackageFact:
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


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Removal:
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


def release_policy(lifecycle: Lifecycle, phase: Phase | None) -> RetentionPolicy | None:
    own = phase.release_retention if phase is not None else None
    return own or lifecycle.release_retention


def task_log_policy(lifecycle: Lifecycle, phase: Phase | None) -> RetentionPolicy | None:
    own = phase.task_log_retention if phase is not None else None
    return own or lifecycle.task_log_retention


def _keeps(policy: RetentionPolicy | None, rank: int, when: datetime, now: datetime) -> bool:
    """Whether ``policy`` keeps the item that is ``rank``-th newest (0: newest), dated ``when``."""
    if policy is None:
        return True
    if policy.unit == RetentionUnit.DAYS:
        return when >= now - timedelta(days=policy.keep)
    return rank < policy.keep


# ---------------------------------------------------------------- planning


def plan(facts: Facts) -> Plan:
    releases = {r.id: r for r in facts.releases}
    kept_releases, reasons = _kept_releases(facts)
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
    gone_deployments = _prune_deployments(facts, kept_deployments)
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
        task_logs=tuple(_prune_logs(facts, staying, releases)),
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


def _kept_releases(facts: Facts) -> tuple[set[int], dict[int, str]]:
    """The releases kept (protected, kept by a policy, or a child of one kept), and for the
    others why they may go."""
    now = facts.now
    kept: set[int] = set()
    reasons: dict[int, str] = {}
    reached: dict[int, dict[str | None, datetime]] = defaultdict(dict)
    protected = set(facts.current_releases | facts.pinned_releases)
    for d in facts.deployments:
        if not d.finished:
            protected.add(d.release)
        lc = facts.lifecycles.get(d.project)
        if lc is None:
            continue
        ph = phase_of(lc, d.environment)
        name = ph.name if ph is not None else None
        seen = reached[d.release].get(name)
        reached[d.release][name] = max(seen, d.created) if seen else d.created
    by_project: dict[str, list[ReleaseFact]] = defaultdict(list)
    for r in facts.releases:
        by_project[r.project].append(r)
    for project, rels in by_project.items():
        lc = facts.lifecycles.get(project)
        if lc is None:
            kept.update(r.id for r in rels)
            continue
        rels = sorted(rels, key=lambda r: r.id, reverse=True)
        phases = {ph.name: ph for ph in lc.phases}
        # Per phase: its releases newest first (by id: the order they were created in).
        in_phase: dict[str | None, dict[int, int]] = defaultdict(dict)
        for r in rels:
            for name in reached.get(r.id, {}):
                in_phase[name][r.id] = len(in_phase[name])
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
                    reasons[r.id] = f"deployed nowhere, and the lifecycle keeps {_what(policy)}"
                continue
            let_go = []
            for name, when in where.items():
                policy = release_policy(lc, phases.get(name) if name else None)
                if _keeps(policy, in_phase[name][r.id], when, now):
                    kept.add(r.id)
                    break
                let_go.append(f"{name or 'outside the lifecycle'} keeps {_what(policy)}")
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


def _groups(
    deployments: Iterable[DeploymentFact],
) -> dict[tuple[str, str], list[DeploymentFact]]:
    """Per (project, environment): the deployments newest first."""
    out: dict[tuple[str, str], list[DeploymentFact]] = defaultdict(list)
    for d in sorted(deployments, key=lambda d: d.id, reverse=True):
        out[(d.project, key(d.environment))].append(d)
    return out


def _prune_deployments(
    facts: Facts, deployments: Sequence[DeploymentFact]
) -> list[tuple[DeploymentFact, str]]:
    """The deployments of kept releases that their phase's release policy lets go."""
    newest_of_release: set[int] = set()
    seen: set[tuple[int, str]] = set()
    for d in sorted(deployments, key=lambda d: d.id, reverse=True):
        if (d.release, key(d.environment)) not in seen:
            seen.add((d.release, key(d.environment)))
            newest_of_release.add(d.id)
    candidates: dict[int, str] = {}
    for (project, _), group in _groups(deployments).items():
        lc = facts.lifecycles.get(project)
        if lc is None:
            continue
        policy = release_policy(lc, phase_of(lc, group[0].environment))
        for rank, d in enumerate(group):
            if (
                d.id in facts.current_deployments
                or not d.finished
                or d.id in newest_of_release
                or _keeps(policy, rank, d.created, facts.now)
            ):
                continue
            candidates[d.id] = (
                f"{d.environment} keeps {_what(policy).replace('releases', 'deployments')}, "
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
    facts: Facts, deployments: Sequence[DeploymentFact], releases: Mapping[int, ReleaseFact]
) -> list[Removal]:
    out = []
    for (project, _), group in _groups(deployments).items():
        lc = facts.lifecycles.get(project)
        if lc is None:
            continue
        policy = task_log_policy(lc, phase_of(lc, group[0].environment))
        for rank, d in enumerate(group):
            if (
                d.task is None
                or not d.has_log
                or not d.finished
                or d.id in facts.current_deployments
                or _keeps(policy, rank, d.created, facts.now)
            ):
                continue
            removal = _deployment_removal(
                d, releases[d.release], f"{d.environment} keeps the logs of {_logs(policy)}"
            )
            out.append(removal)
    return sorted(out, key=lambda x: x.id)


def _logs(policy: RetentionPolicy | None) -> str:
    if policy is not None and policy.unit == RetentionUnit.DAYS:
        return f"the last {describe(policy)}"
    return describe(policy, "deployments")


def _prune_packages(facts: Facts, kept_releases: Sequence[ReleaseFact]) -> list[Removal]:
    pins = [pin for r in kept_releases for pin in r.packages] + list(facts.other_pins)
    pinned = {
        (package_key(package), Version(version))
        for package, version in pins
        if is_valid_version(version)
    }
    users = {package_key(p): projects for p, projects in facts.package_users.items()}
    by_package: dict[str, list[PackageFact]] = defaultdict(list)
    for p in facts.packages:
        if is_valid_version(p.version):
            by_package[package_key(p.package_id)].append(p)
    out = []
    for package, versions in by_package.items():
        policies = _package_policies(facts, users.get(package, frozenset()))
        if policies is None:
            continue
        versions.sort(key=lambda p: Version(p.version), reverse=True)
        for rank, p in enumerate(versions):
            if (package, Version(p.version)) in pinned or any(
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


def _package_policies(facts: Facts, projects: frozenset[str]) -> list[RetentionPolicy] | None:
    """The package policies of the lifecycles of the projects that use a package; None when any
    of them keeps it forever (or nobody uses it)."""
    if not projects:
        return None
    policies = []
    for project in projects:
        lc = facts.lifecycles.get(project)
        if lc is None or lc.package_retention is None:
            return None
        policies.append(lc.package_retention)
    return policies


def _versions(policy: RetentionPolicy) -> str:
    if policy.unit == RetentionUnit.DAYS:
        return f"what was pushed in the last {describe(policy)}"
    return describe(policy, "versions")
