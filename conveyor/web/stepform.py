"""The fields of a step's edit form, and the step document a submitted form makes.

A step is edited in the shape the API reads and writes (``encode_step``), so the services decode
and validate it exactly as they do for the API and config as code. Fields the form does not show
(a notification's webhooks, a deploy_release step's variables) are kept as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from conveyor.domain.errors import ConveyorError, Problem, ValidationFailed, render_path


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    # text, textarea, list, choice, flag, number, questions (a manual step's fields)
    kind: str
    choices: tuple[str, ...] = ()
    hint: str = ""


SYNTAX = ("bash", "python")
# fail: the deployment fails before it starts; skip: the step leaves the target out.
UNHEALTHY = ("fail", "skip")
COMMON = (
    Field("name", "Name", "text"),
    Field("environments", "Only in environments", "list", hint="Comma-separated; empty: all"),
    Field("excluded_environments", "Never in environments", "list", hint="Comma-separated"),
    Field("condition", "Run condition", "choice", ("success", "failure", "always", "variable")),
    Field("condition_expression", "Condition expression", "text", hint="For a variable condition"),
    Field("start", "Start", "choice", ("after_previous", "with_previous")),
    Field("timeout", "Timeout (seconds)", "number", hint="Empty: no timeout"),
    Field("required", "Required (cannot be skipped when deploying)", "flag"),
    Field("disabled", "Disabled", "flag"),
)
BY_TYPE: dict[str, tuple[Field, ...]] = {
    "script": (
        Field("script", "Script", "textarea"),
        Field("syntax", "Syntax", "choice", SYNTAX),
        Field("target_roles", "Target roles", "list", hint="Empty: run once on a worker"),
        Field("window", "Targets at a time", "number", hint="Empty: all at once"),
        Field("unhealthy_targets", "An unhealthy target", "choice", UNHEALTHY),
        Field("worker_pool", "Worker pool", "text", hint="Without target roles; empty: default"),
    ),
    "package": (
        Field("package", "Package", "text"),
        Field("target_roles", "Target roles", "list"),
        Field("window", "Targets at a time", "number", hint="Empty: all at once"),
        Field("unhealthy_targets", "An unhealthy target", "choice", UNHEALTHY),
        Field("post_deploy_script", "Post-deploy script", "textarea"),
        Field("post_deploy_syntax", "Post-deploy syntax", "choice", SYNTAX),
    ),
    "manual_intervention": (
        Field("instructions", "Instructions", "textarea"),
        Field("responsible_teams", "Responsible teams", "list"),
        Field("prevent_self_approval", "The deployer may not approve", "flag"),
        Field("required_approvals", "Approvals needed", "number"),
        Field("approval_teams", "Approvals needed from teams", "list"),
        Field("block_deployments", "Block other deployments while waiting", "flag"),
        Field(
            "fields",
            "Questions asked when answering",
            "questions",
            hint="one a line: Name | ^PATTERN$ or choice1, choice2 | label; Name? is optional",
        ),
    ),
    "notification": (
        Field("to_teams", "To teams", "list"),
        Field("to_users", "To users", "list"),
        Field("to_addresses", "To addresses", "list"),
        Field("subject", "Subject", "text"),
        Field("body", "Body", "textarea"),
        Field("warn_only", "Only warn when delivery fails", "flag"),
    ),
    "deploy_release": (
        Field("project", "Project", "text"),
        Field(
            "deployment_condition",
            "Deploy",
            "choice",
            ("always", "if_not_current", "if_newer"),
        ),
    ),
}
DEFAULTS = {
    "condition": "success",
    "start": "after_previous",
    "syntax": "bash",
    "post_deploy_syntax": "bash",
    "deployment_condition": "always",
    "unhealthy_targets": "fail",
}


# The step types a process may have, as the pages name them.
STEP_TYPES = {
    "script": "Script",
    "package": "Deploy a package",
    "manual_intervention": "Manual intervention",
    "notification": "Notification",
    "deploy_release": "Deploy a release",
}


def blank(step_type: str) -> dict[str, Any]:
    """A new step of a type, before its form is filled in."""
    return {"type": step_type, "name": ""}


def positions(steps: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Where a new step may go: before each step, or at the end (the last choice)."""
    out = [(i, f"Before step {i + 1}, {s.get('name', '')}") for i, s in enumerate(steps)]
    return [*out, (len(steps), "At the end")]


def fields_of(step_type: str) -> tuple[Field, ...]:
    return COMMON[:1] + BY_TYPE.get(step_type, ()) + COMMON[1:]


def required_by_teams(step: dict[str, Any]) -> bool:
    """A manual intervention with responsible teams is always required (documents.Step
    .is_required): its "Required" box is shown ticked, and cannot be unticked."""
    return step.get("type") == "manual_intervention" and bool(step.get("responsible_teams"))


def locked(step: dict[str, Any], field: Field) -> str:
    """Why a field of the form cannot be changed ("" when it can)."""
    if field.name == "required" and required_by_teams(step):
        return "always, as the step has responsible teams"
    return ""


def shown(step: dict[str, Any], field: Field) -> Any:
    """The value a form field shows for a step as read."""
    value = step.get(field.name)
    if field.name == "required" and required_by_teams(step):
        return True
    if field.kind == "list":
        return ", ".join(str(v) for v in value or ())
    if field.kind == "flag":
        return bool(value)
    if field.kind == "choice":
        return value or DEFAULTS.get(field.name, field.choices[0])
    if field.kind == "questions":
        return questions_text(value or [])
    return "" if value is None else value


