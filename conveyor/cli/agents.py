"""`conveyor agent`: enrolment tokens, the agents enrolled, and running an agent on a target.

`agent token create`, `agent list` and `agent revoke` are remote commands of an administrator;
`agent run` is the agent itself, started on the target machine (docs/targets.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Failure, Format, emit_json, fail, out, say
from conveyor.cli.remote import ApiKeyOpt, OutputOpt, ServerOpt, new_table, run, seg, when
from conveyor.domain.errors import Unauthenticated

agent_app = typer.Typer(
    help="Polling agents: enrolment tokens, enrolled agents, running one.", no_args_is_help=True
)
token_app = typer.Typer(help="Enrolment tokens for agent targets.", no_args_is_help=True)
agent_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    target: Annotated[str, typer.Option("--target", help="The agent target to enrol for")],
    expires: Annotated[
        str, typer.Option("--expires", help="How long it is valid: 30m, 2h, 1d")
    ] = "1h",
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A single-use enrolment token (needs AdministerSystem); shown once, only its hash is kept."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post("/agents/tokens", json={"target": target, "expires": expires})

    answer = run(output, work)
    if output == Format.JSON:
        emit_json({"token": answer["token"], "expires": answer["expires"]})
        return
    say(
        f"Enrolment token for target {answer['target']} (single use, valid until "
        f"{when(answer['expires'])}):"
    )
    say(answer["token"])
    say(f"On the machine: conveyor agent run --server URL --token {answer['token']}")


@agent_app.command("list")
def agent_list(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """Every enrolled agent: its target, host, version, last poll (needs AdministerSystem)."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get("/agents")

    rows = run(output, work)
    if output == Format.JSON:
        emit_json(rows)
        return
    if not rows:
        say("No agent has enrolled yet: conveyor agent token create --target NAME")
        return
    table = new_table("id", "target", "host", "os", "version", "state", "last poll")
    for r in rows:
        state = "revoked" if r["revoked"] else ("online" if r["online"] else "offline")
        table.add_row(
            r["id"], r["target"], r["hostname"], r["os"], r["version"], state, when(r["last_seen"])
        )
    out.print(table)


@agent_app.command("revoke")
def agent_revoke(
    agent_id: Annotated[str, typer.Argument(help="The agent's id, as `agent list` shows it")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Refuse an agent from now on: its next request fails and its running jobs stop."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/agents/{seg(agent_id)}/revoke")

    answer = run(output, work)
    if output == Format.JSON:
        emit_json(answer)
        return
    say(f"Revoked agent {answer['id']} of target {answer['target']}")


@agent_app.command("run")
def agent_run(
    server: ServerOpt = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="The enrolment token, for the first start only"),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option("--work-dir", help="Where the agent keeps its files (~/.conveyor-agent)"),
    ] = None,
) -> None:
    """Run the agent on this machine: it connects out to the server and runs its target's work."""
    import asyncio

    from conveyor.agent.main import DEFAULT_WORK_DIR, AgentError, run_agent

    url = server or os.environ.get("CONVEYOR_SERVER")
    if not url:
        fail(Failure("bad_input", "say which server to poll: --server URL (or CONVEYOR_SERVER)"))

    def tell(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def work() -> None:
        from conveyor.cli.client import server_url

        base = server_url(url)  # 127.0.0.1:8080 and …/api/v1 mean the server, as elsewhere
        try:
            asyncio.run(run_agent(base, token, work_dir or DEFAULT_WORK_DIR, tell))
        except AgentError as exc:
            code = Unauthenticated.code if exc.refused else "bad_input"
            raise Failure(code, str(exc)) from exc
        except KeyboardInterrupt:
            pass

    run(Format.TEXT, work)
