from __future__ import annotations

from sqlalchemy import select

from conveyor.services.access import authenticate_api_key
from conveyor.services.config import load
from conveyor.services.core import Services
from conveyor.services.users import initialise
from conveyor.store import tables as t


async def test_first_init_creates_admin_with_working_api_key(services: Services) -> None:
    model = (await load(services)).model
    assert model.has("users", "admin")
    assert model.has("teams", "Administrators")
    assert model.get("user_roles", "Project Deployer").built_in
    # initialise already ran in the fixture: a second run creates nothing new
    again = await initialise(services)
    assert not again.created


async def test_api_key_is_stored_hashed_and_authenticates(services: Services) -> None:
    from conveyor.services.core import system_caller
    from conveyor.services.users import create_api_key

    key = await create_api_key(services, system_caller(), "admin", "test")
    caller = await authenticate_api_key(services, key)
    assert caller.username == "admin"
    async with services.read() as session:
        hashes = (await session.execute(select(t.api_keys.c.key_hash))).scalars().all()
    assert key not in hashes and all(len(h) == 64 for h in hashes)
