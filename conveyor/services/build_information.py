"""Build information of package versions (docs/build-servers.md): pushed by build servers through
Conveyor's API or Octopus's ``build-information``, kept one row per package version, read by
the package feed's pages and by releases, which take their build (commit, branch, commits with
their times) from the packages they pin.

Pushing needs BuildInformationPush, reading FeedView, as for the packages themselves. Each push
is audited (``BuildInformationPushed``) with a summary of the build, never the commit list.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import build_information as rules
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.buildinfo import URL
from conveyor.domain.errors import Conflict, NotFound, Problem, ValidationFailed
from conveyor.domain.packages import package_key, validate_package_id
from conveyor.domain.versions import is_valid_version, parse_version
from conveyor.services.core import Caller, Services, iso
from conveyor.services.packages import find_package
from conveyor.store import tables as t

P = perms.Permission
# Serialises pushes of one package's build information on PostgreSQL.
_LOCK_NAMESPACE = 7_010_015
VERSION_MAX = 100
PREFIX = "BuildInformation"


@dataclass(frozen=True)
class BuildInformation:
    row_id: int
    package_id: str
    version: str
    record: rules.Record
    pushed_at: datetime
    pushed_by: str

    @property
    def id(self) -> str:
        return f"{PREFIX}-{self.row_id}"

    @property
    def info(self) -> dict[str, Any]:
        """In Octopus's names (``Branch``, ``VcsCommitNumber``, ``Commits[{Id, Comment}]``)."""
        return rules.octopus_info(self.record)

    @property
    def link(self) -> str | None:
        """Where to read about it: the build's page, else a commit's; only http(s) links (what
        the Octopus API stored as pushed may be anything)."""
        for found in (self.record.build_url, *(c.get("link") for c in self.record.commits)):
            if found and URL.fullmatch(str(found)):
                return str(found)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package_id": self.package_id,
            "version": self.version,
            **self.record.columns(),
            "pushed_at": iso(self.pushed_at),
            "pushed_by": self.pushed_by,
        }


@dataclass(frozen=True)
class Pushed:
    """A push's result: ``outcome`` is created, replaced, or kept (IgnoreIfExists found one)."""

    found: BuildInformation
    outcome: str


def _view(row: Any) -> BuildInformation:
    at = row.pushed_at
    return BuildInformation(
        row_id=int(row.id),
        package_id=row.package_id,
        version=row.version,
        record=rules.record_of(row._mapping),
        pushed_at=at if at.tzinfo else at.replace(tzinfo=UTC),
        pushed_by=row.pushed_by,
    )


def version_key(version: str) -> str | None:
    """One text for every spelling of a version (``1.0`` is ``1.0.0.0``); None for no version."""
    return octopus.version_identity(version) if is_valid_version(version) else None


# ---------------------------------------------------------------- reading (no permission)


async def find(session: AsyncSession, package_id: str, version: str) -> BuildInformation | None:
    """The build information of this package version (any case, any spelling), or None."""
    wanted = version_key(version)
    if wanted is None:
        return None
    c = t.build_information.c
    row = (
        await session.execute(
            select(t.build_information).where(
                c.package_key == package_key(package_id), c.version_key == wanted
            )
        )
    ).first()
    return _view(row) if row is not None else None


async def of_versions(
    session: AsyncSession, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], BuildInformation]:
    """(package key, version key) -> build information, for these (package id, version) pairs:
    one query for all of them."""
    wanted = {(package_key(p), k) for p, v in pairs if (k := version_key(v)) is not None}
    if not wanted:
        return {}
    c = t.build_information.c
    rows = await session.execute(
        select(t.build_information).where(c.package_key.in_(sorted({p for p, _ in wanted})))
    )
    found = {}
    for row in rows:
        if (row.package_key, row.version_key) in wanted:
            found[(row.package_key, row.version_key)] = _view(row)
    return found


async def release_build(session: AsyncSession, packages: Mapping[str, str]) -> dict[str, Any]:
    """The build a release pinning ``packages`` (id -> version, in the release's order) takes
    from their build information; ``{}`` when none was pushed."""
    found = await of_versions(session, packages.items())
    records = []
    for package, version in packages.items():
        key = version_key(version)
        item = found.get((package_key(package), key)) if key else None
        if item is not None:
            records.append(item.record)
    return rules.release_build(records)


# ---------------------------------------------------------------- the service


