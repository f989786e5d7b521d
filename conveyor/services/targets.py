"""Targets at run time: their recorded health, as deployments and `conveyor target list` read it.

Health checks (`conveyor target check`, the periodic check) write one row per target; a change
of state is audited.
"""

from __future__ import annotations

from sqlalchemy import select

from conveyor.domain.documents import slugify
from conveyor.domain.targets import HealthState
from conveyor.services.core import Services
from conveyor.store import tables as t


async def health_states(services: Services) -> dict[str, HealthState]:
    """The last recorded state of each checked target, by the slug of its name."""
    async with services.read() as session:
        rows = (
            await session.execute(select(t.target_health.c.target, t.target_health.c.state))
        ).all()
    return {row.target: HealthState(row.state) for row in rows}


def health_key(name: str) -> str:
    return slugify(name)
