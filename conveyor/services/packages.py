"""The built-in package feed: push, list, show, download and delete archives.

An upload is streamed to ``<data>/packages/.incoming`` and hashed on the way, inspected, and only
then recorded and moved to ``<data>/packages/<id lower>/<id>.<version>.<ext>``. The row and the
file change together: a refused or failed push leaves neither behind, and a replaced file is
kept aside until the transaction commits.

Package ids compare case-insensitively and versions by precedence, so ``1.0.0`` and ``1.0.0.0``
are one version of one package. The first push of an id fixes how it is spelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import zlib
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex
from typing import Any, BinaryIO

from sqlalchemy import String, cast, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, NotFound, Problem, ValidationFailed
from conveyor.domain.packages import identify, package_file_name, package_key
from conveyor.domain.versions import Version, is_valid_version
from conveyor.services import archives
from conveyor.services.config import public_id
from conveyor.services.core import Caller, Services, Tx
from conveyor.settings import Settings
from conveyor.store import tables as t

P = perms.Permission
# Partial uploads older than this were left by a server that stopped mid-upload.
STALE_UPLOAD_SECONDS = 24 * 3600
# Serialises pushes of one package on PostgreSQL, where "1.0" vs "1.0.0" escapes the unique index.
_LOCK_NAMESPACE = 7_010_002


@dataclass(frozen=True)
class PackageInfo:
    row_id: int
    package_id: str
    version: str
    format: str
    size: int
    sha256: str
    created_at: datetime
    pushed_by: str
    file_name: str

    @property
    def id(self) -> str:
        return public_id("packages", self.row_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package_id": self.package_id,
            "version": self.version,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "created": _utc(self.created_at).isoformat(),
            "pushed_by": self.pushed_by,
        }


def _utc(value: datetime) -> datetime:
    # SQLite gives back naive datetimes for timezone-aware columns; they are stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _info(row: Any) -> PackageInfo:
    return PackageInfo(
        row_id=row.id,
        package_id=row.package_id,
        version=row.version,
        format=row.format,
        size=row.size,
        sha256=row.sha256,
        created_at=_utc(row.created_at),
        pushed_by=row.pushed_by,
        file_name=row.file_name,
    )


def feed_root(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "packages"


# ---------------------------------------------------------------- reading


async def _rows(session: AsyncSession, package_id: str) -> list[Any]:
    query = select(t.packages).where(t.packages.c.package_key == package_key(package_id))
    return list((await session.execute(query.order_by(t.packages.c.id))).all())


def _same_version(rows: list[Any], version: str) -> Any | None:
    wanted = Version(version)
    return next((r for r in rows if Version(r.version) == wanted), None)


async def find_package(session: AsyncSession, package_id: str, version: str) -> PackageInfo | None:
    """The package with this id (any case) and a version of equal precedence; no permission."""
    if not is_valid_version(version):
        return None
    row = _same_version(await _rows(session, package_id), version)
    return _info(row) if row is not None else None


async def latest_version(session: AsyncSession, package_id: str) -> str | None:
    """The highest version in the feed by precedence (not the newest by time), or None."""
    query = select(t.packages.c.version).where(t.packages.c.package_key == package_key(package_id))
    versions = (await session.execute(query)).scalars().all()
    return max(versions, key=Version, default=None)


@dataclass(frozen=True)
class FeedFile:
    """A package version's archive in the feed, with the sha256 recorded when it was pushed:
    what a machine must end up holding (runners send it only where it is missing)."""

    package: str
    version: str
    path: Path
    sha256: str
    size: int


async def feed_file(services: Services, package_id: str, version: str) -> FeedFile:
    """The archive of this package version; NotFound when the feed lacks it."""
    async with services.read() as session:
        info = await find_package(session, package_id, version)
    if info is None:
        raise NotFound(f"package {package_id} {version} is not in the built-in feed")
    path = feed_root(services.settings) / package_key(info.package_id) / info.file_name
    if not path.is_file():
        raise NotFound(f"the file of package {info.package_id} {info.version} is missing: {path}")
    return FeedFile(info.package_id, info.version, path, info.sha256, info.size)


async def package_path(services: Services, package_id: str, version: str) -> Path:
    """Where the archive of this package version is; NotFound when the feed lacks it."""
    return (await feed_file(services, package_id, version)).path


async def _require(services: Services, caller: Caller, permission: P) -> None:
    """Refuse before any work; a refusal goes through the unit of work, which audits it."""
    if not perms.authorize(caller.principal, permission).allowed:
        async with services.tx(caller) as tx:
            tx.require(permission)


async def authorise_push(services: Services, caller: Caller) -> None:
    """BuiltInFeedPush, checked before a request's upload or options are read (a refusal is
    audited): those who may not push learn nothing about what their request lacked."""
    await _require(services, caller, P.BuiltInFeedPush)


async def list_packages(
    services: Services, caller: Caller, package_id: str | None = None
) -> list[PackageInfo]:
    """Grouped by id (alphabetically), each id's versions highest first."""
    await _require(services, caller, P.FeedView)
    query = select(t.packages)
    if package_id:
        query = query.where(t.packages.c.package_key == package_key(package_id))
    async with services.read() as session:
        infos = [_info(r) for r in (await session.execute(query)).all()]
    infos.sort(key=lambda i: Version(i.version), reverse=True)
    infos.sort(key=lambda i: package_key(i.package_id))
    return infos