async def _require(services: Services, caller: Caller, permission: P) -> None:
    if not perms.authorize(caller.principal, permission).allowed:
        async with services.tx(caller) as tx:
            tx.require(permission)


async def get(
    services: Services, caller: Caller, package_id: str, version: str
) -> BuildInformation:
    """The build information of a package version (FeedView); NotFound when none was pushed."""
    await _require(services, caller, P.FeedView)
    async with services.read() as session:
        found = await find(session, package_id, version)
    if found is None:
        raise NotFound(
            f"no build information was pushed for {package_id} {version}: a build server pushes "
            f"it with POST /api/v1/packages/{package_id}/{version}/build-information"
        )
    return found


async def for_versions(
    services: Services, caller: Caller, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], BuildInformation]:
    """The build information of these (package id, version) pairs (FeedView), by (package key,
    version key); see ``key_of``."""
    await _require(services, caller, P.FeedView)
    async with services.read() as session:
        return await of_versions(session, pairs)


def key_of(package_id: str, version: str) -> tuple[str, str]:
    return package_key(package_id), version_key(version) or version


async def push(
    services: Services,
    caller: Caller,
    package_id: str,
    version: str,
    data: Any,
    mode: str | None = None,
    *,
    parse: Callable[[Any], rules.Record] = rules.from_api,
) -> Pushed:
    """Record build information for a package version (BuildInformationPush, checked before
    anything else). ``mode``: fail (Conflict when the version has some), overwrite (it is
    replaced) or ignore (the one there is kept and returned); Octopus's names work too. The
    package need not be in the feed yet."""
    async with services.tx(caller) as tx:
        tx.require(P.BuildInformationPush)
        problems: list[Problem] = []
        try:
            package_id = validate_package_id(package_id)
        except ValidationFailed as exc:
            problems += exc.problems
        version = version.strip()
        try:
            if len(version) > VERSION_MAX:
                raise ValidationFailed(f"is longer than {VERSION_MAX} characters")
            parse_version(version)
        except ValidationFailed as exc:
            problems.append(Problem(("version",), exc.message))
        try:
            chosen = rules.overwrite_mode(mode)
        except ValidationFailed as exc:
            problems += exc.problems
        try:
            record = parse(data)
        except ValidationFailed as exc:
            problems += exc.problems
        if problems:
            raise ValidationFailed(problems)
        if not services.is_sqlite:
            lock = zlib.crc32(package_key(package_id).encode()) - 2**31
            await tx.session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": _LOCK_NAMESPACE, "k": lock}
            )
        existing = await find(tx.session, package_id, version)
        if existing is not None and chosen == rules.IGNORE:
            return Pushed(existing, "kept")
        if existing is not None and chosen != rules.OVERWRITE:
            raise Conflict(
                f"{existing.package_id} {existing.version} has build information already "
                f"(pushed by {existing.pushed_by}): push again with mode=overwrite to replace "
                "it, or mode=ignore to keep it",
                package_id=existing.package_id,
                version=existing.version,
            )
        values = {
            "package_id": package_id,
            "package_key": package_key(package_id),
            "version": version,
            "version_key": version_key(version),
            **record.columns(),
            "pushed_at": tx.now,
            "pushed_by_id": caller.user_id,
            "pushed_by": caller.on_behalf_of or caller.username,
        }
        table = t.build_information
        if existing is not None:
            await tx.session.execute(
                table.update().where(table.c.id == existing.row_id).values(**values)
            )
            row_id = existing.row_id
        else:
            inserted = await tx.session.execute(
                table.insert().values(**values).returning(table.c.id)
            )
            row_id = int(inserted.scalar_one())
        package = await find_package(tx.session, package_id, version)
        stored = BuildInformation(
            row_id, package_id, version, record, tx.now, str(values["pushed_by"])
        )
        await tx.audit(
            Category.BUILD_INFORMATION_PUSHED,
            f"{caller.username} pushed build information for {package_id} {version}"
            + (" (replacing the earlier one)" if existing is not None else ""),
            documents=[stored.id] + ([package.id] if package else []),
            details={
                "package_id": package_id,
                "version": version,
                "mode": chosen,
                # A summary: the build and how many commits; the commits stay in the table.
                "build": rules.summary(record),
                "replaced": (
                    {
                        "vcs_commit": existing.record.vcs_commit,
                        "pushed_by": existing.pushed_by,
                        "pushed_at": iso(existing.pushed_at),
                    }
                    if existing is not None
                    else None
                ),
            },
        )
    return Pushed(stored, "replaced" if existing is not None else "created")
