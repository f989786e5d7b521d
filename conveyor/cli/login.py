"""`conveyor login --oidc-token TOKEN`: a CI job's signed OIDC token (GitHub Actions, GitLab)
exchanged for a short-lived API key of the service account that trusts it (docs/sso.md).

In text mode only the key goes to standard output, so that a job can write
``export CONVEYOR_API_KEY=$(conveyor login --oidc-token "$TOKEN")``; when it expires goes to
standard error. ``--oidc-token -`` reads the token from standard input (kept out of ``ps``).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import httpx
import typer

from conveyor.cli.client import API_PATH, server_url
from conveyor.cli.output import Failure, Format, emit_json, err
from conveyor.cli.remote import OutputOpt, ServerOpt, run


def login(
    oidc_token: Annotated[
        str,
        typer.Option(
            "--oidc-token",
            help="The CI system's signed OIDC token (- reads it from standard input)",
        ),
    ],
    service_account: Annotated[
        str | None,
        typer.Option(
            "--service-account", help="The service account meant, when several trust the token"
        ),
    ] = None,
    server: ServerOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Exchange a CI job's OIDC token for a short-lived API key: {"token", "expires"}."""

    def work() -> dict[str, Any]:
        token = sys.stdin.read().strip() if oidc_token == "-" else oidc_token.strip()
        if not token:
            raise Failure("bad_input", "--oidc-token is empty: pass the CI system's token")
        return _exchange(server_url(server), token, service_account)

    answer = run(output, work)
    if output == Format.JSON:
        emit_json({"token": answer["token"], "expires": answer["expires"]})
        return
    sys.stdout.write(answer["token"] + "\n")
    err.print(
        f"An API key of {answer.get('service_account')} until {answer['expires']}: "
        "send it as X-Api-Key (CONVEYOR_API_KEY).",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _exchange(base: str, token: str, service_account: str | None) -> dict[str, Any]:
    body = {"token": token, "service_account": service_account or ""}
    try:
        response = httpx.post(
            base + API_PATH + "/oidc/token",
            json=body,
            headers={"User-Agent": "conveyor-cli"},
            timeout=60.0,
        )
    except httpx.TransportError as exc:
        raise Failure(
            "unreachable",
            f"cannot reach the Conveyor server at {base} ({exc.__class__.__name__}): "
            "is it running? Set CONVEYOR_SERVER or --server to its address",
        ) from exc
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if response.status_code >= 400:
        code = str(data.get("code") or "")
        message = str(data.get("message") or data.get("detail") or response.text[:300])
        if response.status_code >= 500 or not code:
            code = "server_error" if response.status_code >= 500 else "bad_input"
            message = f"the server answered {response.status_code}: {message}"
        raise Failure(code, message)
    return data
