"""What may be done next with a deployed release: promote it, redeploy it, retry it, roll back.

Each move names a release and an environment and leads to the plan page of that deployment, which
shows what would run (and whether the lifecycle and the permissions allow it) before anything is
queued. The rules here only choose which moves are worth offering:

- retry: the newest deployment in an environment failed (or was canceled, or timed out);
- redeploy: the release is the current one there (the last that succeeded);
- promote: the release is current there, and the environment after it in the lifecycle has
  neither it nor a deployment of it;
- roll back: to the newest release that succeeded there before the current one and is older
  than it (a newer one would be a roll forward, which "Promote" and "Deploy" already offer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from itertools import pairwise
from typing import NamedTuple

from conveyor.domain.documents import Lifecycle, key
from conveyor.domain.versions import Version

# A deployment that ended without success: retrying it is a new deployment of the same release.
UNSUCCESSFUL = frozenset({"failed", "canceled", "timed_out"})


class MoveKind(StrEnum):
    PROMOTE = "promote"
    REDEPLOY = "redeploy"
    RETRY = "retry"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Move:
    kind: MoveKind
    version: str  # the release to deploy
    environment: str

    @property
    def label(self) -> str:
        if self.kind is MoveKind.PROMOTE:
            return f"Promote to {self.environment}…"
        if self.kind is MoveKind.REDEPLOY:
            return f"Redeploy to {self.environment}…"
        if self.kind is MoveKind.RETRY:
            return f"Retry in {self.environment}…"
        return f"Roll back to {self.version} in {self.environment}…"


class Place(NamedTuple):
    """A project in one environment, as the dashboard projection has it (a tuple: the
    dashboard makes one per cell)."""

    environment: str
    latest_deployment: int | None = None  # the newest deployment there, whatever its state
    latest_version: str | None = None
    latest_state: str | None = None
    current: str | None = None  # the release that last succeeded there
    rollback_to: str | None = None  # see rollback_target


def lifecycle_order(lifecycle: Lifecycle | None) -> tuple[str, ...]:
    """The lifecycle's environments in phase order, each once (an automatic one counts too)."""
    seen: set[str] = set()
    out: list[str] = []
    for phase in lifecycle.phases if lifecycle else ():
        for env in (*phase.environments, *phase.automatic):
            if key(env) not in seen:
                seen.add(key(env))
                out.append(env)
    return tuple(out)


def next_environment(order: Sequence[str], environment: str) -> str | None:
    return _following(tuple(order)).get(key(environment))


@cache
def _following(order: tuple[str, ...]) -> dict[str, str]:
    # The dashboard asks this for every cell; a few lifecycles answer all of them.
    return {key(env): after for env, after in pairwise(order)}


def rollback_target(current: str | None, succeeded_newest_first: Iterable[str]) -> str | None:
    """The newest release that succeeded in the environment and is older than ``current``."""
    if current is None:
        return None
    now = Version(current)
    return next((v for v in succeeded_newest_first if Version(v) < now), None)


def after_deployment(
    version: str,
    environment: str,
    state: str,
    deployment: int | None,
    places: Mapping[str, Place],
    order: Sequence[str],
) -> list[Move]:
    """The moves from one deployment of ``version`` to ``environment`` (``places`` by ``key``)."""
    here = places.get(key(environment))
    if here is None:
        return []
    moves: list[Move] = []
    newest = deployment is not None and here.latest_deployment == deployment
    if state in UNSUCCESSFUL and newest:
        moves.append(Move(MoveKind.RETRY, version, here.environment))
    # Versions are compared as text: each comes from one release row, and a project has one
    # release per version (the dashboard reads these for thousands of cells).
    if here.current != version:
        return moves
    following = next_environment(order, here.environment)
    there = places.get(key(following)) if following else None
    if following is not None and not _reached(there, version):
        moves.append(Move(MoveKind.PROMOTE, version, following))
    moves.append(Move(MoveKind.REDEPLOY, version, here.environment))
    if here.rollback_to is not None:
        moves.append(Move(MoveKind.ROLLBACK, here.rollback_to, here.environment))
    return moves


def _reached(place: Place | None, version: str) -> bool:
    return place is not None and version in (place.current, place.latest_version)


def unique(moves: Iterable[Move]) -> list[Move]:
    """Each move once, in the order first given."""
    seen: set[tuple[MoveKind, str, str]] = set()
    out: list[Move] = []
    for move in moves:
        ident = (move.kind, move.version, key(move.environment))
        if ident not in seen:
            seen.add(ident)
            out.append(move)
    return out
