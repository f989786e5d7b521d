"""`conveyor`: the command line of CLI.md.

Local commands (admin, server, demo) open the database through the services; remote commands
speak the HTTP API with an API key.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from conveyor.cli import release_governance  # noqa: F401  (adds its commands to release)
from conveyor.cli.access_report import ReportFormat, fetch_report, report_table
from conveyor.cli.agents import agent_app
from conveyor.cli.approvals import approval_app
from conveyor.cli.audit import audit_app
from conveyor.cli.changes import changes
from conveyor.cli.client import Client
from conveyor.cli.deliveries import delivery_app
from conveyor.cli.deployments import dashboard, deployment_app
from conveyor.cli.insights import insights
from conveyor.cli.interruptions import interruption_app
from conveyor.cli.login import login
from conveyor.cli.nodes import node_app
from conveyor.cli.output import Failure, Format, emit_json, fail, say
from conveyor.cli.packages import packages_app
from conveyor.cli.releases import release_app
from conveyor.cli.retention import retention_app
from conveyor.cli.targets import target_app
from conveyor.cli.tasks import task_app
from conveyor.domain.errors import ConveyorError

T = TypeVar("T")

app = typer.Typer(
    name="conveyor",
    help="Conveyor: ship a multi-component application through your environments, in order.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
admin_app = typer.Typer(
    help="Set-up and recovery: open the database directly.", no_args_is_help=True
)
admin_user_app = typer.Typer(help="Users and service accounts.", no_args_is_help=True)
admin_key_app = typer.Typer(help="API keys.", no_args_is_help=True)
permissions_app = typer.Typer(help="Who may do what, and why.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
admin_app.add_typer(admin_user_app, name="user")
admin_app.add_typer(admin_key_app, name="api-key")
app.add_typer(permissions_app, name="permissions")
app.add_typer(packages_app, name="package")
app.add_typer(release_app, name="release")
app.add_typer(deployment_app, name="deployment")
app.add_typer(task_app, name="task")
app.add_typer(interruption_app, name="interruption")
app.add_typer(audit_app, name="audit")
app.add_typer(delivery_app, name="delivery")
app.add_typer(node_app, name="node")
app.add_typer(agent_app, name="agent")
app.add_typer(target_app, name="target")
app.add_typer(approval_app, name="approval")
app.add_typer(retention_app, name="retention")
app.command("login")(login)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]


def run(fmt: Format, work: Callable[[], T]) -> T:
    """Run a command body, turning every expected error into CLI.md's exit code."""
    try:
        return work()
    except Failure as exc:
        fail(exc, fmt)
    except ConveyorError as exc:
        fail(exc, fmt)


def run_async(fmt: Format, work: Callable[[], Awaitable[T]]) -> T:
    """Run a local command's work on the data folder and database (errors opening them
    become one sentence: conveyor.cli.startup)."""
    import asyncio  # only local commands need it; remote ones start faster without

    from conveyor.cli.startup import opening_storage

    settings = _settings()

    def body() -> T:
        with opening_storage(settings.data_dir, settings.database_url):
            return asyncio.run(work())  # type: ignore[arg-type]

    return run(fmt, body)


def _settings() -> Any:
    from conveyor.cli.startup import load_settings

    return run(Format.TEXT, load_settings)


# ---------------------------------------------------------------- admin (local)


@admin_app.command("init")
def admin_init(output: OutputOpt = Format.TEXT) -> None:
    """Create or upgrade the database; the first run creates user admin and prints its secrets."""
    from conveyor.services.core import bootstrap
    from conveyor.services.users import initialise
    from conveyor.store.db import current_revision, head_revision, sqlite_file, upgrade

    settings = _settings()
    url = settings.resolved_database_url

    async def work() -> tuple[Any, bool]:
        file = sqlite_file(url)
        before = current_revision(url) if file is None or file.exists() else None
        upgrade(url)
        # Upgraded: there was a schema, and an older one (not a first creation, not a no-op).
        upgraded = before is not None and before != head_revision()
        services = bootstrap(settings)
        try:
            return await initialise(services), upgraded
        finally:
            await services.close()

    result, upgraded = run_async(output, work)
    if output == Format.JSON:
        emit_json(
            {"username": result.username, "password": result.password, "api_key": result.api_key}
            if result.created
            else {"username": None, "password": None, "api_key": None, "upgraded": upgraded}
        )
        return
    if result.created:
        say(f"Database ready at {url}")
        say(f"Created user {result.username} (System Administrator).")
        say(f"  password: {result.password}")
        say(f"  API key:  {result.api_key}")
        say("Keep them safe: they are shown only once.")
    elif upgraded:
        say(f"Database upgraded to the newest schema at {url}")
    else:
        say(f"Database is up to date at {url}")