async def get_package(
    services: Services, caller: Caller, package_id: str, version: str
) -> PackageInfo:
    await _require(services, caller, P.FeedView)
    async with services.read() as session:
        info = await find_package(session, package_id, version)
    if info is None:
        raise NotFound(f"package {package_id} {version} is not in the built-in feed")
    return info


async def open_download(
    services: Services, caller: Caller, package_id: str, version: str
) -> tuple[PackageInfo, Path]:
    """The package and its file; needs BuiltInFeedDownload (a deployer needs no FeedView)."""
    await _require(services, caller, P.BuiltInFeedDownload)
    async with services.read() as session:
        info = await find_package(session, package_id, version)
    if info is None:
        raise NotFound(f"package {package_id} {version} is not in the built-in feed")
    return info, await package_path(services, info.package_id, info.version)


# ---------------------------------------------------------------- writing


async def push_package(
    services: Services,
    caller: Caller,
    chunks: AsyncIterable[bytes],
    *,
    file_name: str,
    package_id: str | None = None,
    version: str | None = None,
    replace: bool = False,
) -> PackageInfo:
    """Receive, inspect and record one archive. Replacing an existing version (by precedence)
    needs ``replace`` and BuiltInFeedAdminister; otherwise it is a Conflict."""
    await _require(services, caller, P.BuiltInFeedPush)
    package_id, version, declared = identify(file_name, package_id, version)
    incoming = feed_root(services.settings) / ".incoming"
    await asyncio.to_thread(_prepare_incoming, incoming)
    temp = incoming / f"{token_hex(8)}.part"
    try:
        size, sha256 = await _receive(chunks, temp)
        limits = archives.ArchiveLimits.of(services.settings)
        fmt = await asyncio.to_thread(archives.inspect_archive, temp, limits)
        if declared is not None and declared != fmt:
            raise ValidationFailed(
                Problem(("file",), f'"{file_name}" is named as a {declared} but is a {fmt} archive')
            )
        return await _record(
            services, caller, temp, package_id, version, fmt, size, sha256, replace
        )
    finally:
        temp.unlink(missing_ok=True)


def _prepare_incoming(incoming: Path) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_UPLOAD_SECONDS
    for stale in incoming.glob("*.part"):
        # Another upload may finish (and remove its part) between the listing and this look.
        with contextlib.suppress(FileNotFoundError):
            if stale.stat().st_mtime < cutoff:
                stale.unlink(missing_ok=True)


