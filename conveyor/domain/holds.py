"""What holds a release back: a pin keeps a release in an environment, a block keeps a release
from going anywhere it has not been yet, and a rollback is deploying an older release.

Each rule answers with the sentence a person reads (None when nothing holds): the same sentence
in the plan, in the refusal of a deployment, and in the log of a train's skipped child.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.domain.versions import Version


@dataclass(frozen=True)
class Pin:
    """A release pinned in an environment: automatic deployments and trains leave it there."""

    project: str
    version: str
    reason: str
    by: str

    def describe(self, environment: str) -> str:
        return (
            f"{self.project} {self.version} is pinned in {environment} by {self.by}: {self.reason}"
        )


@dataclass(frozen=True)
class Block:
    """A release blocked from being promoted further."""

    reason: str
    by: str


def unpin_hint(project: str, environment: str) -> str:
    return f'conveyor release unpin --project "{project}" --environment "{environment}"'


def pin_refusal(pin: Pin | None, version: str, environment: str) -> str | None:
    """Why a deployment of ``version`` may not go to ``environment``, where ``pin`` holds another
    release; None when nothing is pinned or the pinned release itself is redeployed."""
    if pin is None or Version(pin.version) == Version(version):
        return None
    return (
        f"{pin.describe(environment)}; to deploy another release there, unpin it first: "
        f"{unpin_hint(pin.project, environment)}"
    )


def block_refusal(block: Block | None, succeeded_there: bool) -> str | None:
    """Why a blocked release may not go to an environment (``succeeded_there``: it already
    succeeded in it). A block stops promotion only: redeploying where it succeeded is allowed."""
    if block is None or succeeded_there:
        return None
    return (
        f"it is blocked by {block.by}: {block.reason}; a blocked release may only be redeployed "
        "where it already succeeded (unblock it with conveyor release unblock)"
    )


def is_rollback(version: str, current: str | None) -> bool:
    """Deploying ``version`` where ``current`` (the last successful release) is newer."""
    return current is not None and Version(version) < Version(current)
