"""Environment checks and structured input fields to and from plain data (config as code).

```yaml
environments:
  - name: Production
    checks:
      - project_groups: [Octo Pet Shop]      # optional: only these groups' projects
        approval:
          teams: [{team: QA, quorum: 1}, Business Owner]
          block_creator: true                # default
          block_commit_authors: true         # default
          fields: [{name: ChangeTicket, pattern: "^CHG-[0-9]+$"}]
        windows: [{days: [mon, tue, wed, thu], start: "09:00", end: "16:00",
                   time_zone: Europe/Berlin}]
        freezes: [{name: Year end, start: 2026-12-21T00:00:00Z, end: 2027-01-04T00:00:00Z}]
        run_latest: true
```
"""

from __future__ import annotations

from typing import Any

from conveyor.domain.documents import (
    ApprovalCheck,
    ChangeWindow,
    EnvironmentChecks,
    Freeze,
    InputField,
    TeamQuorum,
)
from conveyor.domain.errors import Problem
from conveyor.domain.reading import Path, Reader


def decode_fields(r: Reader, name: str = "fields") -> tuple[InputField, ...]:
    out = []
    for path, item in r.items(name):
        fr = Reader(item, path, r.problems, "a field (name, label, pattern or choices, required)")
        out.append(
            InputField(
                name=fr.text("name", required=True),
                label=fr.text("label"),
                pattern=fr.text("pattern"),
                choices=fr.names("choices"),
                required=fr.flag("required", True),
                description=fr.text("description"),
            )
        )
        fr.finish()
    return tuple(out)


def encode_fields(fields: tuple[InputField, ...]) -> list[dict[str, Any]]:
    out = []
    for f in fields:
        data: dict[str, Any] = {"name": f.name}
        if f.label:
            data["label"] = f.label
        if f.description:
            data["description"] = f.description
        if f.pattern:
            data["pattern"] = f.pattern
        if f.choices:
            data["choices"] = list(f.choices)
        if not f.required:
            data["required"] = False
        out.append(data)
    return out


def decode_checks(r: Reader) -> tuple[EnvironmentChecks, ...]:
    out = []
    for path, item in r.items("checks"):
        cr = Reader(item, path, r.problems, "a set of checks")
        approval = None
        if cr.raw("approval") is not None:
            approval = _approval(cr.raw("approval"), (*path, "approval"), r.problems)
        windows = []
        for w_path, w_item in cr.items("windows"):
            wr = Reader(w_item, w_path, r.problems, "a change window (days, start, end, time_zone)")
            windows.append(
                ChangeWindow(
                    start=wr.text("start", required=True),
                    end=wr.text("end", required=True),
                    days=wr.names("days"),
                    time_zone=wr.text("time_zone", default="UTC") or "UTC",
                )
            )
            wr.finish()
        freezes = []
        for f_path, f_item in cr.items("freezes"):
            fr = Reader(f_item, f_path, r.problems, "a freeze (name, start, end)")
            freezes.append(
                Freeze(
                    name=fr.text("name", required=True),
                    start=_instant_text(fr, "start"),
                    end=_instant_text(fr, "end"),
                    description=fr.text("description"),
                )
            )
            fr.finish()
        out.append(
            EnvironmentChecks(
                project_groups=cr.names("project_groups"),
                approval=approval,
                windows=tuple(windows),
                freezes=tuple(freezes),
                run_latest=cr.flag("run_latest"),
            )
        )
        cr.finish()
    return tuple(out)


def _instant_text(r: Reader, name: str) -> str:
    """YAML reads an unquoted ``2026-12-21T00:00:00Z`` as a datetime: take it back as text."""
    value = r.raw(name)
    if hasattr(value, "isoformat") and not isinstance(value, str):
        text: str = value.isoformat()
        return text
    return r.text(name, required=True)


def _approval(data: Any, path: Path, problems: list[Problem]) -> ApprovalCheck:
    ar = Reader(data, path, problems, "an approval (teams, block_creator, block_commit_authors)")
    teams = []
    for t_path, item in ar.items("teams"):
        if isinstance(item, str):
            teams.append(TeamQuorum(item))
            continue
        tr = Reader(item, t_path, problems, "a team and its quorum")
        teams.append(
            TeamQuorum(tr.text("team", required=True), tr.integer("quorum", 1, minimum=1) or 1)
        )
        tr.finish()
    check = ApprovalCheck(
        teams=tuple(teams),
        block_creator=ar.flag("block_creator", True),
        block_commit_authors=ar.flag("block_commit_authors", True),
        fields=decode_fields(ar),
    )
    ar.finish()
    return check


def encode_checks(checks: tuple[EnvironmentChecks, ...]) -> list[dict[str, Any]]:
    out = []
    for c in checks:
        data: dict[str, Any] = {}
        if c.project_groups:
            data["project_groups"] = list(c.project_groups)
        if c.approval is not None:
            a = c.approval
            approval: dict[str, Any] = {
                "teams": [
                    {"team": tq.team, "quorum": tq.quorum} if tq.quorum != 1 else tq.team
                    for tq in a.teams
                ]
            }
            if not a.block_creator:
                approval["block_creator"] = False
            if not a.block_commit_authors:
                approval["block_commit_authors"] = False
            if a.fields:
                approval["fields"] = encode_fields(a.fields)
            data["approval"] = approval
        if c.windows:
            data["windows"] = [
                {
                    **({"days": list(w.days)} if w.days else {}),
                    "start": w.start,
                    "end": w.end,
                    "time_zone": w.time_zone,
                }
                for w in c.windows
            ]
        if c.freezes:
            data["freezes"] = [
                {
                    "name": f.name,
                    "start": f.start,
                    "end": f.end,
                    **({"description": f.description} if f.description else {}),
                }
                for f in c.freezes
            ]
        if c.run_latest:
            data["run_latest"] = True
        out.append(data)
    return out
