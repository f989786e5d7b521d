"""Package archives (zip, tar.gz): inspect before trusting, extract safely, pack reproducibly.

The feed inspects every upload and the engine extracts onto targets, so one set of rules decides
what an archive may hold: paths relative to its root, no ``..``, no device files, and links only
to places inside the archive that are reached without passing through another link (a path
through a link can be resolved only on disk, where it may already point elsewhere). Extraction
checks again on disk, and writes into a sibling folder renamed into place, so a refused or
broken archive leaves nothing behind.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import IO

from conveyor.domain.errors import Conflict, ValidationFailed
from conveyor.domain.packages import FORMATS, TAR_GZ, ZIP
from conveyor.settings import Settings

# Packed archives carry this time for every entry (zip cannot express earlier), so that packing
# the same folder twice gives the same bytes.
PACK_EPOCH = (1980, 1, 1, 0, 0, 0)
PACK_MTIME = 315_532_800
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc",)
MAX_LINK_TARGET = 4096
# Zip writers often store no file type at all (0): only these are refused.
_SPECIAL = frozenset({stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK})
_DRIVE = re.compile(r"^[A-Za-z]:")
_FIX = "build it with paths relative to the package root (`conveyor package pack` does)"


@dataclass(frozen=True)
class _Entry:
    path: str  # normalised: relative, "/"-separated, no "." parts
    kind: str  # "file", "dir", "symlink", "hardlink"
    link: str = ""


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may expand to (settings.max_extracted_bytes and the two below)."""

    max_bytes: int = 2 * 1024 * 1024 * 1024
    max_entries: int = 100_000
    max_ratio: int = 200

    @classmethod
    def of(cls, settings: Settings) -> ArchiveLimits:
        return cls(
            settings.max_extracted_bytes,
            settings.max_archive_entries,
            settings.max_compression_ratio,
        )


# Below this much content no archive is a bomb, whatever its ratio (a few KB of zeros).
RATIO_FLOOR = 1 << 20


