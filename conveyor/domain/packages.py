"""Package ids, versions and file names: the pure rules of the built-in feed.

A package file is named ``<id>.<version>.<ext>`` (``OctoPetShop.Database.1.0.1.zip``); ids are
letters, digits and single ``.``, ``_`` or ``-`` between them (NuGet's rule, which keeps ids
safe as folder and file names), compared without case.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.versions import is_valid_version, parse_version

ZIP = "zip"
TAR_GZ = "tar.gz"
FORMATS = (ZIP, TAR_GZ)
# Longest first, so that "x.tar.gz" is not read as "x.tar" + ".gz".
EXTENSIONS: tuple[tuple[str, str], ...] = ((".tar.gz", TAR_GZ), (".tgz", TAR_GZ), (".zip", ZIP))

_ID = re.compile(r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*")
MAX_ID = 100
ID_EXAMPLE = "letters, digits, '.', '_' and '-', like OctoPetShop.Database"
NAME_EXAMPLE = "<id>.<version>.zip, like OctoPetShop.Database.1.0.1.zip"


def _base(file_name: str) -> str:
    # The client's file name may carry its folders, in either style.
    return re.split(r"[/\\]", file_name)[-1]


def format_of_name(file_name: str) -> tuple[str, str] | None:
    """``"Shop.1.0.0.tar.gz"`` -> ``("Shop.1.0.0", "tar.gz")``; None when not a package name."""
    lower = file_name.lower()
    for ext, fmt in EXTENSIONS:
        if lower.endswith(ext) and len(file_name) > len(ext):
            return file_name[: -len(ext)], fmt
    return None


def extension(fmt: str) -> str:
    return "zip" if fmt == ZIP else "tar.gz"


def package_key(package_id: str) -> str:
    return package_id.lower()


def validate_package_id(package_id: str) -> str:
    package_id = package_id.strip()
    if not package_id or len(package_id) > MAX_ID or not _ID.fullmatch(package_id):
        raise ValidationFailed(
            Problem(("package_id",), f'"{package_id}" is not a package id: use {ID_EXAMPLE}')
        )
    return package_id


def split_file_name(file_name: str) -> tuple[str, str, str] | None:
    """``"Shop.Db.1.0.0-beta.1.zip"`` -> ``("Shop.Db", "1.0.0-beta.1", "zip")``: the longest
    valid version suffix wins; None when the name is not ``<id>.<version>.<ext>``."""
    split = format_of_name(_base(file_name))
    if split is None:
        return None
    stem, fmt = split
    parts = stem.split(".")
    for i in range(1, len(parts)):
        package_id, version = ".".join(parts[:i]), ".".join(parts[i:])
        if _ID.fullmatch(package_id) and is_valid_version(version):
            return package_id, version, fmt
    return None


def identify(
    file_name: str, package_id: str | None = None, version: str | None = None
) -> tuple[str, str, str | None]:
    """Id, version and the format the name promises: from the flags, the rest from the name."""
    if package_id:
        package_id = validate_package_id(package_id)
    if version:
        _check_version(version)
    declared = format_of_name(_base(file_name))
    stem = declared[0] if declared else ""
    # Given one of the two, the rest of the name is the other, whatever the longest-suffix rule
    # would say about ids that end in numbers.
    if package_id and not version and stem.lower().startswith(package_id.lower() + "."):
        version = stem[len(package_id) + 1 :]
    if version and not package_id and stem:
        package_id = stem.removesuffix("." + version)
    named = split_file_name(file_name)
    if not package_id or not version:
        if named is None:
            raise ValidationFailed(
                Problem(
                    ("file",),
                    f'cannot tell the package id and version from the file name "{file_name}": '
                    f"name it {NAME_EXAMPLE}, or give the id and version",
                )
            )
        package_id, version = package_id or named[0], version or named[1]
    _check_version(version)
    return validate_package_id(package_id), version, declared[1] if declared else None


def _check_version(version: str) -> None:
    try:
        parse_version(version)
    except ValidationFailed as exc:
        raise ValidationFailed(Problem(("version",), exc.message)) from exc


def package_file_name(package_id: str, version: str, fmt: str) -> str:
    return f"{package_id}.{version}.{extension(fmt)}"


def kept_versions(history: Sequence[str], deployed: str, keep: int) -> tuple[list[str], list[str]]:
    """After ``deployed`` went live on a target: the versions the target keeps, oldest first
    and the live one last, and those to remove (all but the newest ``keep``). A version
    deployed again counts as the newest; a rollback to a kept version is then a link switch."""
    order = [v for v in history if v != deployed] + [deployed]
    cut = max(len(order) - max(keep, 1), 0)
    return order[cut:], order[:cut]