@admin_user_app.command("add")
def admin_user_add(
    username: Annotated[str, typer.Argument(metavar="USERNAME", help="The name to sign in with")],
    email: Annotated[str, typer.Option("--email")] = "",
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    service_account: Annotated[bool, typer.Option("--service-account")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Add a user (or a service account, which signs in with API keys only)."""
    if password_stdin and service_account:
        fail(
            Failure("bad_input", "a service account has no password; omit --password-stdin"), output
        )
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None

    from conveyor.services.core import bootstrap, system_caller
    from conveyor.services.users import add_user

    settings = _settings()

    async def work() -> None:
        services = bootstrap(settings)
        try:
            await add_user(
                services,
                system_caller(),
                username,
                email=email,
                display_name=display_name,
                service_account=service_account,
                password=password,
            )
        finally:
            await services.close()

    run_async(output, work)
    if output == Format.JSON:
        emit_json({"username": username, "service_account": service_account})
    else:
        say(f"Added {'service account' if service_account else 'user'} {username}.")


@admin_user_app.command("set-password")
def admin_user_set_password(
    username: Annotated[str, typer.Argument(metavar="USER", help="Whose password to set")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Set a user's password (an operator's recovery: no current password); their web sessions
    end."""
    if not password_stdin:
        fail(
            Failure(
                "bad_input",
                "give the new password on standard input with --password-stdin "
                "(never on the command line, where other users of the machine can see it)",
            ),
            output,
        )
    password = sys.stdin.readline().rstrip("\r\n")

    from conveyor.services.core import bootstrap, system_caller
    from conveyor.services.users import set_password

    settings = _settings()

    async def work() -> None:
        services = bootstrap(settings)
        try:
            await set_password(services, system_caller(), username, password)
        finally:
            await services.close()

    run_async(output, work)
    if output == Format.JSON:
        emit_json({"username": username, "password_set": True})
    else:
        say(f"Set the password of {username}; their web sessions were signed out.")


@admin_key_app.command("create")
def admin_api_key_create(
    user: Annotated[str, typer.Option("--user", help="The user the key acts as")],
    name: Annotated[str, typer.Option("--name", help="What the key is for")] = "created by admin",
    output: OutputOpt = Format.TEXT,
) -> None:
    """Create an API key for a user; it is printed once."""
    from conveyor.services.core import bootstrap, system_caller
    from conveyor.services.users import create_api_key

    settings = _settings()

    async def work() -> str:
        services = bootstrap(settings)
        try:
            return await create_api_key(services, system_caller(), user, name)
        finally:
            await services.close()

    api_key = run_async(output, work)
    if output == Format.JSON:
        emit_json({"user": user, "api_key": api_key})
    else:
        say(api_key)


# ---------------------------------------------------------------- server and demo


def refuse_fast_hashing(settings: Any) -> None:
    """Cheap password hashes are for the test suite: a server people sign in to refuses them."""
    from conveyor.services.credentials import FAST_HASHING_REFUSED

    if settings.insecure_fast_password_hashing:
        fail(Failure("bad_input", FAST_HASHING_REFUSED))


@app.command("server")
def server(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
) -> None:
    """Run the API, web UI and task engine in one process."""
    from conveyor.cli.demo import port_free

    # The cheap checks first, before the server's imports.
    run(Format.TEXT, lambda: port_free(port, host))
    settings = _settings()
    refuse_fast_hashing(settings)
    settings = settings.model_copy(update={"host": host, "port": port})
    database = settings.data_dir / "conveyor.db"
    if not settings.database_url and not database.exists():
        fail(
            Failure(
                "bad_input",
                f"there is no database at {database.resolve()}: run `conveyor admin init` first, "
                "with the same CONVEYOR_DATA_DIR (or CONVEYOR_DATABASE_URL)",
            )
        )

    import uvicorn

    from conveyor.api.app import create_app
    from conveyor.cli.startup import GRACEFUL_SHUTDOWN_SECONDS, opening_storage
    from conveyor.services.logformat import json_line, uvicorn_log_config
    from conveyor.store.db import current_revision, head_revision

    def revision_now() -> str | None:
        with opening_storage(settings.data_dir, settings.database_url):
            return current_revision(settings.resolved_database_url)

    revision = run(Format.TEXT, revision_now)
    if revision != head_revision():
        fail(
            Failure(
                "bad_input",
                "the database is not initialised or needs an upgrade: run `conveyor admin init`",
            )
        )
    from conveyor.engine.sandbox import status as sandbox_status

    described = sandbox_status(settings).describe()  # which script mode is in force, at every start
    if settings.log_format == "json":  # one JSON object per line, this one too
        print(json_line("conveyor", described), file=sys.stderr, flush=True)
    else:
        say(described)
    try:
        # Conveyor decides whose X-Forwarded-For to believe (trusted_proxies), not uvicorn,
        # which by default believes any request from 127.0.0.1.
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            log_config=uvicorn_log_config(settings),  # CONVEYOR_LOG_FORMAT: text or json
            proxy_headers=False,
            # Agents' long polls would hold a stopping server for their whole wait: requests
            # still open after this are ended (an agent polls again, elsewhere or later).
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    except SystemExit as exc:  # uvicorn's own exit status means nothing in CLI.md's terms
        if exc.code not in (None, 0):
            fail(Failure("server_error", "the server could not start or stopped on an error"))


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option("--port")] = 8080,
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the demo keeps its data (made afresh)")
    ] = Path(".conveyor/demo"),
) -> None:
    """A fresh demo: the Octo Pet Shop example applied, users with printed passwords, server up."""
    from conveyor.cli.demo import run_demo

    refuse_fast_hashing(_settings())
    run(Format.TEXT, lambda: run_demo(port=port, data_dir=data_dir))


