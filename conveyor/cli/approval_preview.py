"""The approval preview for a terminal: what approving a release for an environment covers.

`conveyor approval give` prints it before asking to confirm. A sensitive variable shows only as
added, removed or changed; the preview never carries its value.
"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from conveyor.cli.output import out, say

SHOWN_COMMITS = 20
CHANGE_LABELS = {
    "same": "same",
    "newer": "newer",
    "older": "older (a rollback)",
    "new": "new there",
}


def _value(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _children(preview: dict[str, Any]) -> None:
    env = preview["environment"]
    if preview["children"]:
        table = Table(title="Child releases", title_justify="left")
        for column in ("project", "release", f"now in {env}", "change"):
            table.add_column(column)
        for c in preview["children"]:
            table.add_row(
                c["project"],
                c["version"],
                c["current"] or "nothing yet",
                CHANGE_LABELS[c["change"]],
            )
        out.print(table)
    for o in preview["left_out"]:
        say(f"Left out: {o['project']}, {o['reason']}.")


def _commits(preview: dict[str, Any]) -> None:
    entries = [e for e in preview["commits"] if e["commits"]]
    if not entries:
        say(f"No commits recorded since what is in {preview['environment']}.")
        return
    say(f"Commits since what is in {preview['environment']}:")
    for e in entries:
        count = len(e["commits"])
        say(f"  {e['project']} {e['current'] or '(nothing yet)'} -> {e['release']}: {count}")
        for c in e["commits"][:SHOWN_COMMITS]:
            subject = (c.get("message") or "").splitlines()
            say(f"    {c['sha'][:10]} {subject[0] if subject else ''}")
        if count > SHOWN_COMMITS:
            say(f"    … and {count - SHOWN_COMMITS} more (--output json lists them all)")


def _project(entry: dict[str, Any], environment: str) -> None:
    since = f"since {entry['current']}" if entry["current"] else f"(nothing in {environment} yet)"
    process, variables = entry["process"], entry["variables"]
    if not process["steps"] and not process["order"] and not variables:
        say(f"{entry['project']} {entry['release']}: no process or variable changes {since}")
        return
    say(f"{entry['project']} {entry['release']}: changes {since}")
    for step in process["steps"]:
        say(f"  step {step['change']}: {step['name']}")
        for f in step["fields"]:
            say(f"    {f['field']}: {_value(f['before'])} -> {_value(f['after'])}")
    if process["order"]:
        order = process["order"]
        say(f"  step order: {', '.join(order['before'])} -> {', '.join(order['after'])}")
    for v in variables:
        scope = ", ".join(v["scope"]) or "all"
        if v["sensitive"]:
            say(f"  variable {v['name']} [{scope}]: sensitive, {v['change']}")
        else:
            say(
                f"  variable {v['name']} [{scope}] {v['change']}: "
                f"{_value(v['before'])} -> {_value(v['after'])}"
            )


def print_preview(preview: dict[str, Any]) -> None:
    """The preview dict (services/approval_preview.py, or the API's answer) for a person."""
    release = preview["release"]
    now = preview["current"] or "nothing yet"
    say(
        f"Approve {release['project']} {release['version']} for {preview['environment']} "
        f"(now there: {now}); created by {release['created_by']}"
    )
    if release["notes"]:
        say(f"Notes: {release['notes']}")
    _children(preview)
    _commits(preview)
    for entry in preview["projects"]:
        _project(entry, preview["environment"])
