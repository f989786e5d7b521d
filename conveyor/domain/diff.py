"""What differs between two configurations, and which permission each difference needs.

Config as code, the API and the web forms all turn a request into a desired ``Model``; this
module lists the changes and the permission each one takes, so only what differs is authorised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.domain import channels as ch
from conveyor.domain.codec import encode, encode_step
from conveyor.domain.documents import Project, Step, Variable, key
from conveyor.domain.model import KIND_LABELS, KINDS, Document, Kind, Model, doc_name

Op = Literal["create", "update", "delete"]
# Which part of a project a change touches; each needs its own permission.
Aspect = Literal["document", "process", "variables", "order"]

MASK = "********"


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any

    def render(self) -> str:
        return f"{self.field}: {_show(self.before)} -> {_show(self.after)}"


@dataclass(frozen=True)
class Change:
    kind: Kind
    name: str
    op: Op
    aspect: Aspect = "document"
    before: Document | None = None
    after: Document | None = None
    fields: tuple[FieldChange, ...] = field(default=())

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    def render(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        what = f'{self.label} "{self.name}"'
        if self.aspect == "process":
            what += " process"
        elif self.aspect == "variables":
            what += " variables"
        elif self.aspect == "order":
            what = "environment order"
        head = f"{sign} {what}"
        if self.op == "update" and self.fields:
            return head + "\n" + "\n".join(f"    {f.render()}" for f in self.fields)
        return head

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "op": self.op,
            "aspect": self.aspect,
            "fields": [
                {"field": f.field, "before": f.before, "after": f.after} for f in self.fields
            ],
            "text": self.render(),
        }


@dataclass(frozen=True)
class Need:
    """One permission a change needs, with the scope it is needed in."""

    permission: str
    project: str | None = None
    project_group: str | None = None
    environment: str | None = None


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return json.dumps(value, ensure_ascii=False)


def _masked(kind: Kind, doc: Document) -> dict[str, Any]:
    data = encode(kind, doc)
    data.pop("process", None)
    data.pop("variables", None)
    return data


def _field_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[FieldChange, ...]:
    out = []
    for name in dict.fromkeys([*before, *after]):
        if before.get(name) != after.get(name):
            out.append(FieldChange(name, before.get(name), after.get(name)))
    return tuple(out)


def diff(current: Model, desired: Model) -> list[Change]:
    changes: list[Change] = []
    for kind in KINDS:
        now = {key(doc_name(d)): d for d in current.docs(kind)}
        want = {key(doc_name(d)): d for d in desired.docs(kind)}
        for k, doc in want.items():
            if k not in now:
                changes.append(Change(kind, doc_name(doc), "create", after=doc))
                if isinstance(doc, Project):
                    changes.extend(_project_parts(None, doc))
            elif now[k] != doc:
                before_doc = now[k]
                fields = _field_changes(_masked(kind, before_doc), _masked(kind, doc))
                if not fields and kind == "subscriptions":
                    # Only the webhook's secret differs: never shown, but still a change.
                    fields = (FieldChange("webhook.secret", MASK, MASK),)
                if not fields and kind == "targets":
                    fields = (FieldChange("private_key", MASK, MASK),)  # the same for a key
                if fields:
                    changes.append(
                        Change(
                            kind,
                            doc_name(doc),
                            "update",
                            before=before_doc,
                            after=doc,
                            fields=fields,
                        )
                    )
                if isinstance(doc, Project) and isinstance(before_doc, Project):
                    changes.extend(_project_parts(before_doc, doc))
        for k, doc in now.items():
            if k not in want:
                changes.append(Change(kind, doc_name(doc), "delete", before=doc))
    order_now = [key(e.name) for e in current.environments if key(e.name) in _keys(desired)]
    order_want = [key(e.name) for e in desired.environments if key(e.name) in _keys(current)]
    if order_now != order_want:
        changes.append(
            Change(
                "environments",
                "(order)",
                "update",
                aspect="order",
                fields=(
                    FieldChange(
                        "order",
                        [e.name for e in current.environments],
                        [e.name for e in desired.environments],
                    ),
                ),
            )
        )
    return changes


def _keys(model: Model) -> set[str]:
    return {key(e.name) for e in model.environments}


def _project_parts(before: Project | None, after: Project) -> list[Change]:
    out: list[Change] = []
    old_steps = before.process.steps if before else ()
    if [*map(encode_step, old_steps)] != [*map(encode_step, after.process.steps)]:
        out.append(
            Change(
                "projects",
                after.name,
                "update",
                aspect="process",
                before=before,
                after=after,
                fields=step_changes(old_steps, after.process.steps),
            )
        )
    old_vars = before.variables if before else ()
    if old_vars != after.variables:
        out.append(
            Change(
                "projects",
                after.name,
                "update",
                aspect="variables",
                before=before,
                after=after,
                fields=_variable_changes(old_vars, after.variables),
            )
        )
    return out


def step_changes(old: tuple[Step, ...], new: tuple[Step, ...]) -> tuple[FieldChange, ...]:
    before = {key(s.name): encode_step(s) for s in old}
    after = {key(s.name): encode_step(s) for s in new}
    out = []
    for k, step in after.items():
        if k not in before:
            out.append(FieldChange(f"steps[{step['name']}]", None, "added"))
        elif before[k] != step:
            changed = _field_changes(before[k], step)
            out.append(
                FieldChange(
                    f"steps[{step['name']}]",
                    {f.field: f.before for f in changed},
                    {f.field: f.after for f in changed},
                )
            )
    for k, step in before.items():
        if k not in after:
            out.append(FieldChange(f"steps[{step['name']}]", "present", "removed"))
    if [k for k in before if k in after] != [k for k in after if k in before]:
        out.append(
            FieldChange(
                "step order",
                [s["name"] for s in before.values()],
                [s["name"] for s in after.values()],
            )
        )
    return tuple(out)


def _var_key(v: Variable) -> tuple[str, tuple[str, ...]]:
    return (key(v.name), tuple(sorted(key(e) for e in v.environments)))


def _var_label(v: Variable) -> str:
    scope = f" ({', '.join(v.environments)})" if v.environments else ""
    return f"variables[{v.name}{scope}]"


def _variable_changes(
    old: tuple[Variable, ...], new: tuple[Variable, ...]
) -> tuple[FieldChange, ...]:
    before = {_var_key(v): v for v in old}
    after = {_var_key(v): v for v in new}
    out = []

    def shown(v: Variable) -> Any:
        return MASK if v.sensitive else v.value

    for k, v in after.items():
        if k not in before:
            out.append(FieldChange(_var_label(v), None, shown(v)))
        elif before[k] != v:
            out.append(FieldChange(_var_label(v), shown(before[k]), shown(v)))
    for k, v in before.items():
        if k not in after:
            out.append(FieldChange(_var_label(v), shown(v), None))
    return tuple(out)


def changed_variables(change: Change) -> list[Variable]:
    """Variables added, changed or removed by a variables change (for their environment scope)."""
    old = change.before.variables if isinstance(change.before, Project) else ()
    new = change.after.variables if isinstance(change.after, Project) else ()
    before = {_var_key(v): v for v in old}
    after = {_var_key(v): v for v in new}
    out = [v for k, v in after.items() if before.get(k) != v]
    out += [v for k, v in before.items() if k not in after]
    return out


_CRUD = {
    "environments": "Environment",
    "lifecycles": "Lifecycle",
    "project_groups": "ProjectGroup",
    "targets": "Machine",
    "teams": "Team",
    "subscriptions": "Subscription",
}


def needs(change: Change, current: Model, desired: Model) -> list[Need]:
    """The permissions a change requires, each in the scope the change touches."""
    verb = {"create": "Create", "update": "Edit", "delete": "Delete"}[change.op]
    doc = change.after if change.after is not None else change.before
    if change.aspect == "order":
        return [Need("EnvironmentEdit")]
    if change.kind == "environments":
        return [Need(f"Environment{verb}", environment=change.name)]
    if change.kind == "project_groups":
        return [Need(f"ProjectGroup{verb}", project_group=change.name)]
    if change.kind == "targets":
        envs: set[str] = set()
        for d in (change.before, change.after):
            envs.update(getattr(d, "environments", ()) or ())
        return [Need(f"Machine{verb}", environment=e) for e in sorted(envs)] or [
            Need(f"Machine{verb}")
        ]
    if change.kind in ("user_roles",):
        return [Need("UserRoleEdit")]
    if change.kind == "users":
        return [Need("UserEdit")]
    if change.kind in _CRUD:
        return [Need(f"{_CRUD[change.kind]}{verb}")]
    assert isinstance(doc, Project)
    if change.aspect == "process":
        return [Need("ProcessEdit", project=doc.name)]
    if change.aspect == "variables":
        model = desired if change.after is not None else current
        # An unscoped variable reaches every environment of the project's lifecycles (its
        # channels' too: a release of a channel may go where only that channel's lifecycle goes).
        every_env = ch.reachable(doc, model.lifecycle_environments) or model.environment_names()
        out: list[Need] = []
        for var in changed_variables(change):
            for env in var.environments or every_env:
                need = Need("VariableEdit", project=doc.name, environment=env)
                if need not in out:
                    out.append(need)
        return out or [Need("VariableEdit", project=doc.name)]
    if change.op == "create":
        return [Need("ProjectCreate", project_group=doc.group)]
    return [Need(f"Project{verb}", project=doc.name)]