async def _receive(chunks: AsyncIterable[bytes], temp: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    handle: BinaryIO = await asyncio.to_thread(temp.open, "xb")
    try:
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    if size == 0:
        raise ValidationFailed(Problem(("file",), "the file is empty"))
    return size, digest.hexdigest()


async def _record(
    services: Services,
    caller: Caller,
    temp: Path,
    package_id: str,
    version: str,
    fmt: str,
    size: int,
    sha256: str,
    replace: bool,
) -> PackageInfo:
    folder = feed_root(services.settings) / package_key(package_id)
    backup: Path | None = None
    installed: Path | None = None
    old_file: Path | None = None
    try:
        async with services.tx(caller) as tx:
            tx.require(P.BuiltInFeedPush)
            if not services.is_sqlite:
                lock = zlib.crc32(package_key(package_id).encode()) - 2**31
                await tx.session.execute(
                    text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                    {"ns": _LOCK_NAMESPACE, "k": lock},
                )
            rows = await _rows(tx.session, package_id)
            # The first push of an id fixes its spelling for every later version.
            package_id = rows[0].package_id if rows else package_id
            existing = _same_version(rows, version)
            if existing is not None:
                _may_replace(tx, existing, replace)
            file_name = package_file_name(package_id, version, fmt)
            values = {
                "package_id": package_id,
                "package_key": package_key(package_id),
                "version": version,
                "file_name": file_name,
                "format": fmt,
                "size": size,
                "sha256": sha256,
                "created_at": tx.now,
                "pushed_by": caller.username,
            }
            if existing is None:
                result = await tx.session.execute(
                    insert(t.packages).values(**values).returning(t.packages.c.id)
                )
                row_id = int(result.scalar_one())
            else:
                row_id = existing.id
                await tx.session.execute(
                    update(t.packages).where(t.packages.c.id == row_id).values(**values)
                )
                if existing.file_name != file_name:
                    old_file = folder / existing.file_name
            info = PackageInfo(
                row_id, package_id, version, fmt, size, sha256, tx.now, caller.username, file_name
            )
            await tx.audit(
                Category.PACKAGE_PUSHED,
                f"{caller.username} pushed package {package_id} {version}"
                + (" (replacing the earlier upload)" if existing is not None else ""),
                documents=[info.id],
                details={
                    "package_id": package_id,
                    "version": version,
                    "sha256": sha256,
                    "size": size,
                    "format": fmt,
                    "replaced": None
                    if existing is None
                    else {"version": existing.version, "sha256": existing.sha256},
                },
            )
            # Last, so that only the commit can still fail once the file is in place.
            backup = await asyncio.to_thread(_install, temp, folder / file_name)
            installed = folder / file_name
    except BaseException as exc:
        if installed is not None:
            _uninstall(installed, backup)
        if isinstance(exc, IntegrityError):
            raise Conflict(f"package {package_id} {version} was pushed at the same time") from exc
        raise
    for leftover in (backup, old_file):
        if leftover is not None:
            leftover.unlink(missing_ok=True)
    return info


def _may_replace(tx: Tx, existing: Any, replace: bool) -> None:
    if not replace:
        raise Conflict(
            f"package {existing.package_id} {existing.version} is already in the feed "
            f"(pushed by {existing.pushed_by}, sha256 {existing.sha256[:12]}…); "
            "push with --replace to overwrite it (needs BuiltInFeedAdminister)",
            package_id=existing.package_id,
            version=existing.version,
        )
    tx.require(P.BuiltInFeedAdminister)


def _install(temp: Path, final: Path) -> Path | None:
    """Move the upload into place; the file it replaces is kept aside until the commit."""
    final.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if final.exists():
        backup = final.with_name(f".{final.name}.replaced-{token_hex(4)}")
        os.replace(final, backup)
    os.replace(temp, final)
    return backup


def _uninstall(final: Path, backup: Path | None) -> None:
    if backup is not None:
        os.replace(backup, final)
    else:
        final.unlink(missing_ok=True)


@dataclass(frozen=True)
class Pin:
    """A release that pinned a version of a package (``releases.packages``)."""

    package_key: str
    version: str
    project: str
    release: str

    def pins(self, package_id: str, version: str) -> bool:
        return self.package_key == package_key(package_id) and Version(self.version) == Version(
            version
        )


async def pins_of(session: AsyncSession, package_ids: list[str]) -> list[Pin]:
    """The releases that pinned any version of these packages. The releases' package choices
    are JSON without an index of their own, so the text of the column is matched first (one
    query, only the releases that name one of the packages come back), then read exactly."""
    if not package_ids:
        return []
    r = t.releases.c
    text_of = func.lower(cast(r.packages, String))
    named = [text_of.like(f'%"{_like(package_key(p))}"%', escape="\\") for p in package_ids]
    query = (
        select(r.version, r.packages, t.projects.c.name)
        .join(t.projects, t.projects.c.id == r.project_id)
        .where(or_(*named))
        .order_by(r.id)
    )
    wanted = {package_key(p) for p in package_ids}
    out = []
    for row in (await session.execute(query)).all():
        for package, version in dict(row.packages or {}).items():
            if package_key(package) in wanted and is_valid_version(str(version)):
                out.append(Pin(package_key(package), str(version), row.name, row.version))
    return out


async def package_pins(services: Services, caller: Caller, package_ids: list[str]) -> list[Pin]:
    """The releases that pinned versions of these packages (FeedView)."""
    await _require(services, caller, P.FeedView)
    async with services.read() as session:
        return await pins_of(session, package_ids)


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def delete_package(services: Services, caller: Caller, package_id: str, version: str) -> None:
    """Remove a version from the feed (BuiltInFeedAdminister); the file goes after the commit.
    A version that a release pinned stays: that release deploys exactly it (Conflict)."""
    await _require(services, caller, P.BuiltInFeedAdminister)
    async with services.tx(caller) as tx:
        tx.require(P.BuiltInFeedAdminister)
        rows = await _rows(tx.session, package_id) if is_valid_version(version) else []
        row = _same_version(rows, version) if rows else None
        if row is None:
            raise NotFound(f"package {package_id} {version} is not in the built-in feed")
        pinning = [
            p
            for p in await pins_of(tx.session, [row.package_id])
            if p.pins(row.package_id, row.version)
        ]
        if pinning:
            named = ", ".join(f"{p.project} {p.release}" for p in pinning[:5])
            more = f" and {len(pinning) - 5} more" if len(pinning) > 5 else ""
            raise Conflict(
                f"package {row.package_id} {row.version} cannot be deleted: "
                f"release{'s' if len(pinning) > 1 else ''} {named}{more} pinned it, and a "
                "release deploys exactly the package versions it pinned",
                package_id=row.package_id,
                version=row.version,
            )
        deleted = await tx.session.execute(
            delete(t.packages).where(t.packages.c.id == row.id).returning(t.packages.c.id)
        )
        if deleted.first() is None:
            # Deleted by a request that committed while this one read it.
            raise NotFound(f"package {package_id} {version} is not in the built-in feed")
        await tx.audit(
            Category.PACKAGE_DELETED,
            f"{caller.username} deleted package {row.package_id} {row.version}",
            documents=[public_id("packages", row.id)],
            details={"package_id": row.package_id, "version": row.version, "sha256": row.sha256},
        )
    path = feed_root(services.settings) / row.package_key / row.file_name
    await asyncio.to_thread(path.unlink, missing_ok=True)
