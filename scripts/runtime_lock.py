"""Print the part of requirements.lock that a Conveyor wheel needs at run time, hashes kept.

    python scripts/runtime_lock.py requirements.lock dist/conveyor-*.whl > runtime.lock
    pip install --require-hashes --only-binary :all: -r runtime.lock

requirements.lock pins the whole development set (``--extra dev``: pytest, mypy, Playwright, …).
An installation needs only the wheel's own ``Requires-Dist`` (those without an ``extra`` marker)
and what they need in turn, which the lock's ``# via`` notes tell: a package is kept when any
package it is there for is kept. The Dockerfile uses it so the image installs exactly the
locked, hash-checked versions and nothing of the development tools. Standard library only.
"""

from __future__ import annotations

import re
import sys
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
PROJECT = "conveyor"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    lines: list[str] = field(default_factory=list)  # the pin and its hashes, as in the lock
    via: set[str] = field(default_factory=set)


def read_lock(text: str) -> dict[str, Entry]:
    """The lock's entries by canonical name, with the packages each one is there for."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    listing = False  # inside a multi-line "# via" list
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line[0].isspace() and not stripped.startswith("#"):
            match = NAME.match(stripped)
            if match is None:
                raise SystemExit(f"cannot read this line of the lock: {line!r}")
            current = entries.setdefault(canonical(match[0]), Entry(canonical(match[0])))
            current.lines.append(line)
            listing = False
        elif current is None:
            continue  # the header comments
        elif stripped.startswith("--hash") or current.lines[-1].endswith("\\"):
            if not stripped.startswith("#"):
                current.lines.append(line)
        elif stripped == "# via":
            listing = True
        elif stripped.startswith("# via "):
            current.via.add(parent(stripped.removeprefix("# via ")))
            listing = False
        elif listing and stripped.startswith("#   "):
            current.via.add(parent(stripped.removeprefix("#   ")))
    return entries


def parent(note: str) -> str:
    """``conveyor (pyproject.toml)`` -> ``conveyor``; ``-r requirements.in`` is nobody."""
    match = NAME.match(note.strip())
    return canonical(match[0]) if match and not note.startswith("-") else ""


def wheel_requirements(wheel: Path) -> list[str]:
    """The canonical names of the wheel's Requires-Dist without an ``extra`` marker."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(metadata).decode("utf-8"))
    names = []
    for requirement in message.get_all("Requires-Dist") or []:
        marker = requirement.partition(";")[2]
        if re.search(r"\bextra\s*==", marker):
            continue
        match = NAME.match(requirement.strip())
        if match:
            names.append(canonical(match[0]))
    return names


def runtime(entries: dict[str, Entry], roots: list[str]) -> list[Entry]:
    missing = sorted(set(roots) - set(entries))
    if missing:
        raise SystemExit(
            f"requirements.lock lacks {', '.join(missing)}, which the wheel requires: "
            "regenerate it with `make lock`"
        )
    kept = set(roots)
    changed = True
    while changed:
        changed = False
        for entry in entries.values():
            if entry.name not in kept and entry.via & kept:
                kept.add(entry.name)
                changed = True
    return [entries[name] for name in sorted(kept)]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    lock, wheel = Path(argv[1]), Path(argv[2])
    entries = read_lock(lock.read_text(encoding="utf-8"))
    kept = runtime(entries, wheel_requirements(wheel))
    unhashed = [e.name for e in kept if not any("--hash=" in line for line in e.lines)]
    if unhashed:
        raise SystemExit(f"requirements.lock has no hashes for {', '.join(unhashed)}")
    print(f"# What {wheel.name} needs at run time, from {lock.name} (scripts/runtime_lock.py)")
    for entry in kept:
        print("\n".join(entry.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
