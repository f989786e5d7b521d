"""`conveyor demo`: a fresh data folder with the Octo Pet Shop example, ready to click through."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from conveyor.cli.output import Failure, say

MARKER = ".conveyor-demo"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "octopetshop" / "conveyor.yaml"
DEMO_USERS = ("dev", "qa", "owner", "auditor", "ops")


def fresh_folder(data_dir: Path) -> None:
    """Start from nothing, but only ever delete a folder that an earlier demo made."""
    if data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise Failure(
                "bad_input",
                f"{data_dir} exists and was not made by `conveyor demo`; "
                "choose another --data-dir or remove it yourself",
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("made by conveyor demo; deleted by the next demo\n")


async def prepare(data_dir: Path, example: Path = EXAMPLE) -> dict[str, str]:
    """Database, admin, the example applied, demo passwords; returns username -> password."""
    from conveyor.services.access import caller_for_user, get_user
    from conveyor.services.configfile import apply_text
    from conveyor.services.core import bootstrap, system_caller
    from conveyor.services.users import initialise, set_password
    from conveyor.settings import Settings
    from conveyor.store.db import upgrade

    settings = Settings(data_dir=data_dir, database_url=None)
    upgrade(settings.resolved_database_url)
    services = bootstrap(settings)
    try:
        init = await initialise(services)
        async with services.read() as session:
            admin = await caller_for_user(session, await get_user(session, "admin"))
        await apply_text(
            services, admin, example.read_text(encoding="utf-8"), source="examples/octopetshop"
        )
        passwords = {"admin": init.password or ""}
        for username in DEMO_USERS:
            password = f"{username}-{secrets.token_hex(4)}"
            await set_password(services, system_caller(), username, password)
            passwords[username] = password
        return passwords
    finally:
        await services.close()


def run_demo(port: int, data_dir: Path) -> None:
    import uvicorn

    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    data_dir = data_dir.resolve()
    fresh_folder(data_dir)
    os.environ["CONVEYOR_DATA_DIR"] = str(data_dir)
    passwords = asyncio.run(prepare(data_dir))
    say("Conveyor demo: the Octo Pet Shop")
    say(f"  data folder: {data_dir}")
    say(f"  open http://127.0.0.1:{port} and sign in as one of:")
    for username, password in passwords.items():
        say(f"    {username:<8} {password}")
    settings = Settings(data_dir=data_dir, database_url=None, port=port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