class _Budget:
    """Counts entries and bytes against the limits, refusing the moment one is passed: with
    the sizes the headers declare when inspecting, with the bytes written when extracting."""

    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.entries = 0
        self.bytes = 0

    def entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ValidationFailed(
                f"the archive holds more than {self.limits.max_entries} entries "
                "(an administrator can raise CONVEYOR_MAX_ARCHIVE_ENTRIES)"
            )

    def add(self, name: str, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise ValidationFailed(
                f'the archive expands to more than {self.limits.max_bytes} bytes (at "{name}") '
                "(an administrator can raise CONVEYOR_MAX_EXTRACTED_BYTES)"
            )
        ratio = self.bytes / self.archive_size
        if self.bytes > RATIO_FLOOR and ratio > self.limits.max_ratio:
            raise ValidationFailed(
                f'the archive expands more than {self.limits.max_ratio} times its size (at "{name}"'
                f"), as a compression bomb does; pack it with less compression or raise "
                "CONVEYOR_MAX_COMPRESSION_RATIO"
            )


def inspect_archive(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> str:
    """The format of the archive at ``path``; ValidationFailed naming the first bad entry, or
    the limit its declared content passes (counted as the headers are read, so a bomb is
    refused at its first huge entry, unexpanded)."""
    fmt = _sniff(path)
    budget = _Budget(limits, path.stat().st_size)
    try:
        entries = list(_zip_entries(path, budget) if fmt == ZIP else _tar_entries(path, budget))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValidationFailed(f"the file is not a readable {fmt} archive: {exc}") from exc
    _check_entries(entries)
    return fmt


def extract(archive_path: Path, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> str:
    """Inspect, then extract into ``destination`` (absent or empty); returns the format. The
    limits are checked again against the bytes actually written, headers being untrusted."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise Conflict(f"cannot extract into {destination}: it exists and is not an empty folder")
    fmt = inspect_archive(archive_path, limits)
    budget = _Budget(limits, archive_path.stat().st_size)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial-{token_hex(4)}")
    partial.mkdir()
    try:
        if fmt == ZIP:
            _extract_zip(archive_path, partial, budget)
        else:
            _extract_tar(archive_path, partial, budget)
        _verify_links(partial)
        if destination.exists():
            destination.rmdir()
        partial.rename(destination)
    except tarfile.FilterError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValidationFailed(f"archive entry refused while extracting: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return fmt


def pack(folder: Path, output: Path, fmt: str = ZIP) -> None:
    """Write ``folder``'s content to ``output`` reproducibly: sorted entries, fixed times and
    owners, modes reduced to 644/755, caches skipped. Written aside, then renamed into place."""
    if fmt not in FORMATS:
        raise ValidationFailed(f'format "{fmt}" is not supported: use zip or tar.gz')
    if not folder.is_dir():
        raise ValidationFailed(f"{folder} is not a folder")
    entries = list(_walk(folder.resolve(), {output.resolve()}))
    if not any(kind == "file" for _, _, kind in entries):
        raise ValidationFailed(f"{folder} holds no files to pack")
    partial = output.with_name(f".{output.name}.partial-{token_hex(4)}")
    try:
        with partial.open("wb") as raw:
            if fmt == ZIP:
                _pack_zip(raw, entries)
            else:
                _pack_tar(raw, entries)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------- inspection


def _sniff(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        raise ValidationFailed("the file is empty")
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return ZIP
    if head.startswith(b"\x1f\x8b"):
        return TAR_GZ
    raise ValidationFailed("the file is not a zip or tar.gz archive")


def _normalise(name: str) -> str:
    """The entry's path relative to the root, or ValidationFailed naming it."""
    if "\x00" in name:
        raise ValidationFailed(f"archive entry {name!r} has a NUL character in its name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise ValidationFailed(f'archive entry "{name}" has an absolute path; {_FIX}')
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise ValidationFailed(f'archive entry "{name}" climbs out of its folder with ".."; {_FIX}')
    return "/".join(parts)


def _zip_entries(path: Path, budget: _Budget) -> Iterator[_Entry]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            budget.entry(info.filename)
            budget.add(info.filename, info.file_size)
            rel = _normalise(info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if stat.S_ISLNK(mode):
                if info.file_size > MAX_LINK_TARGET:
                    raise ValidationFailed(f'archive entry "{info.filename}" is a broken link')
                target = zf.read(info).decode("utf-8", "surrogateescape")
                yield _Entry(rel, "symlink", target)
            elif stat.S_IFMT(mode) in _SPECIAL:
                raise ValidationFailed(
                    f'archive entry "{info.filename}" is a device or special file'
                )
            elif rel:
                yield _Entry(rel, "dir" if info.is_dir() else "file")


def _tar_entries(path: Path, budget: _Budget) -> Iterator[_Entry]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            budget.entry(member.name)
            budget.add(member.name, member.size)
            rel = _normalise(member.name)
            if member.issym():
                yield _Entry(rel, "symlink", member.linkname)
            elif member.islnk():
                yield _Entry(rel, "hardlink", member.linkname)
            elif member.isdir():
                if rel:
                    yield _Entry(rel, "dir")
            elif member.isfile():
                yield _Entry(rel, "file")
            else:
                raise ValidationFailed(f'archive entry "{member.name}" is a device or special file')


def _check_entries(entries: list[_Entry]) -> None:
    links = {e.path for e in entries if e.kind == "symlink"}
    for entry in entries:
        if not entry.path:
            raise ValidationFailed("the archive holds a link without a name")
        through = _through_link(entry.path.split("/")[:-1], links)
        if through:
            raise ValidationFailed(
                f'archive entry "{entry.path}" lies inside the link "{through}"; '
                "links may not be used as folders"
            )
        if entry.kind == "symlink":
            _check_link(entry, links, start=entry.path.split("/")[:-1])
        elif entry.kind == "hardlink":
            _check_link(entry, links, start=[])
    if not any(e.kind == "file" for e in entries):
        raise ValidationFailed("the archive is empty: it holds no files")


def _through_link(parts: list[str], links: set[str]) -> str | None:
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if prefix in links:
            return prefix
    return None


def _check_link(entry: _Entry, links: set[str], start: list[str]) -> None:
    """Resolve the target component by component from ``start``: it must stay inside and
    never pass through another link (hard link targets are relative to the root)."""
    target = entry.link
    outside = f'archive entry "{entry.path}" is a link to "{target}", outside the package'
    if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
        raise ValidationFailed(outside)
    stack = list(start)
    parts = [p for p in re.split(r"[/\\]", target) if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise ValidationFailed(outside)
            stack.pop()
        else:
            stack.append(part)
        # Landing on a link is fine (it was checked itself); going on through one is not.
        if i < len(parts) - 1 and "/".join(stack) in links:
            raise ValidationFailed(
                f'archive entry "{entry.path}" is a link through another link ("{"/".join(stack)}")'
            )


# ---------------------------------------------------------------- extraction


def _extract_tar(archive: Path, root: Path, budget: _Budget) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            budget.entry(member.name)
            # tarfile writes exactly member.size bytes (a short entry is an error).
            budget.add(member.name, member.size)
            # The "data" filter re-checks every path and link on disk (defence in depth).
            tar.extract(member, root, filter="data")


def _copy_counted(src: IO[bytes], dst: IO[bytes], name: str, budget: _Budget) -> None:
    while chunk := src.read(1 << 20):
        budget.add(name, len(chunk))
        dst.write(chunk)


def _extract_zip(archive: Path, root: Path, budget: _Budget) -> None:
    links: list[tuple[Path, str]] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.entry(info.filename)
            rel = _normalise(info.filename)
            if not rel:
                continue
            target = root / rel
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if stat.S_ISLNK(mode):
                links.append((target, zf.read(info).decode("utf-8", "surrogateescape")))
            elif info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    _copy_counted(src, dst, info.filename, budget)
                # Keep "executable" (scripts need it) and nothing else of the stored mode.
                target.chmod(0o755 if mode & 0o111 else 0o644)
    # Links last: no file is ever written through a link made from this archive.
    for path, link in links:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(link)


def _verify_links(root: Path) -> None:
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                rel = path.relative_to(root).as_posix()
                raise ValidationFailed(f'archive entry "{rel}" is a link outside the package')


# ---------------------------------------------------------------- packing


def _walk(root: Path, exclude: set[Path]) -> Iterator[tuple[Path, str, str]]:
    """(path, archive name, kind) in sorted order; refuses links that leave the folder."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        here = Path(dirpath)
        names = sorted(
            [(d, True) for d in dirnames]
            + [(f, False) for f in filenames if not f.endswith(SKIPPED_SUFFIXES)]
        )
        for name, is_dir in names:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                if not path.resolve().is_relative_to(root):
                    raise ValidationFailed(f"{path} is a link outside the folder being packed")
                if is_dir:
                    dirnames.remove(name)  # stored as a link, not walked into
                yield path, rel, "symlink"
            elif path.resolve() in exclude:
                continue
            elif is_dir:
                yield path, rel, "dir"
            elif path.is_file():
                yield path, rel, "file"


def _mode(path: Path, kind: str) -> int:
    if kind == "dir":
        return 0o755
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def _pack_zip(raw: io.BufferedWriter, entries: list[tuple[Path, str, str]]) -> None:
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, rel, kind in entries:
            name = rel + "/" if kind == "dir" else rel
            info = zipfile.ZipInfo(name, date_time=PACK_EPOCH)
            info.create_system = 3
            if kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, os.readlink(path))
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = (stat.S_IFREG | _mode(path, kind)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                big = path.stat().st_size > zipfile.ZIP64_LIMIT
                with path.open("rb") as src, zf.open(info, "w", force_zip64=big) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


def _pack_tar(raw: io.BufferedWriter, entries: list[tuple[Path, str, str]]) -> None:
    # No file name and a zero time in the gzip header, or two packs would differ.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, rel, kind in entries:
            info = tarfile.TarInfo(rel)
            info.mtime = PACK_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
                tar.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = _mode(path, kind)
                info.size = path.stat().st_size
                with path.open("rb") as src:
                    tar.addfile(info, src)