# ---------------------------------------------------------------- config as code (remote)

# ``${env:NAME}``; ``$${env:NAME}`` is the literal text (the server's rule, services/configfile).
ENV_REF = re.compile(r"\$(\$?)\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def env_references(text: str) -> list[str]:
    """The NAMEs of the ``${env:NAME}`` in the file's values (not its comments), each once.

    Only these are read from the environment and sent; the server reports, with its line,
    every reference whose variable is not set."""
    from conveyor.domain.errors import ValidationFailed
    from conveyor.services import yamlsource

    try:
        values = [n.value for n in yamlsource.string_nodes(yamlsource.compose(text))]
    except ValidationFailed:
        values = [text]  # the server reports the syntax error
    found = (
        m.group(2)
        for v in values
        if isinstance(v, str)
        for m in ENV_REF.finditer(v)
        if not m.group(1)
    )
    return list(dict.fromkeys(found))


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="The YAML file to apply")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the changes; change nothing")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete documents of the file's kinds it does not name")
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Make the server match the documents in a file; prints each change."""

    def work() -> Any:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise Failure("bad_input", f"cannot read {file}: {exc.strerror}") from exc
        secrets = {n: os.environ[n] for n in env_references(text) if n in os.environ}
        with Client(server, api_key) as client:
            return client.post(
                "/config/apply",
                json={
                    "text": text,
                    "secrets": secrets,
                    "dry_run": dry_run,
                    "prune": prune,
                    "source": file.name,
                },
            )

    result = run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    if not result["changes"]:
        say("No changes.")
        return
    for change in result["changes"]:
        say(change["text"])
    count = len(result["changes"])
    if dry_run:
        say(f"Dry run: {count} change(s) would be made; nothing was changed.")
    else:
        say(f"Applied {count} change(s).")


@app.command("export")
def export(
    out_file: Annotated[Path | None, typer.Option("-o", "--out", help="Write to this file")] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Everything you may view, in the config-as-code format (sensitive values omitted)."""

    def work() -> str:
        with Client(server, api_key) as client:
            return client.request("GET", "/config/export").text

    text = run(Format.TEXT, work)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        say(f"Wrote {out_file}")


# ---------------------------------------------------------------- permissions (remote)


@permissions_app.command("explain")
def permissions_explain(
    user: Annotated[str, typer.Option("--user")],
    permission: Annotated[str, typer.Option("--permission")],
    project: Annotated[str | None, typer.Option("--project")] = None,
    environment: Annotated[str | None, typer.Option("--environment")] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """May USER do PERMISSION (on a project, in an environment)? Through which team and role?"""

    def work() -> Any:
        params = {"user": user, "permission": permission}
        if project:
            params["project"] = project
        if environment:
            params["environment"] = environment
        with Client(server, api_key) as client:
            return client.get("/permissions/explain", params=params)

    result = run(output, work)
    if output == Format.JSON:
        emit_json(
            {
                "allowed": result["allowed"],
                "reason": result["reason"],
                "granted_by": result["granted_by"],
            }
        )
        return
    say(("ALLOWED: " if result["allowed"] else "NOT ALLOWED: ") + result["reason"])


@permissions_app.command("report")
def permissions_report(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="Only this environment")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: Annotated[
        ReportFormat, typer.Option("--output", help="table, json or csv")
    ] = ReportFormat.TABLE,
) -> None:
    """Per project and environment: who may deploy, who may approve, through which team and role."""
    fmt = Format.JSON if output == ReportFormat.JSON else Format.TEXT

    def work() -> Any:
        with Client(server, api_key) as client:
            return fetch_report(client, output, project, environment)

    result = run(fmt, work)
    if output == ReportFormat.JSON:
        emit_json(result)
    elif output == ReportFormat.CSV:
        sys.stdout.write(result)
    else:
        report_table(result)


@permissions_app.command("matrix")
def permissions_matrix(
    user: Annotated[str, typer.Option("--user")],
    permission: Annotated[
        list[str] | None, typer.Option("--permission", help="Only these permissions")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Each permission of USER by project and environment, and through which team and role."""
    from conveyor.cli.tables import matrix_table

    def work() -> Any:
        params: dict[str, Any] = {"user": user}
        if permission:
            params["permission"] = permission
        with Client(server, api_key) as client:
            return client.get("/permissions/matrix", params=params)

    result = run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    matrix_table(result)


@permissions_app.command("list")
def permissions_list(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """The permission catalogue."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get("/permissions")

    result = run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    for item in result:
        scope = f" (scoped by {', '.join(item['scoped_by'])})" if item["scoped_by"] else ""
        say(f"{item['permission']}: {item['description']}{scope}")


app.command("dashboard")(dashboard)
app.command("changes")(changes)
app.command("insights")(insights)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
