"""Packages on an ssh target: sent only when the machine lacks that exact file (sha256),
verified there, extracted into a folder of their version, ``current`` switched atomically, the
last few versions kept (a rollback to one is a link switch, nothing sent or extracted).

Two commands per package on the machine: one reads what it holds, one puts the package in
place. What a machine needs for them: bash, coreutils (sha256sum, ``mv -T``), tar with gzip for
.tar.gz packages, python3 or unzip for .zip packages.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import shlex
from pathlib import Path, PurePosixPath

import asyncssh

from conveyor.domain.documents import slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.packages import kept_versions
from conveyor.domain.targets import Layout
from conveyor.engine.ssh_connections import Link
from conveyor.engine.steps.base import StepContext
from conveyor.services.packages import FeedFile

# Reads what is on the machine already: the kept package file's sha256, whether the version's
# folder exists, and the two records of kept versions (the project's and the package files').
PROBE = r"""
for tool in sha256sum tar mv ln; do
  command -v "$tool" >/dev/null || { echo "this machine lacks $tool" >&2; exit 3; }
done
if [ -f "$1" ]; then sha256sum -- "$1" | cut -d' ' -f1; else echo -; fi
if [ -d "$2" ]; then echo dir; else echo none; fi
if [ -f "$3" ]; then tr -d '\n' < "$3"; fi; echo
if [ -f "$4" ]; then tr -d '\n' < "$4"; fi; echo
"""

# Verifies what was sent, extracts into a staging folder renamed to the version's folder,
# switches `current` atomically, removes the versions no longer kept, writes the records.
INSTALL = r"""
set -eu
package=$1 sent=$2 sha=$3 base=$4 version=$5 format=$6 record=$7 kept=$8
packages=$9 package_record=${10} package_kept=${11}
shift 11
if [ -n "$sent" ]; then
  got=$(sha256sum -- "$sent" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    rm -f -- "$sent"
    echo "the package arrived damaged (sha256 $got, expected $sha)" >&2; exit 3
  fi
  mv -f -- "$sent" "$package"
fi
mkdir -p -- "$base"
if [ "$format" != none ]; then
  staging="$base/.$version.incoming-$$"
  rm -rf -- "$staging"; mkdir -p -- "$staging"
  case "$format" in
    tar) tar -xzf "$package" -C "$staging" ;;
    zip)
      if command -v python3 >/dev/null; then python3 -m zipfile -e "$package" "$staging"
      elif command -v unzip >/dev/null; then unzip -q "$package" -d "$staging"
      else rm -rf -- "$staging"
        echo "this machine can extract no .zip package: install python3 or unzip" >&2; exit 4
      fi ;;
  esac
  rm -rf -- "${base:?}/$version"
  mv -T -- "$staging" "$base/$version"
fi
ln -sfn -- "$version" "$base/.current.incoming"
mv -Tf -- "$base/.current.incoming" "$base/current"
while [ $# -gt 0 ]; do
  case "$1" in
    version:*) rm -rf -- "${base:?}/${1#version:}" ;;
    file:*) rm -f -- "${packages:?}/${1#file:}" ;;
  esac
  shift
done
printf '%s\n' "$kept" > "$record.incoming"; mv -f -- "$record.incoming" "$record"
if [ -n "$package_kept" ]; then
  printf '%s\n' "$package_kept" > "$package_record.incoming"
  mv -f -- "$package_record.incoming" "$package_record"
