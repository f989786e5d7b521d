"""Releases: immutable snapshots of a project's process and variables, with the package
versions and child releases they ship."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text

from conveyor.domain import channels as ch
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.build_information import has_own_build, with_packages
from conveyor.domain.buildinfo import normalise_build
from conveyor.domain.codec import decode_process, encode_process
from conveyor.domain.documents import (
    DeployReleaseAction,
    PackageAction,
    Process,
    Project,
    Variable,
    key,
)
from conveyor.domain.errors import Conflict, NotFound, PolicyViolation, Problem, ValidationFailed
from conveyor.domain.insights import commit_columns
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version, highest, next_version, parse_version
from conveyor.services import build_information
from conveyor.services.config import load, public_id
from conveyor.services.core import Caller, Services, Tx, iso
from conveyor.services.documents import resolve
from conveyor.store import tables as t
from conveyor.store.documents import Loaded, cipher_of

P = perms.Permission
RELEASE_LOCK = 7_010_002


@dataclass(frozen=True)
class ReleaseView:
    id: int
    project: str
    project_id: int
    version: str
    notes: str
    created_at: datetime
    created_by: str
    packages: dict[str, str]
    children: list[dict[str, Any]]
    build: dict[str, Any]
    # Blocked from promotion: {"reason", "by", "at"}; pinned in: [{"environment", "reason", …}].
    blocked: dict[str, Any] | None = None
    pins: tuple[dict[str, Any], ...] = ()
    channel: str = ch.DEFAULT_CHANNEL

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": public_id("releases", self.id),
            "project": self.project,
            "version": self.version,
            "notes": self.notes,
            "created": iso(self.created_at),
            "created_by": self.created_by,
            "packages": self.packages,
            "children": {c["project"]: c["version"] for c in self.children},
            "child_steps": self.children,
            "build": self.build,
            "blocked": self.blocked,
            "pins": list(self.pins),
            "channel": self.channel,
        }


@dataclass(frozen=True)
class Snapshot:
    """A release's frozen process and variables (sensitive values decrypted in memory)."""

    project: str
    lifecycle: str
    process: Process
    variables: tuple[Variable, ...]


def view(row: Any, project: str, pins: tuple[dict[str, Any], ...] = ()) -> ReleaseView:
    blocked = None
    if getattr(row, "blocked_reason", None):
        blocked = {"reason": row.blocked_reason, "by": row.blocked_by, "at": iso(row.blocked_at)}
    return ReleaseView(
        id=row.id,
        project=project,
        project_id=row.project_id,
        version=row.version,
        notes=row.notes,
        created_at=row.created_at,
        created_by=row.created_by,
        packages=dict(row.packages),
        children=list(row.children),
        build=dict(row.build),
        blocked=blocked,
        pins=pins,
        channel=getattr(row, "channel", None) or ch.DEFAULT_CHANNEL,
    )


async def _pins_of(
    services: Services, loaded: Loaded, release_ids: list[int]
) -> dict[int, tuple[dict[str, Any], ...]]:
    """Release id -> where it is pinned (environment order), for the release views."""
    if not release_ids:
        return {}
    pins = t.release_pins.c
    async with services.read() as session:
        rows = (
            await session.execute(select(t.release_pins).where(pins.release_id.in_(release_ids)))
        ).all()
    order = {key(e.name): i for i, e in enumerate(loaded.model.environments)}
    found: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        env = loaded.name_of("environments", r.environment_id)
        if env is not None:
            found.setdefault(r.release_id, []).append(
                {
                    "environment": env,
                    "reason": r.reason,
                    "pinned_by": r.pinned_by,
                    "pinned_at": iso(r.pinned_at),
                }
            )
    return {
        rid: tuple(sorted(items, key=lambda p: order.get(key(p["environment"]), 0)))
        for rid, items in found.items()
    }