def _number(text: str) -> int | str:
    # Not a number is passed on as text: the services' validation names the field.
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else text


def edited(step: dict[str, Any], form: FormData) -> dict[str, Any]:
    """The step with the form's values in place of the fields the form shows."""
    out = dict(step)
    for field in fields_of(str(step.get("type", ""))):
        raw = form.get(field.name)
        text = raw.strip() if isinstance(raw, str) else ""
        if field.kind == "flag":
            if not locked(step, field):  # a locked box is disabled, so never sent
                out[field.name] = field.name in form
        elif field.kind == "list":
            out[field.name] = [v.strip() for v in re.split(r"[,\n]", text) if v.strip()]
        elif field.kind == "number":
            if text:
                out[field.name] = _number(text)
            else:
                out.pop(field.name, None)
        elif field.kind == "choice" and not text:
            out.pop(field.name, None)  # not chosen (an older form): the default
        elif field.kind == "questions":
            if isinstance(raw, str):  # an older form without it leaves the questions alone
                out[field.name] = parse_questions(raw, step.get(field.name) or [])
        elif field.kind == "textarea":
            out[field.name] = raw.replace("\r\n", "\n") if isinstance(raw, str) else ""
        else:
            out[field.name] = text
    return out


def facts(step: dict[str, Any]) -> list[tuple[Field, Any]]:
    """The fields worth reading for a step: set, and not at their default."""
    out = []
    for field in fields_of(str(step.get("type", ""))):
        value = shown(step, field)
        if field.name == "name" or value in ("", False, None):
            continue
        if field.kind == "choice" and value == DEFAULTS.get(field.name):
            continue
        out.append((field, value))
    return out


def refusal(exc: ConveyorError, index: int, step_type: str) -> str:
    """A refused step form's reason in the form's own words: a problem of the step being
    edited or added (at ``index``) is named by its field's label ("Instructions: must not be
    empty"), one of another step by its number ("Step 2, name: …"), never by the document path
    the services use (``steps[0].instructions``)."""
    if not isinstance(exc, ValidationFailed):
        return exc.message
    labels = {f.name: f.label for f in fields_of(step_type)}
    said = [_problem_words(p, index, labels) for p in exc.problems]
    return said[0] if len(said) == 1 else f"{len(said)} problems: " + "; ".join(said)


def _problem_words(problem: Problem, index: int, labels: dict[str, str]) -> str:
    path = problem.path
    if len(path) < 2 or path[0] != "steps" or not isinstance(path[1], int):
        return str(problem)
    rest = path[2:]
    field = str(rest[0]) if rest else ""
    inside = render_path(rest[1:]) if len(rest) > 1 else ""
    if path[1] == index:
        where = labels.get(field, field.replace("_", " ").capitalize()) if field else "This step"
    else:
        where = f"Step {path[1] + 1}" + (f", {field.replace('_', ' ')}" if field else "")
    return f"{where}{' ' + inside if inside else ''}: {problem.message}"


# ---------------------------------------------------------------- a manual step's questions
#
# One question a line, columns separated by a bar with spaces around it (a bar inside a
# pattern, as in ^(a|b)$, has none):
#     ChangeTicket | ^CHG-[0-9]+$ | Change ticket
#     Risk | low, medium, high | Risk of the change
#     Comment? |  | Anything to add      (a trailing ? on the name: optional)
# The middle column is a pattern when it starts with ^ or holds no comma, otherwise the choices.
# A question's description (config as code only) is kept while its name stays the same.

COLUMNS = re.compile(r"(?<=\s)\|(?=\s)")
FORMAT = "write NAME | PATTERN or CHOICES | LABEL, with spaces around each |"


def questions_text(fields: list[dict[str, Any]]) -> str:
    """A step's field declarations (``encode_fields``) as the lines the form edits."""
    lines = []
    for f in fields:
        name = f"{f.get('name', '')}{'' if f.get('required', True) else '?'}"
        pattern, choices = str(f.get("pattern") or ""), list(f.get("choices") or ())
        if choices:
            middle = ", ".join(choices) + ("," if len(choices) == 1 else "")
        elif "," in pattern and not pattern.startswith("^"):
            middle = "^" + pattern  # the same answers match (answers must match whole)
        else:
            middle = pattern
        label = str(f.get("label") or "")
        lines.append(" | ".join([name, middle, label] if label else [name, middle]).rstrip())
    return "\n".join(lines)


def parse_questions(text: str, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of the form's questions field -> field declarations (the services validate
    names and patterns); a line that is not NAME | … is refused with its number."""
    kept = {str(f.get("name")): f for f in before if isinstance(f, dict)}
    out: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in COLUMNS.split(f" {line} ")]
        if len(parts) > 3:
            problems.append(Problem(("fields",), f"line {number}: more than 3 columns; {FORMAT}"))
            continue
        name, middle, label = [*parts, "", ""][:3]
        if "|" in name or not name:
            problems.append(Problem(("fields",), f"line {number}: {FORMAT}"))
            continue
        required = not name.endswith("?")
        name = name.removesuffix("?").strip()
        field: dict[str, Any] = {"name": name}
        if label:
            field["label"] = label
        if kept.get(name, {}).get("description"):
            field["description"] = kept[name]["description"]
        if middle.startswith("^") or ("," not in middle and middle):
            field["pattern"] = middle
        elif middle:
            field["choices"] = [c.strip() for c in middle.split(",") if c.strip()]
        if not required:
            field["required"] = False
        out.append(field)
    if problems:
        raise ValidationFailed(problems)
    return out
