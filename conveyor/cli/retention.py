"""`conveyor retention plan|apply`: what the retention policies would delete now, and applying
them at once (remote; docs/retention.md)."""

from __future__ import annotations

from typing import Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, out, say
from conveyor.cli.remote import (
    ApiKeyOpt,
    OutputOpt,
    ServerOpt,
    fetch,
    new_table,
    run,
    shown_as_json,
)

retention_app = typer.Typer(
    help="Retention: what the lifecycles' policies would delete, and applying them.",
    no_args_is_help=True,
)

# Rows printed per kind as text; --output json lists them all.
SHOWN = 50


def _counts(counts: dict[str, int]) -> str:
    return (
        f"{counts.get('releases', 0)} release(s), {counts.get('deployments', 0)} deployment(s), "
        f"{counts.get('task_logs', 0)} task log(s), {counts.get('packages', 0)} package version(s)"
    )


@retention_app.command("plan")
def retention_plan(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """What the policies would delete now, and why (AdministerSystem, or ReleaseView and
    DeploymentView everywhere, as the Auditor role has)."""
    plan = fetch(output, server, api_key, "/retention/plan")
    if shown_as_json(output, plan):
        return
    counts = plan["counts"]
    if not any(counts.values()):
        say("Nothing would be deleted: every policy keeps everything there is.")
        return
    say(f"Would delete {_counts(counts)}.")
    sections: list[tuple[str, list[dict[str, Any]], tuple[str, ...]]] = [
        ("Releases", plan["releases"], ("project", "version", "reason")),
        ("Deployments", plan["deployments"], ("id", "description", "reason")),
        ("Task logs", plan["task_logs"], ("task", "description", "reason")),
        ("Package versions", plan["packages"], ("package_id", "version", "reason")),
    ]
    for title, rows, columns in sections:
        if not rows:
            continue
        table = new_table(*columns)
        for row in rows[:SHOWN]:
            table.add_row(*(str(row.get(c, "")) for c in columns))
        say(f"\n{title} ({len(rows)}):")
        out.print(table)
        if len(rows) > SHOWN:
            say(f"… and {len(rows) - SHOWN} more (--output json lists them all)")


@retention_app.command("apply")
def retention_apply(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """Apply the policies now instead of waiting for the periodic job (AdministerSystem)."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post("/retention/apply")

    done = run(output, work)
    if shown_as_json(output, done):
        return
    say(f"Deleted {_counts(done['counts'])}.")
    if done.get("spared"):
        say(f"{done['spared']} planned item(s) stayed: they became current, pinned or active.")