fi
"""


def bash(script: str, *args: str) -> str:
    """A command line that runs ``script`` with ``args`` (paths, never a secret) in bash."""
    return " ".join(
        ["bash", "--noprofile", "--norc", "-c", shlex.quote(script), "conveyor"]
        + [shlex.quote(a) for a in args]
    )


def archive_format(name: str) -> tuple[str, str]:
    """(``tar`` or ``zip``, the file name's suffix) of a package archive."""
    lowered = name.lower()
    for suffix, fmt in ((".tar.gz", "tar"), (".tgz", "tar"), (".zip", "zip")):
        if lowered.endswith(suffix):
            return fmt, suffix
    raise ConveyorError(f"{name}: an ssh target takes .zip, .tar.gz and .tgz packages")


async def install(link: Link, ctx: StepContext, what: FeedFile, keep: int) -> PurePosixPath:
    """Put ``what`` on ``link``'s machine, in this project's folder of this environment;
    the version's folder, as the machine sees it."""
    fmt, suffix = archive_format(what.path.name)
    name, version, sha = link.target.name, what.version, what.sha256
    layout = Layout(link.root)
    base = layout.project(ctx.run.environment.name, ctx.run.project.name)
    folder = posixpath.join(base, version)
    record = posixpath.join(posixpath.dirname(base), f".{posixpath.basename(base)}.versions.json")
    package_file = layout.package_file(what.package, version, suffix)
    packages = posixpath.dirname(package_file)
    package_record = posixpath.join(packages, f".{slugify(what.package)}.files.json")
    probe = await link.run(
        bash(PROBE, package_file, folder, record, package_record),
        check="cannot read what the machine holds",
    )
    there, has_folder, versions_text, files_text = (
        [*str(probe.stdout or "").split("\n"), "", "", "", ""]
    )[:4]
    history, digests = _versions(versions_text)
    # A kept version extracted from this very file is used as it is: a rollback.
    extract = not (has_folder == "dir" and digests.get(version) == sha)
    sent = ""
    if not extract:
        ctx.say(f"{what.package} {version} is already on {name}: nothing sent")
    elif there == sha:
        ctx.say(f"The package file is already on {name}: nothing sent")
    else:
        sent = f"{package_file}.incoming-{secrets.token_hex(4)}"
        await _send(link, what.path, sent, packages)
        ctx.say(f"Sent {what.path.name} to {name} ({what.size} bytes)")
    kept, stale = kept_versions(history, version, keep)
    digests = {v: s for v, s in (digests | {version: sha}).items() if v in kept}
    removals = [f"version:{v}" for v in stale if _plain(v)]
    package_kept = ""
    if extract:  # the package file was used: it counts as the newest of its package
        files, old_files = kept_versions(_names(files_text), posixpath.basename(package_file), keep)
        removals += [f"file:{old}" for old in old_files if _plain(old)]
        package_kept = json.dumps(files)
    await link.run(
        bash(
            INSTALL,
            package_file,
            sent,
            sha,
            base,
            version,
            fmt if extract else "none",
            record,
            json.dumps({"kept": kept, "sha256": digests}),
            packages,
            package_record,
            package_kept,
            *removals,
        ),
        check=f"cannot install {what.package} {version}",
    )
    return PurePosixPath(folder)


async def _send(link: Link, archive: Path, remote: str, folder: str) -> None:
    try:
        sftp = await link.sftp()
        await sftp.makedirs(folder, exist_ok=True)
        await sftp.put(str(archive), remote)
    except (asyncssh.Error, OSError) as exc:
        if not link.alive:
            raise link.lost(exc) from None
        raise ConveyorError(f"cannot send {archive.name} to {link.target.name}: {exc}") from None


def _versions(text: str) -> tuple[list[str], dict[str, str]]:
    """The project's record of kept versions on a machine: versions, oldest first, and the
    sha256 of the package each was extracted from. Anything unreadable counts as none."""
    try:
        found = json.loads(text) if text.strip() else {}
    except ValueError:
        return [], {}
    if not isinstance(found, dict):
        return [], {}
    kept = [str(v) for v in found.get("kept", []) if isinstance(v, str)]
    sums = found.get("sha256", {})
    digests = {str(k): str(v) for k, v in sums.items()} if isinstance(sums, dict) else {}
    return kept, digests


def _plain(name: str) -> bool:
    """A name from a record on the machine that is safe to remove beside its siblings (a
    script could have written anything there)."""
    return bool(name) and "/" not in name and name not in (".", "..")


def _names(text: str) -> list[str]:
    try:
        found = json.loads(text) if text.strip() else []
    except ValueError:
        return []
    return [str(v) for v in found] if isinstance(found, list) else []