def read_snapshot(services: Services, snapshot: dict[str, Any]) -> Snapshot:
    problems: list[Problem] = []
    process = decode_process(snapshot["process"], ("release", "process"), problems)
    if problems:  # pragma: no cover - snapshots are written by this module
        raise ValidationFailed(problems)
    variables = tuple(
        Variable(
            name=v["name"],
            value=services.box.decrypt(v["cipher"]) if v.get("sensitive") else v["value"],
            sensitive=bool(v.get("sensitive")),
            environments=tuple(v.get("environments", ())),
        )
        for v in snapshot["variables"]
    )
    return Snapshot(snapshot["project"], snapshot["lifecycle"], process, variables)


def _write_snapshot(services: Services, project: Project) -> dict[str, Any]:
    variables = []
    for v in project.variables:
        item: dict[str, Any] = {"name": v.name, "environments": list(v.environments)}
        if v.sensitive:
            item["sensitive"] = True
            item["cipher"] = cipher_of(services.box, v.value)  # a Sealed value keeps its cipher
        else:
            item["value"] = v.value
        variables.append(item)
    return {
        "project": project.name,
        "lifecycle": project.lifecycle,
        "process": encode_process(project.process),
        "process_version": project.process.version,
        "variables": variables,
    }


def parse_pairs(values: list[str], what: str) -> dict[str, str]:
    """``["Database:1.0.1"]`` -> ``{"Database": "1.0.1"}`` (the last colon splits)."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, version = value.rpartition(":")
        if not sep or not name.strip() or not version.strip():
            raise ValidationFailed(f'{what} "{value}" must look like NAME:VERSION')
        out[name.strip()] = version.strip()
    return out


def suggested_version(existing: Iterable[str]) -> str:
    """The version a new release gets when none is given, after the project's ``existing``
    ones: the one rule ``release create`` and the web form's suggestion share."""
    return next_version(highest(existing))


async def _lock(tx: Tx, project_id: int) -> None:
    # Two creations for one project must not pick the same next version.
    if not tx.services.is_sqlite:
        await tx.session.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": RELEASE_LOCK, "b": project_id}
        )


async def _versions(tx: Tx, project_id: int) -> list[tuple[int, str]]:
    rows = await tx.session.execute(
        select(t.releases.c.id, t.releases.c.version).where(t.releases.c.project_id == project_id)
    )
    return [(r.id, r.version) for r in rows]


async def _feed_versions(tx: Tx, package: str) -> list[str]:
    """The versions of ``package`` in the feed, highest first."""
    query = select(t.packages.c.version).where(t.packages.c.package_key == package_key(package))
    versions = (await tx.session.execute(query)).scalars().all()
    return sorted(versions, key=Version, reverse=True)


def _listed(versions: list[str], most: int = 10) -> str:
    more = f" and {len(versions) - most} lower" if len(versions) > most else ""
    return ", ".join(versions[:most]) + more


async def _package_subjects(tx: Tx, project: Project, flags: dict[str, str]) -> list[ch.Subject]:
    """Each package step's package with the versions it may take: the one pinned, which must
    be in the feed (a release of a missing version could never deploy, yet would count as the
    highest), or else the feed's, highest first (the channel takes the highest it allows)."""
    steps: dict[str, list[str]] = {}
    wanted: dict[str, str] = {}
    for s in project.process.steps:
        if isinstance(s.action, PackageAction) and not s.disabled:
            wanted.setdefault(key(s.action.package), s.action.package)
            steps.setdefault(key(s.action.package), []).append(s.name)
    unknown = [p for p in flags if key(p) not in wanted]
    if unknown:
        raise ValidationFailed(
            f"{project.name} has no package step for {', '.join(unknown)} "
            f"(its packages: {', '.join(wanted.values()) or 'none'})"
        )
    given = {key(p): v for p, v in flags.items()}
    subjects: list[ch.Subject] = []
    problems = []
    for k, package in wanted.items():
        path = ("packages", package)
        available = await _feed_versions(tx, package)
        pinned = given.get(k)
        if pinned is None:
            if not available:
                problems.append(
                    Problem(
                        path,
                        f"there is no {package} in the package feed: push one or pass "
                        f"--package {package}:VERSION",
                    )
                )
                continue
            subjects.append(ch.Subject(package, tuple(steps[k]), tuple(available)))
            continue
        try:
            wanted_version = parse_version(pinned)
        except ValidationFailed as exc:
            problems.append(Problem(path, f"{package} {exc.message}"))
            continue
        match = next((v for v in available if Version(v) == wanted_version), None)
        if match is None:
            has = (
                f"it has {_listed(available)}"
                if available
                else f"there is no {package} in it at all"
            )
            problems.append(
                Problem(
                    path,
                    f"{package} {pinned} is not in the package feed ({has}): push that version "
                    "first, or pin one the feed has",
                )
            )
            continue
        subjects.append(ch.Subject(package, tuple(steps[k]), (match,), pinned=True))
    if problems:
        raise ValidationFailed(problems)
    return subjects


