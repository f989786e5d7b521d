"""The built-in package feed through its service, on SQLite and PostgreSQL; archives on disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conveyor.domain.audit import Category
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.domain.packages import identify, split_file_name
from conveyor.services import archives
from conveyor.services import documents as docs
from conveyor.services import packages as feed
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import add_user
from conveyor.store import tables as t
from tests.conftest import caller_of

# ---------------------------------------------------------------- archive builders


def make_zip(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tgz(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


GOOD = {"migrations/001.sql": b"create table pets(id int);", "deploy.sh": b"echo ok\n"}


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    data = path.read_bytes()
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def push(
    services: Services, caller: Caller, path: Path, **kwargs: object
) -> feed.PackageInfo:
    return await feed.push_package(
        services,
        caller,
        _chunks(path),
        file_name=path.name,
        **kwargs,  # type: ignore[arg-type]
    )


def feed_files(services: Services) -> list[str]:
    root = feed.feed_root(services.settings)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def row_count(services: Services) -> int:
    async with services.read() as session:
        return int((await session.execute(select(func.count()).select_from(t.packages))).scalar())


async def user_with_role(services: Services, username: str, role: str) -> Caller:
    await add_user(services, system_caller(), username)
    await docs.create_document(
        services,
        system_caller(),
        "teams",
        {"name": f"{username} team", "members": [username], "roles": [{"role": role}]},
    )
    return await caller_of(services, username)


# ---------------------------------------------------------------- names (pure)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("OctoPetShop.Database.1.0.1.zip", ("OctoPetShop.Database", "1.0.1", "zip")),
        ("Shop.Web.1.0.0-beta.1.tar.gz", ("Shop.Web", "1.0.0-beta.1", "tar.gz")),
        ("Shop_Api.2.3.4.5.tgz", ("Shop_Api", "2.3.4.5", "tar.gz")),
        ("folder/Web.1.2.ZIP", ("Web", "1.2", "zip")),
        ("Web.zip", None),
        ("Web.1.0.0.rar", None),
    ],
)
def test_file_names_split_at_the_longest_valid_version(
    name: str, expected: tuple[str, str, str] | None
) -> None:
    assert split_file_name(name) == expected


def test_flags_win_over_the_file_name_and_bad_input_says_what_to_do() -> None:
    assert identify("build.zip", "Shop.Web", "2.0.0") == ("Shop.Web", "2.0.0", "zip")
    # An id that ends in numbers: given the id, the rest of the name is the version.
    assert identify("Shop.V2.1.0.zip", "Shop.V2") == ("Shop.V2", "1.0", "zip")
    assert identify("Shop.tgz", version="1.0") == ("Shop", "1.0", "tar.gz")
    with pytest.raises(ValidationFailed, match=r"name it <id>\.<version>\.zip"):
        identify("build.zip")
    with pytest.raises(ValidationFailed, match=r"1\.2\.3-beta\.1") as bad:
        identify("Shop.1.0.zip", version="1.0.x")
    assert bad.value.problems[0].path == ("version",)
    for bad_id in ("..", "a/b", "-x", "a..b", "Shop Web"):
        with pytest.raises(ValidationFailed, match="not a package id"):
            identify("x.1.0.zip", bad_id, "1.0")


# ---------------------------------------------------------------- push


async def test_push_from_the_file_name_records_the_hash_and_stores_the_file(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    path = make_zip(tmp_path / "OctoPetShop.Database.1.0.1.zip", GOOD)
    info = await push(services, admin, path)
    assert (info.package_id, info.version, info.format) == ("OctoPetShop.Database", "1.0.1", "zip")
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size == path.stat().st_size
    assert info.pushed_by == "admin" and info.id.startswith("Packages-")
    stored = feed.feed_root(services.settings) / "octopetshop.database" / path.name
    assert stored.read_bytes() == path.read_bytes()
    assert feed_files(services) == ["octopetshop.database/OctoPetShop.Database.1.0.1.zip"]

    async with services.read() as session:
        event = (
            await session.execute(
                select(t.events).where(t.events.c.category == str(Category.PACKAGE_PUSHED))
            )
        ).one()
    assert event.documents == [info.id]
    assert event.details["sha256"] == info.sha256
    assert (event.details["package_id"], event.details["version"]) == info_key(info)


def info_key(info: feed.PackageInfo) -> tuple[str, str]:
    return info.package_id, info.version


async def test_push_with_flags_and_a_tar_gz(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    path = make_tgz(tmp_path / "build-output.tgz", GOOD)
    info = await push(services, admin, path, package_id="Shop.Web", version="2.0.0-rc.1")
    assert (info.package_id, info.version, info.format) == ("Shop.Web", "2.0.0-rc.1", "tar.gz")
    assert feed_files(services) == ["shop.web/Shop.Web.2.0.0-rc.1.tar.gz"]


async def test_an_archive_named_as_another_format_is_refused(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    path = make_tgz(tmp_path / "tmp.tgz", GOOD).rename(tmp_path / "Shop.1.0.0.zip")
    with pytest.raises(ValidationFailed, match=r"named as a zip but is a tar\.gz"):
        await push(services, admin, path)
    assert feed_files(services) == [] and await row_count(services) == 0


async def test_an_existing_version_is_a_conflict_unless_replaced(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    first = await push(services, admin, make_zip(tmp_path / "Shop.1.0.0.zip", GOOD))
    again = make_zip(tmp_path / "shop.1.0.0.0.zip", {**GOOD, "new.txt": b"new"})
    # Same id in another case, same version by precedence.
    with pytest.raises(Conflict, match="--replace"):
        await push(services, admin, again)
    assert feed_files(services) == ["shop/Shop.1.0.0.zip"]

    replaced = await push(services, admin, again, replace=True)
    assert replaced.id == first.id
    assert (replaced.package_id, replaced.version) == ("Shop", "1.0.0.0")
    assert replaced.sha256 != first.sha256
    assert await row_count(services) == 1
    # The old file (another name for the same version) is gone; the new one matches the hash.
    assert feed_files(services) == ["shop/Shop.1.0.0.0.zip"]
    path = await feed.package_path(services, "SHOP", "1.0")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == replaced.sha256


async def test_concurrent_pushes_of_one_version_make_one_package(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    a = make_zip(tmp_path / "Shop.1.0.zip", GOOD)
    b = make_zip(tmp_path / "Shop.1.0.0.zip", {"other.txt": b"other"})
    results = await asyncio.gather(
        push(services, admin, a), push(services, admin, b), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "PackageInfo"]
    assert await row_count(services) == 1 and len(feed_files(services)) == 1


async def test_replacing_needs_built_in_feed_administer(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    build = await user_with_role(services, "build", "Build Server")
    original = await push(services, build, make_zip(tmp_path / "Shop.1.0.0.zip", GOOD))
    (tmp_path / "other").mkdir()
    other = make_zip(tmp_path / "other" / "Shop.1.0.0.zip", {"x": b"y"})
    with pytest.raises(PermissionDenied, match="BuiltInFeedAdminister"):
        await push(services, build, other, replace=True)
    async with services.read() as session:
        kept = await feed.find_package(session, "Shop", "1.0.0")
        denied = (
            await session.execute(
                select(t.events).where(t.events.c.category == str(Category.ACCESS_DENIED))
            )
        ).all()
    assert kept is not None and kept.sha256 == original.sha256
    assert any("BuiltInFeedAdminister" in e.message for e in denied)
    assert feed_files(services) == ["shop/Shop.1.0.0.zip"]


async def test_pushing_needs_built_in_feed_push(services: Services, tmp_path: Path) -> None:
    viewer = await user_with_role(services, "viewer", "Project Viewer")
    with pytest.raises(PermissionDenied, match="BuiltInFeedPush") as refused:
        await push(services, viewer, make_zip(tmp_path / "Shop.1.0.0.zip", GOOD))
    assert refused.value.details["permission"] == "BuiltInFeedPush"
    assert await row_count(services) == 0 and feed_files(services) == []


def _bad_archives(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "Shop.1.0.0.zip"
    text.write_text("just some text, not an archive")
    empty = tmp_path / "empty" / "Shop.1.0.0.zip"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    dirs_only = tmp_path / "dirs"
    dirs_only.mkdir()
    return {
        "dotdot": (make_zip(tmp_path / "a.1.0.zip", {"ok.txt": b"", "../evil": b"x"}), "../evil"),
        "absolute": (make_zip(tmp_path / "b.1.0.zip", {"/abs": b"x"}), "/abs"),
        "tar-symlink": (
            make_tgz(tmp_path / "c.1.0.tgz", GOOD, {"passwd": "/etc/passwd"}),
            "passwd",
        ),
        "zip-symlink": (
            make_zip(tmp_path / "d.1.0.zip", GOOD, {"up": "../../etc"}),
            "up",
        ),
        "link-through-link": (
            make_tgz(tmp_path / "e.1.0.tgz", GOOD, {"a/l": "..", "b": "a/l/.."}),
            "a/l",
        ),
        "not-an-archive": (text, "not a zip or tar.gz archive"),
        "empty-file": (empty, "empty"),
        "no-files": (make_zip(dirs_only / "f.1.0.zip", {"folder/": b""}), "holds no files"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute",
        "tar-symlink",
        "zip-symlink",
        "link-through-link",
        "not-an-archive",
        "empty-file",
        "no-files",
    ],
)
async def test_refused_archives_leave_nothing_behind(
    services: Services, admin: Caller, tmp_path: Path, case: str
) -> None:
    path, named = _bad_archives(tmp_path)[case]
    with pytest.raises(ValidationFailed) as refused:
        await push(services, admin, path)
    assert named in refused.value.message
    assert await row_count(services) == 0
    assert feed_files(services) == []
    async with services.read() as session:
        pushed = (
            await session.execute(
                select(t.events).where(t.events.c.category == str(Category.PACKAGE_PUSHED))
            )
        ).all()
    assert pushed == []


# ---------------------------------------------------------------- reading


async def test_latest_version_is_by_precedence_not_by_time(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    for version in ("1.0.10", "1.0.9", "1.0.11-beta.1", "1.0.2"):
        await push(services, admin, make_zip(tmp_path / f"Shop.{version}.zip", GOOD))
    async with services.read() as session:
        assert await feed.latest_version(session, "shop") == "1.0.11-beta.1"
    await feed.delete_package(services, admin, "Shop", "1.0.11-beta.1")
    async with services.read() as session:
        assert await feed.latest_version(session, "SHOP") == "1.0.10"
        assert await feed.latest_version(session, "Nothing") is None


async def test_list_show_download_and_delete(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    for name in ("Web.1.0.9.zip", "Api.2.0.0.zip", "Web.1.0.10.zip"):
        await push(services, admin, make_zip(tmp_path / name, GOOD))
    listed = await feed.list_packages(services, admin)
    assert [(p.package_id, p.version) for p in listed] == [
        ("Api", "2.0.0"),
        ("Web", "1.0.10"),
        ("Web", "1.0.9"),
    ]
    only = await feed.list_packages(services, admin, "web")
    assert [p.version for p in only] == ["1.0.10", "1.0.9"]

    shown = await feed.get_package(services, admin, "WEB", "1.0.10.0")
    assert shown.version == "1.0.10"
    info, path = await feed.open_download(services, admin, "Web", "1.0.10")
    assert path.read_bytes() == (tmp_path / "Web.1.0.10.zip").read_bytes() and info == shown
    with pytest.raises(NotFound, match=r"Web 3\.0\.0"):
        await feed.get_package(services, admin, "Web", "3.0.0")
    with pytest.raises(NotFound):
        await feed.package_path(services, "Nope", "1.0.0")

    await feed.delete_package(services, admin, "web", "1.0.9")
    assert feed_files(services) == ["api/Api.2.0.0.zip", "web/Web.1.0.10.zip"]
    async with services.read() as session:
        deleted = (
            await session.execute(
                select(t.events).where(t.events.c.category == str(Category.PACKAGE_DELETED))
            )
        ).one()
    assert deleted.details["version"] == "1.0.9"
    with pytest.raises(NotFound):
        await feed.delete_package(services, admin, "web", "1.0.9")


async def test_downloading_and_viewing_need_their_permissions(
    services: Services, admin: Caller, tmp_path: Path
) -> None:
    await push(services, admin, make_zip(tmp_path / "Web.1.0.0.zip", GOOD))
    nobody = await user_with_role(services, "nobody", "Environment Viewer")
    with pytest.raises(PermissionDenied, match="FeedView"):
        await feed.list_packages(services, nobody)
    with pytest.raises(PermissionDenied, match="BuiltInFeedDownload"):
        await feed.open_download(services, nobody, "Web", "1.0.0")
    with pytest.raises(PermissionDenied, match="BuiltInFeedAdminister"):
        await feed.delete_package(services, nobody, "Web", "1.0.0")


# ---------------------------------------------------------------- extract and pack (no database)


def test_extract_writes_files_modes_and_internal_links(tmp_path: Path) -> None:
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("bin/run.sh")
        info.create_system = 3
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, b"#!/bin/sh\necho hi\n")
        zf.writestr("conf/app.ini", b"[app]\n")
    make_zip(tmp_path / "linked.zip", {"conf/app.ini": b"x"}, {"current.ini": "conf/app.ini"})

    dest = tmp_path / "out" / "1.0.0"
    assert archives.extract(archive, dest) == "zip"
    assert (dest / "conf" / "app.ini").read_bytes() == b"[app]\n"
    assert os.access(dest / "bin" / "run.sh", os.X_OK)
    assert not os.access(dest / "conf" / "app.ini", os.X_OK)

    linked = tmp_path / "linked"
    archives.extract(tmp_path / "linked.zip", linked)
    assert (linked / "current.ini").is_symlink() and (linked / "current.ini").read_bytes() == b"x"

    tgz = make_tgz(tmp_path / "src.tgz", GOOD, {"latest.sql": "migrations/001.sql"})
    archives.extract(tgz, tmp_path / "from-tar")
    assert (tmp_path / "from-tar" / "latest.sql").read_bytes() == GOOD["migrations/001.sql"]

    with pytest.raises(Conflict, match="not an empty folder"):
        archives.extract(archive, dest)


def test_extract_refuses_bad_archives_and_leaves_nothing(tmp_path: Path) -> None:
    bad = make_tgz(tmp_path / "bad.tgz", GOOD, {"passwd": "/etc/passwd"})
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ValidationFailed, match="passwd"):
        archives.extract(bad, dest)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_pack_is_reproducible_and_skips_caches(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    (src / "sql").mkdir(parents=True)
    (src / "__pycache__").mkdir()
    (src / "sql" / "001.sql").write_text("create table x(id int);")
    (src / "deploy.sh").write_text("echo ok")
    (src / "deploy.sh").chmod(0o755)
    (src / "app.pyc").write_bytes(b"\0")
    (src / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")

    first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    archives.pack(src, first, fmt)
    os.utime(src / "deploy.sh", (1_000_000, 1_000_000))  # times must not matter
    archives.pack(src, second, fmt)
    assert first.read_bytes() == second.read_bytes()

    assert archives.inspect_archive(first) == fmt
    out = tmp_path / "out"
    archives.extract(first, out)
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert found == ["deploy.sh", "sql", "sql/001.sql"]
    assert os.access(out / "deploy.sh", os.X_OK)


def test_pack_inside_the_folder_does_not_pack_itself(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    target = tmp_path / "Self.1.0.0.zip"
    archives.pack(tmp_path, target)
    archives.pack(tmp_path, target)
    with zipfile.ZipFile(target) as zf:
        assert zf.namelist() == ["a.txt"]
