"""Which projects a set of changed files concerns: watch paths matched against paths.

Watch paths are gitignore-style patterns relative to the repository's root (``database/**``,
``src/Web/``, ``*.sql``), read in order with the last match deciding, so ``!`` excludes what an
earlier pattern included (``src/Web/**`` then ``!src/Web/README.md``). A project with no watch
paths never matches: it is not built from the repository. A path may concern several projects
(shared code mapped to each project that is built from it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pathspec

from conveyor.domain.errors import Problem, ValidationFailed


def compile_watch(
    patterns: Sequence[str], where: str = "watch paths"
) -> pathspec.PathSpec[Any] | None:
    """The patterns as one spec, or None when there are none (nothing matches)."""
    if not any(p.strip() for p in patterns):
        return None
    try:
        return pathspec.PathSpec.from_lines("gitignore", patterns)
    except Exception as exc:  # pathspec raises several types for a bad pattern
        raise ValidationFailed(Problem((), f"{where}: a pattern is not valid: {exc}")) from exc


def matching(
    patterns: Sequence[str], paths: Iterable[str], where: str = "watch paths"
) -> list[str]:
    """The paths the patterns select, each once, sorted."""
    spec = compile_watch(patterns, where)
    if spec is None:
        return []
    return sorted({p for p in paths if spec.match_file(p)})


def changed_projects(
    watches: Mapping[str, Sequence[str]], paths: Iterable[str]
) -> dict[str, list[str]]:
    """Project -> the changed paths its watch paths select; only projects with at least one,
    in the order of ``watches``."""
    paths = list(paths)
    out: dict[str, list[str]] = {}
    for project, patterns in watches.items():
        files = matching(patterns, paths, f"the watch paths of {project}")
        if files:
            out[project] = files
    return out
