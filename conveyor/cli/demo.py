"""`conveyor demo`: a fresh data folder with the Octo Pet Shop example, ready to click through."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.cli.output import Failure, say
from conveyor.cli.startup import check_port, opening_storage

MARKER = ".conveyor-demo"
# The example lives once, at examples/octopetshop of the repository. A wheel ships it as package
# data (setup.py copies it to conveyor/examples/octopetshop at build time); a checkout or an
# editable install (`make install`) reads the repository's folder.
PACKAGED_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "octopetshop"
CHECKOUT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "octopetshop"
DEMO_USERS = ("dev", "qa", "owner", "auditor", "ops")
# (folder of examples/octopetshop, package id, project): what the build server ships.
COMPONENTS = (
    ("database", "OctoPetShop.Database", "Database"),
    ("src/ShoppingCartService", "OctoPetShop.ShoppingCartService", "Shopping Cart Service"),
    ("src/ProductService", "OctoPetShop.ProductService", "Product Service"),
    ("src/Web", "OctoPetShop.Web", "Website"),
)
ORCHESTRATOR = "Deploy All"


def example_folder() -> Path:
    """The Octo Pet Shop example of this installation: the wheel's copy, else the checkout's."""
    for folder in (PACKAGED_EXAMPLE, CHECKOUT_EXAMPLE):
        if (folder / "conveyor.yaml").is_file():
            return folder
    raise Failure(
        "server_error",
        f"the Octo Pet Shop example is missing from this installation (looked in "
        f"{PACKAGED_EXAMPLE} and {CHECKOUT_EXAMPLE}): reinstall Conveyor from its wheel",
    )


def port_free(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a port in use up front, with the option to change (not after minutes of set-up,
    nor as the server's own exit status, which would mean something else here)."""
    check_port(port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        message = f"cannot listen on {host}: {exc.strerror}; check --host"
        raise Failure("bad_input", message) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(address)
        except OSError as exc:
            raise Failure(
                "bad_input",
                f"cannot listen on {host} port {port} ({exc.strerror}): choose another with --port",
            ) from exc


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


@dataclass(frozen=True)
class Demo:
    passwords: dict[str, str]  # username -> password, admin first
    api_key: str  # the admin's, for the CLI


async def prepare(data_dir: Path, example: Path) -> Demo:
    """Database, admin, the example applied, demo passwords, first releases shipped."""
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
        example_text = (example / "conveyor.yaml").read_text(encoding="utf-8")
        await apply_text(services, admin, example_text, source="examples/octopetshop")
        passwords = {"admin": init.password or ""}
        for username in DEMO_USERS:
            password = f"{username}-{secrets.token_hex(4)}"
            await set_password(services, system_caller(), username, password)
            passwords[username] = password
        await ship_first_releases(services, data_dir, example)
        return Demo(passwords, init.api_key or "")
    finally:
        await services.close()


async def ship_first_releases(services: Any, data_dir: Path, sources: Path) -> None:
    """What the build server does: pack each component, push it, create its first release
    (which deploys itself to Development once the server's engine runs)."""
    from conveyor.services import archives, packages
    from conveyor.services.access import caller_for_user, get_user
    from conveyor.services.deployments import create_release

    async with services.read() as session:
        build = await caller_for_user(session, await get_user(session, "build"))
    built = data_dir / "build"
    built.mkdir(exist_ok=True)
    for folder, package_id, project in COMPONENTS:
        version = (sources / folder / "VERSION").read_text().strip()
        archive = built / f"{package_id}.{version}.zip"
        archives.pack(sources / folder, archive)

        async def chunks(path: Path = archive) -> AsyncIterator[bytes]:
            yield path.read_bytes()

        await packages.push_package(services, build, chunks(), file_name=archive.name)
        await create_release(services, build, project, version=version, notes="First release")
    # Deploy All's first release too (not deployed: it starts in Test), so that the next one
    # is suggested after it (1.0.1), as the README's walk-through does, not 0.0.1.
    async with services.read() as session:
        admin = await caller_for_user(session, await get_user(session, "admin"))
    await create_release(services, admin, ORCHESTRATOR, version="1.0.0", notes="First release")


def run_demo(port: int, data_dir: Path) -> None:
    import uvicorn

    from conveyor.api.app import create_app
    from conveyor.cli.startup import GRACEFUL_SHUTDOWN_SECONDS
    from conveyor.settings import Settings

    data_dir = data_dir.resolve()
    port_free(port)
    example = example_folder()
    with opening_storage(data_dir, None, folder_option="--data-dir"):
        fresh_folder(data_dir)
        os.environ["CONVEYOR_DATA_DIR"] = str(data_dir)
        demo = asyncio.run(prepare(data_dir, example))
    url = f"http://127.0.0.1:{port}"
    say("Conveyor demo: the Octo Pet Shop")
    say(f"  data folder: {data_dir}")
    say("  the first releases of the four components are deploying to Development")
    say(f"  open {url} and sign in as one of:")
    for username, password in demo.passwords.items():
        say(f"    {username:<8} {password}")
    say("  or use the command line as admin:")
    say(f"    export CONVEYOR_SERVER={url} CONVEYOR_API_KEY={demo.api_key}")
    installed = Path(sys.argv[0]).resolve().parent
    if shutil.which("conveyor") is None:  # `make demo` installs it in .venv/bin
        say(f'    export PATH="{installed}:$PATH"')
    say("    conveyor dashboard")
    say("  Stop with Ctrl+C.")
    settings = Settings(data_dir=data_dir, database_url=None, port=port)
    from conveyor.engine.sandbox import status as sandbox_status

    say(f"  {sandbox_status(settings).describe()}")
    # X-Forwarded-For is Conveyor's to judge (trusted_proxies), not uvicorn's.
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
