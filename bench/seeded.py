"""What the benchmarks start from: a server's database initialised, a configuration applied as
the administrator, and the row ids of its projects and environments for the bulk inserts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from conveyor.services.access import caller_for_user, get_user
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.users import initialise
from conveyor.store import tables as t


async def seeded(services: Services, config: str) -> tuple[Caller, list[int], list[int]]:
    """The administrator, and the ids of the projects and of the environments, in order."""
    await initialise(services)
    async with services.read() as session:
        admin = await caller_for_user(session, await get_user(session, "admin"))
    await apply_text(services, admin, config)
    async with services.read() as session:
        projects = (await session.execute(select(t.projects.c.id).order_by(t.projects.c.id))).all()
        envs = (
            await session.execute(select(t.environments.c.id).order_by(t.environments.c.id))
        ).all()
    return admin, [int(p.id) for p in projects], [int(e.id) for e in envs]
