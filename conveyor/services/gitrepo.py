"""A git repository read with the ``git`` command: the files changed between two commits, and
the commits in between (build information).

``changed_files(A, B)`` is ``git diff A B``: what differs between the two trees, so a merge
brings the changes of the branch it merged, and a ``since`` that is not an ancestor of ``until``
also reports what ``until`` no longer has (the deployed content is ``since``'s). Compared with
nothing (``since=None``) every file of ``until`` counts, as for a repository's first commit.
Paths arrive NUL-separated (``-z``): spaces, quotes and non-ASCII names come as they are.
Each commit comes with its committer date (ISO 8601 with its offset): lead time for changes
starts there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.domain.errors import ValidationFailed

TIMEOUT = 120.0
# How many commits a filtered listing looks at, at most.
SCAN = 10_000
# Settings of the repository or the user that would change what git prints or runs.
SAFE = ("-c", "core.quotePath=false", "-c", "core.fsmonitor=false", "-c", "log.showSignature=false")


@dataclass(frozen=True)
class FileChange:
    """One line of ``git diff --name-status``: a rename or copy has the old path too."""

    status: str
    path: str
    old_path: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """Both sides of a rename count: the old folder lost a file, the new one gained it."""
        return (self.old_path, self.path) if self.old_path else (self.path,)


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    message: str
    # When it was committed: the committer date, ISO 8601 with its offset (git's ``%cI``).
    timestamp: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """As build information sends it (the server keeps ``timestamp`` in UTC)."""
        out = {"sha": self.sha, "author": self.author, "message": self.message}
        if self.timestamp:
            out["timestamp"] = self.timestamp
        return out


def _decode(raw: bytes) -> str:
    # Git stores path bytes; nearly always UTF-8. Anything else is shown, not crashed on.
    return raw.decode("utf-8", errors="replace")


class Repository:
    """A repository opened at a folder inside its work tree (or a bare repository)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._empty_tree: str | None = None

    @classmethod
    def open(cls, folder: str | Path) -> Repository:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ValidationFailed(f"{folder} is not a folder: pass --repo with the repository's")
        repo = cls(path)
        try:
            repo._git("rev-parse", "--git-dir")
        except ValidationFailed as exc:
            if "not a git repository" not in exc.message:
                # Another refusal (an unsafe owner, say): git's own words say what to do.
                raise ValidationFailed(f"{path.resolve()}: {exc.message}") from exc
            raise ValidationFailed(
                f"{path.resolve()} is not inside a git repository: pass --repo with the folder "
                "of the repository the watch paths are relative to"
            ) from exc
        return repo

    def _git(self, *args: str) -> bytes:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            done = subprocess.run(
                ["git", *SAFE, "-C", str(self.folder), *args],
                capture_output=True,
                env=env,
                timeout=TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ValidationFailed("git is not installed (or not on PATH): install git") from exc
        except subprocess.TimeoutExpired as exc:
            raise ValidationFailed(f"git {args[0]} took over {TIMEOUT:.0f} s; gave up") from exc
        if done.returncode != 0:
            said = " ".join(line.strip() for line in _decode(done.stderr).splitlines() if line)
            raise ValidationFailed(f"git {args[0]} failed: {said[:500] or 'no message'}")
        return done.stdout

    def is_shallow(self) -> bool:
        return self._git("rev-parse", "--is-shallow-repository").strip() == b"true"

    def resolve(self, rev: str) -> str:
        """The full SHA of the commit ``rev`` names; refuses naming the revision otherwise."""
        if not rev or rev.startswith("-") or "\0" in rev:
            raise ValidationFailed(f'"{rev}" is not a revision')
        try:
            out = self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except ValidationFailed:
            hint = (
                " (this clone is shallow: fetch the whole history, e.g. fetch-depth: 0)"
                if self.is_shallow()
                else ""
            )
            raise ValidationFailed(
                f'unknown revision "{rev}": no such commit in the repository at '
                f"{self.folder.resolve()}{hint}"
            ) from None
        return out.decode("ascii").strip()

    def has_commit(self, sha: str) -> bool:
        try:
            self.resolve(sha)
        except ValidationFailed:
            return False
        return True

    def prefix(self) -> str:
        """Where the folder is inside the work tree, like ``examples/shop/`` ("" at its top or
        in a bare repository): paths under it are given relative to it."""
        try:
            return _decode(self._git("rev-parse", "--show-prefix")).strip()
        except ValidationFailed:
            return ""

    def relative(self, paths: list[str]) -> list[str]:
        """The ``paths`` (relative to the top of the repository) that lie in the folder,
        relative to it: a project's watch paths are relative to the folder ``--repo`` names."""
        prefix = self.prefix()
        return [p[len(prefix) :] for p in paths if p.startswith(prefix)]

    def first_parent(self, sha: str) -> str | None:
        """The first parent of a commit (a merge's is the branch merged into); None for a root."""
        out = self._git("rev-list", "--parents", "-n", "1", sha).decode("ascii").split()
        return out[1] if len(out) > 1 else None

    def empty_tree(self) -> str:
        """The empty tree's id, in this repository's hash (SHA-1 or SHA-256)."""
        if self._empty_tree is None:
            self._empty_tree = self._git("hash-object", "-t", "tree", os.devnull).decode().strip()
        return self._empty_tree

    def changed_files(self, since: str | None, until: str) -> list[FileChange]:
        """``git diff since until`` by name and status; ``since=None``: every file of ``until``."""
        base = since if since is not None else self.empty_tree()
        raw = self._git(
            "diff",
            "--name-status",
            "-z",
            "--find-renames",
            "--no-ext-diff",
            "--no-textconv",
            "--no-relative",
            base,
            until,
            "--",
        )
        return parse_name_status(raw)

    def commits(
        self,
        since: str | None,
        until: str,
        limit: int,
        touching: Callable[[list[str]], bool] | None = None,
    ) -> list[Commit]:
        """Commits reachable from ``until`` and not from ``since`` (all when None), newest
        first, at most ``limit``: the side-branch commits a merge brings are included. With
        ``touching``, only the commits whose files (a merge's: against its first parent) it
        accepts; at most ``SCAN`` commits are looked at."""
        excluded = [f"^{since}"] if since else []
        files = ["--name-only", "--no-renames", "--diff-merges=first-parent"] if touching else []
        raw = self._git(
            "log",
            "-z",
            f"--max-count={SCAN if touching else limit}",
            "--no-color",
            "--format=%x1e%H%x1f%an <%ae>%x1f%cI%x1f%B",
            *files,
            until,
            *excluded,
            "--",
        )
        out = []
        for commit, paths in parse_log(raw):
            if touching is None or touching(paths):
                out.append(commit)
                if len(out) >= limit:
                    break
        return out


def parse_log(raw: bytes) -> list[tuple[Commit, list[str]]]:
    """``git log -z`` with our format: each commit's header is one NUL-terminated field that
    starts with RS (a message cannot hold NUL) and holds the SHA, author, committer date and
    message, separated by US; the file names after it (``--name-only``) are fields of their
    own, the first one after a newline."""
    out: list[tuple[Commit, list[str]]] = []
    for field in raw.split(b"\0"):
        field = field.removeprefix(b"\n")
        if field.startswith(b"\x1e"):
            sha, author, when, message = (_decode(p) for p in field[1:].split(b"\x1f", 3))
            commit = Commit(sha.strip(), author.strip(), message.strip(), when.strip() or None)
            out.append((commit, []))
        elif field and out:
            out[-1][1].append(_decode(field))
    return out


def parse_name_status(raw: bytes) -> list[FileChange]:
    """``M\\0path\\0R100\\0old\\0new\\0`` -> changes; renames and copies carry two paths."""
    fields = raw.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    out: list[FileChange] = []
    i = 0
    while i < len(fields):
        status = _decode(fields[i])
        if status[:1] in ("R", "C") and i + 2 < len(fields):
            out.append(FileChange(status[0], _decode(fields[i + 2]), _decode(fields[i + 1])))
            i += 3
        elif i + 1 < len(fields):
            out.append(FileChange(status[:1], _decode(fields[i + 1])))
            i += 2
        else:  # pragma: no cover - git always pairs a status with its path
            break
    return out