async def _child_versions(tx: Tx, project_id: int) -> list[tuple[int, str, str]]:
    rows = await tx.session.execute(
        select(t.releases.c.id, t.releases.c.version, t.releases.c.channel).where(
            t.releases.c.project_id == project_id
        )
    )
    return [(r.id, r.version, r.channel) for r in rows]


async def _child_subjects(
    tx: Tx, loaded: Loaded, project: Project, flags: dict[str, str]
) -> tuple[list[ch.Subject], dict[str, dict[str, Any]]]:
    """Each ``deploy_release`` step's child with the releases it may take (the one pinned, or
    all of them, highest first: the channel takes the highest it allows), and per child
    project and version the child record a release keeps."""
    steps = [s for s in project.process.steps if isinstance(s.action, DeployReleaseAction)]
    targets = {key(s.action.project) for s in steps if isinstance(s.action, DeployReleaseAction)}
    unknown = [p for p in flags if key(p) not in targets]
    if unknown:
        raise ValidationFailed(f"{project.name} deploys no release of {', '.join(unknown)}")
    given = {key(p): v for p, v in flags.items()}
    subjects: list[ch.Subject] = []
    records: dict[str, dict[str, Any]] = {}
    problems = []
    for step in steps:
        assert isinstance(step.action, DeployReleaseAction)
        child = loaded.model.get("projects", step.action.project)
        child_id = loaded.id_of("projects", step.action.project)
        assert isinstance(child, Project) and child_id is not None
        rows = sorted(
            await _child_versions(tx, child_id), key=lambda r: Version(r[1]), reverse=True
        )
        for rid, v, _ in rows:
            records[f"{step.name}\0{v}"] = {
                "step": step.name,
                "project": child.name,
                "project_id": child_id,
                "version": v,
                "release_id": rid,
            }
        pinned = given.get(key(child.name))
        if pinned is None and not rows:
            problems.append(
                Problem(
                    ("children", child.name),
                    f"{child.name} has no release yet: create one first, or remove the step",
                )
            )
            continue
        if pinned is not None:
            wanted = Version(pinned)
            match = next((v for _, v, _ in rows if Version(v) == wanted), None)
            if match is None:
                problems.append(
                    Problem(("children", child.name), f"{child.name} has no release {pinned}")
                )
                continue
            subjects.append(ch.Subject(child.name, (step.name,), (match,), pinned=True, child=True))
            continue
        # The highest version, not the newest by time (Octopus picks by time).
        subjects.append(
            ch.Subject(
                child.name,
                (step.name,),
                tuple(v for _, v, _ in rows),
                child=True,
                channel_of={v: c for _, v, c in rows},
                child_channels=frozenset(key(c.name) for c in child.channels),
            )
        )
    if problems:
        raise ValidationFailed(problems)
    return subjects, records


