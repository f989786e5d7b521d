"""Release evidence as Markdown: a report an auditor can read and attach to a change ticket."""

from __future__ import annotations

from typing import Any

DEPLOYMENT_COLUMNS = (
    "deployment",
    "project",
    "release",
    "environment",
    "outcome",
    "by",
    "queued",
    "started",
    "completed",
    "parent",
)
DEPLOYMENT_FIELDS = (
    "id",
    "project",
    "release",
    "environment",
    "state",
    "created_by",
    "queued",
    "started",
    "completed",
    "parent",
)
ANSWER_FIELDS = ("username", "teams", "result", "at", "notes")


def _cell(value: Any) -> str:
    """A table cell: never breaks the table (pipes and newlines are escaped)."""
    if value is None or value == "":
        return "-"
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _answers(fields: dict[str, Any]) -> str:
    """A person's answers to a step's questions, in one cell."""
    return "; ".join(f"{name}: {value}" for name, value in fields.items())


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _build(build: dict[str, Any]) -> list[str]:
    if not build:
        return ["No build information was recorded with this release."]
    lines: list[str] = []
    commits = build.get("commits")
    for name, value in build.items():
        if name != "commits" and value not in (None, "", []):
            lines.append(f"- **{name}**: {_cell(value)}")
    if isinstance(commits, list) and commits:
        lines.append("- **commits**:")
        for commit in commits:
            if isinstance(commit, dict):
                ident = commit.get("id") or commit.get("sha") or commit.get("commit") or "?"
                text = commit.get("message") or commit.get("comment") or ""
                author = commit.get("author")
                lines.append(
                    f"  - `{ident}` {_cell(text)}" + (f" ({_cell(author)})" if author else "")
                )
            else:
                lines.append(f"  - `{commit}`")
    return lines


def _changes(changes: dict[str, Any]) -> list[str]:
    previous = changes.get("previous")
    lines = (
        [f"Compared with the previous release, **{previous}**."]
        if previous
        else ["This is the project's first release: everything it ships is new."]
    )
    rows = [
        [kind, c["name"], c["change"], c["before"], c["after"]]
        for kind in ("packages", "children")
        for c in changes.get(kind, [])
    ]
    if rows:
        lines += ["", *_table(["what", "name", "change", "before", "after"], rows)]
    elif previous:
        lines += ["", "The same packages and child releases as the previous release."]
    if changes.get("process_changed") is not None:
        changed = "changed" if changes["process_changed"] else "did not change"
        lines += ["", f"The deployment process {changed}."]
    if changes.get("variables"):
        named = ", ".join(f"{v['name']} ({v['change']})" for v in changes["variables"])
        lines += ["", f"Variables that changed (values not shown): {named}."]
    return lines


def markdown(evidence: dict[str, Any]) -> str:
    release = evidence["release"]
    title = f"{release['project']} {release['version']}"
    lines = [
        f"# Release evidence: {title}",
        "",
        f"Generated {evidence['generated']} by {evidence['generated_by']}.",
        "",
        "## Release",
        "",
        f"- **Release**: {release['id']}, {title}",
        f"- **Created**: {release['created']} by **{release['created_by']}**",
        f"- **Notes**: {_cell(release.get('notes'))}",
        "",
        "### Build",
        "",
        *_build(release.get("build") or {}),
        "",
        "### What it ships",
        "",
    ]
    shipped = [["package", k, v] for k, v in release["packages"].items()]
    shipped += [["child release", k, v] for k, v in release["children"].items()]
    lines += _table(["kind", "name", "version"], shipped) if shipped else ["Nothing pinned."]
    lines += ["", "### What changed", "", *_changes(evidence["changes"]), "", "## Deployments", ""]
    deployments = evidence["deployments"]
    lines += (
        _table(
            [*DEPLOYMENT_COLUMNS],
            [[d[c] for c in DEPLOYMENT_FIELDS] for d in deployments],
        )
        if deployments
        else ["This release has not been deployed."]
    )
    lines += ["", "## Approvals", ""]
    answers = [
        [
            a["id"],
            a["environment"],
            a["step"],
            *(ans[c] for c in ANSWER_FIELDS),
            _answers(ans.get("fields") or {}),
        ]
        for a in evidence["approvals"]
        for ans in a["answers"]
    ]
    lines += (
        _table(
            [
                "interruption",
                "environment",
                "step",
                "who",
                "teams",
                "result",
                "when",
                "notes",
                "answers",
            ],
            answers,
        )
        if answers
        else ["No approvals or other interruptions were answered."]
    )
    waiting = [a for a in evidence["approvals"] if a["state"] == "pending"]
    for a in waiting:
        lines.append(f"\n{a['id']} ({a['step']}, {a['environment']}) is still waiting.")
    ahead = evidence.get("approvals_ahead") or []
    if ahead:
        lines += ["", "### Given ahead of time", ""]
        lines += _table(
            [
                "approval",
                "environment",
                "who",
                "teams",
                "given",
                "expires",
                "state",
                "notes",
                "answers",
            ],
            [
                [
                    a["id"],
                    a["environment"],
                    a["user"],
                    ", ".join(a["teams"]),
                    a["given"],
                    a["expires"],
                    a["state"] + (f" (by {a['revoked_by']})" if a.get("revoked_by") else ""),
                    a["notes"],
                    _answers(a.get("fields") or {}),
                ]
                for a in ahead
            ],
        )
    lines += ["", "## Audit events", ""]
    if evidence.get("events_hidden"):
        lines.append(f"Not shown: {evidence['events_hidden']}")
    else:
        lines += _table(
            ["event", "occurred", "category", "actor", "message", "hash"],
            [
                [
                    e["id"],
                    e["occurred"],
                    e["category"],
                    e["actor"] + (f" for {e['on_behalf_of']}" if e["on_behalf_of"] else ""),
                    e["message"],
                    f"`{e['hash']}`" if e["hash"] else None,
                ]
                for e in evidence["events"]
            ],
        )
        lines += [
            "",
            "Each hash is the SHA-256 of the event and of the hash before it; "
            "`conveyor audit verify` checks the whole chain.",
        ]
    return "\n".join(lines) + "\n"