async def create_release(
    services: Services,
    caller: Caller,
    project_ref: str,
    *,
    version: str | None = None,
    packages: dict[str, str] | None = None,
    children: dict[str, str] | None = None,
    notes: str = "",
    build: dict[str, Any] | None = None,
    channel: str | None = None,
) -> ReleaseView:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    assert isinstance(project, Project)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    async with services.tx(caller) as tx:
        tx.require(
            P.ReleaseCreate,
            project=perms.ProjectRef(project.name, project.group),
            documents=[public_id("projects", project_id)],
            project_id=project_id,
        )
        if project.disabled:
            raise PolicyViolation(f'project "{project.name}" is disabled: enable it to release')
        build = normalise_build(build)
        await _lock(tx, project_id)
        existing = await _versions(tx, project_id)
        if version is None:
            version = suggested_version(v for _, v in existing)
        try:
            parsed = parse_version(version)
        except ValidationFailed as exc:
            raise ValidationFailed(Problem(("version",), exc.message)) from exc
        clash = next((v for _, v in existing if Version(v) == parsed), None)
        if clash is not None:
            raise Conflict(f"{project.name} already has release {clash}")
        package_subjects = await _package_subjects(tx, project, packages or {})
        child_subjects, records = await _child_subjects(tx, loaded, project, children or {})
        fit = ch.choose(project, [*package_subjects, *child_subjects], channel)
        chosen_packages = {s.name: fit.version_of(s) for s in package_subjects}
        if chosen_packages and not has_own_build(build):
            # No commit of its own: the build information of the packages it pins.
            pushed = await build_information.release_build(tx.session, chosen_packages)
            build = normalise_build(with_packages(build, pushed)) if pushed else build
        chosen_children = [records[f"{s.steps[0]}\0{fit.version_of(s)}"] for s in child_subjects]
        result = await tx.session.execute(
            t.releases.insert()
            .values(
                project_id=project_id,
                version=version,
                notes=notes,
                created_at=tx.now,
                created_by_id=caller.user_id,
                created_by=caller.on_behalf_of or caller.username,
                snapshot={
                    **_write_snapshot(services, project),
                    "channel": fit.channel.name,
                    "lifecycle": ch.lifecycle_of(project, fit.channel.name),
                },
                packages=chosen_packages,
                children=chosen_children,
                build=build,
                **commit_columns(build),
                channel=fit.channel.name,
            )
            .returning(t.releases)
        )
        row = result.one()
        release = view(row, project.name)
        await tx.audit(
            Category.RELEASE_CREATED,
            f"{caller.username} created release {version} of {project.name}",
            documents=[public_id("projects", project_id), public_id("releases", row.id)],
            details={
                "version": version,
                "channel": fit.channel.name,
                "packages": chosen_packages,
                "children": {c["project"]: c["version"] for c in chosen_children},
                "notes": notes,
                # The commit list stays on the release; the audit event records how many.
                "build": {**build, "commits": len(build["commits"])} if build else {},
            },
            project_id=project_id,
        )
    return release


async def find_release(services: Services, project_id: int, version: str) -> Any:
    async with services.read() as session:
        rows = (
            await session.execute(select(t.releases).where(t.releases.c.project_id == project_id))
        ).all()
    wanted = parse_version(version)
    return next((r for r in rows if Version(r.version) == wanted), None)


async def get_release(
    services: Services, caller: Caller, project_ref: str, version: str
) -> ReleaseView:
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    assert project_id is not None
    _may_view(caller, project)
    row = await find_release(services, project_id, version)
    if row is None:
        raise NotFound(f"{project.name} has no release {version}")
    pins = await _pins_of(services, loaded, [row.id])
    return view(row, project.name, pins.get(row.id, ()))


def _may_view(caller: Caller, project: Project) -> None:
    decision = perms.authorize(
        caller.principal, P.ReleaseView, project=perms.ProjectRef(project.name, project.group)
    )
    if not decision.allowed:
        from conveyor.domain.errors import PermissionDenied

        raise PermissionDenied(decision.reason, permission="ReleaseView")


async def list_releases(
    services: Services, caller: Caller, project_ref: str, *, limit: int = 100
) -> list[ReleaseView]:
    """Newest first by version (what people mean by newest), then by creation."""
    loaded = await load(services)
    project = resolve(loaded, "projects", project_ref)
    project_id = loaded.id_of("projects", project.name)
    _may_view(caller, project)
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.releases)
                .where(t.releases.c.project_id == project_id)
                .order_by(t.releases.c.id.desc())
            )
        ).all()
    ordered = sorted(rows, key=lambda r: (Version(r.version), r.id), reverse=True)[:limit]
    pins = await _pins_of(services, loaded, [r.id for r in ordered])
    return [view(r, project.name, pins.get(r.id, ())) for r in ordered]
