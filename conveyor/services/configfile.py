"""Config as code: apply a YAML file to the server, and export the server as one.

A file is a partial picture of the configuration. Each document in it replaces the stored
document of the same name; documents it does not mention stay as they are (``prune`` deletes
those of the kinds the file lists). The result goes through ``change_config``, so validation,
the diff, authorisation of only what differs, the write and the audit are the ones every other
change uses. Every problem points at its line in the file.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.domain import codec
from conveyor.domain import permissions as perms
from conveyor.domain.diff import MASK, Change
from conveyor.domain.documents import Project, Subscription, Target, key
from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.model import KIND_LABELS, KINDS, Document, Kind, Model, doc_name
from conveyor.domain.validation import validate
from conveyor.services import yamlsource
from conveyor.services.config import KNOWN_PERMISSIONS, ConfigResult, change_config, load
from conveyor.services.configmerge import FileDoc, merge
from conveyor.services.core import Caller, Services
from conveyor.services.yamlsource import Path, Source

# ``${env:NAME}`` is replaced by a value the caller supplies; ``$${env:NAME}`` is the literal text.
ENV_REF = re.compile(r"\$(\$?)\{env:([^}]*)\}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STR_TAG = "tag:yaml.org,2002:str"
# Top-level keys that Conveyor ignores: a place for YAML anchors (as in Docker Compose).
EXTENSION = "x-"
# Fields a file never carries, with what to do instead.
MANAGED = {
    "users": ("password", "users in files never carry passwords; set one with the web UI or API"),
    "projects": ("version", "the process version is kept by Conveyor; remove it from the file"),
}


def env_references(text: str) -> list[str]:
    """The NAMEs of every ``${env:NAME}`` in the file's values, in order, each once."""
    try:
        nodes = yamlsource.string_nodes(yamlsource.compose(text))
        values = [n.value for n in nodes if n.tag == STR_TAG]
    except ValidationFailed:
        values = [text]  # the apply will report the syntax error; name what it may need
    names = [
        m.group(2)
        for value in values
        for m in ENV_REF.finditer(value)
        if not m.group(1) and ENV_NAME.fullmatch(m.group(2))
    ]
    return list(dict.fromkeys(names))


class _Substitution:
    """Replaces ``${env:NAME}`` in one string value at a time, remembering what it used."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.secrets = secrets
        self.used: list[str] = []
        self.problems: list[Problem] = []

    def __call__(self, value: str, path: Path, line: int) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1):
                return match.group(0)[1:]
            name = match.group(2)
            if not ENV_NAME.fullmatch(name):
                self.problems.append(
                    Problem(path, f'"{name}" is not an environment variable name', line)
                )
            elif name not in self.secrets:
                self.problems.append(Problem(path, f"environment variable {name} is not set", line))
            else:
                self.used.append(self.secrets[name])
                return self.secrets[name]
            return ""

        return ENV_REF.sub(one, value)


@dataclass
class _File:
    source: Source
    entries: dict[Kind, list[FileDoc]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def locate(self, problem: Problem) -> Problem:
        """A problem with a path into the file (indexes or names): its line, and names in its
        path where the file gives them."""
        path = problem.path
        line = problem.line or self.source.line_at(path) or (1 if not path else None)
        if len(path) >= 2 and path[0] in self.entries and isinstance(path[1], int):
            entries = self.entries[path[0]]
            if 0 <= path[1] < len(entries):
                path = (*entries[path[1]].path, *path[2:])
        return Problem(path, problem.message, line)


def _read(text: str, secrets: Mapping[str, str], max_depth: int) -> _File:
    substitution = _Substitution(secrets)
    source = yamlsource.parse(text, substitution, max_depth=max_depth)
    file = _File(source, secrets=substitution.used)
    problems = [*source.problems, *substitution.problems]
    data = source.data
    if data is None:
        problems.append(Problem((), "the file is empty: list documents under " + _kinds(), 1))
    elif not isinstance(data, dict):
        where = yamlsource.line(source.root) if source.root is not None else None
        problems.append(Problem((), "expected a mapping with the keys " + _kinds(), where))
    else:
        for name, items in data.items():
            if name.startswith(EXTENSION):
                continue
            if name not in KINDS:
                message = f"is not a kind of document; use {_kinds()} (or x-… for anchors)"
                problems.append(Problem((name,), message))
            elif items is not None and not isinstance(items, list):
                problems.append(Problem((name,), f"must be a list of {KIND_LABELS[name]}s"))
            else:
                file.entries[name] = _decode_kind(name, items or [], source, problems)
    file.problems = [file.locate(p) for p in problems]
    return file


def _kinds() -> str:
    return ", ".join(KINDS)


def _decode_kind(
    kind: Kind, items: list[Any], source: Source, problems: list[Problem]
) -> list[FileDoc]:
    decoded: list[tuple[Mapping[str, Any], Document]] = []
    for i, item in enumerate(items):
        raw: Mapping[str, Any] = item if isinstance(item, dict) else {}
        managed = MANAGED.get(kind)
        if managed and managed[0] in _managed_holder(kind, raw):
            problems.append(Problem(_managed_path(kind, i), managed[1]))
            raw = _without_managed(kind, raw)
        # Best effort even when a field is wrong, so that references to it still resolve
        # and the rest of the file is checked in the same pass.
        doc = codec._DECODERS[kind](raw if isinstance(item, dict) else item, (kind, i), problems)
        decoded.append((raw, doc))
    counts = Counter(key(doc_name(doc)) for _, doc in decoded if doc_name(doc))
    first: dict[str, int] = {}
    entries: list[FileDoc] = []
    for i, (raw, doc) in enumerate(decoded):
        name = doc_name(doc)
        path: Path = (kind, name) if name and counts[key(name)] == 1 else (kind, i)
        if not name:
            entries.append(FileDoc(kind, raw, None, path))
        elif key(name) in first:
            problems.append(
                Problem(
                    path,
                    f'there is more than one {KIND_LABELS[kind]} named "{name}" in this file '
                    f"(also at line {source.line_at((kind, first[key(name)]))})",
                )
            )
            entries.append(FileDoc(kind, raw, None, path))
        else:
            first[key(name)] = i
            entries.append(FileDoc(kind, raw, doc, path))
    return entries


def _managed_holder(kind: Kind, raw: Mapping[str, Any]) -> Mapping[str, Any]:
    if kind == "projects":
        process = raw.get("process")
        return process if isinstance(process, dict) else {}
    return raw


def _managed_path(kind: Kind, index: int) -> Path:
    return (kind, index, "process", "version") if kind == "projects" else (kind, index, "password")


def _without_managed(kind: Kind, raw: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "projects":
        process = {k: v for k, v in raw["process"].items() if k != "version"}
        return {**raw, "process": process}
    return {k: v for k, v in raw.items() if k != "password"}


# ---------------------------------------------------------------- applying


async def apply_text(
    services: Services,
    caller: Caller,
    text: str,
    *,
    secrets: Mapping[str, str] | None = None,
    dry_run: bool = False,
    prune: bool = False,
    source: str = "",
) -> ConfigResult:
    """Make the server match the documents in ``text``; an invalid file changes nothing.

    The file's size is checked before it is read, its depth while it is read, and reading it
    (like validating and diffing it, in ``change_config``) runs off the event loop: a large
    file keeps a worker thread busy, never the server."""
    settings = services.settings
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.max_config_bytes:
        raise ValidationFailed(
            f"the file is {size} bytes, over the limit of {settings.max_config_bytes}: split it "
            "into several files applied one after the other (an administrator can raise "
            "CONVEYOR_MAX_CONFIG_BYTES)"
        )
    file = await asyncio.to_thread(_read, text, secrets or {}, settings.max_config_depth)
    desired = Model()

    def mutate(current: Model) -> Model:
        nonlocal desired
        desired, problems = merge(current, file.entries, prune=prune, caller=caller.username)
        problems = [file.locate(p) for p in problems]
        if file.problems or problems:
            # A field that failed to decode got a default; what validation then says about
            # the same line of the same document is an echo of the problem already listed.
            echoes = {(_document_of(p), p.line) for p in file.problems}
            checked = [
                p
                for p in (locate(p) for p in validate(desired, KNOWN_PERMISSIONS))
                if (_document_of(p), p.line) not in echoes
            ]
            raise _finished([*file.problems, *problems, *checked], file.secrets)
        return desired

    def locate(problem: Problem) -> Problem:
        path = problem.path
        if len(path) >= 2 and path[0] in KINDS and isinstance(path[1], int):
            docs = desired.docs(path[0])
            if 0 <= path[1] < len(docs):
                path = (path[0], doc_name(docs[path[1]]), *path[2:])
        return Problem(path, problem.message, file.source.line_at(path, min_depth=2))

    def located(error: ValidationFailed) -> ValidationFailed:
        return _finished([locate(p) for p in error.problems], file.secrets)

    def summary(changes: list[Change]) -> str:
        what = source or "a configuration file"
        return f"{caller.username} applied {what}: {len(changes)} change(s)"

    result = await change_config(
        services, caller, mutate, dry_run=dry_run, summary=summary, problem_locator=located
    )
    result.changes = [_masked_change(c) for c in result.changes]
    return result


def _document_of(problem: Problem) -> tuple[str, str] | None:
    path = problem.path
    if len(path) >= 2 and isinstance(path[1], str):
        return str(path[0]), key(path[1])
    return None


def _finished(problems: Iterable[Problem], secrets: list[str]) -> ValidationFailed:
    """Every problem once, in file order, with no substituted value in sight."""
    out: list[Problem] = []
    for p in problems:
        path = tuple(_redact(part, secrets) if isinstance(part, str) else part for part in p.path)
        clean = Problem(path, _redact(p.message, secrets), p.line)
        if clean not in out:
            out.append(clean)
    out.sort(key=lambda p: (p.line is None, p.line or 0))
    return ValidationFailed(out)


def _redact(text: str, secrets: list[str]) -> str:
    for value in sorted(set(secrets), key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text


def _masked_change(change: Change) -> Change:
    return replace(change, before=_masked_doc(change.before), after=_masked_doc(change.after))


def _masked_doc(doc: Document | None) -> Document | None:
    if isinstance(doc, Subscription) and doc.webhook is not None and doc.webhook.secret:
        return replace(doc, webhook=replace(doc.webhook, secret=MASK))
    if isinstance(doc, Target) and doc.private_key:
        return replace(doc, private_key=MASK)
    if not isinstance(doc, Project):
        return doc
    hidden = tuple(replace(v, value=MASK) if v.sensitive else v for v in doc.variables)
    return replace(doc, variables=hidden)


# ---------------------------------------------------------------- exporting

HEADER = """\
# Conveyor configuration as code, exported for {user}: what {user} may view.
# Apply with `conveyor apply -f FILE` (--dry-run to preview, --prune to delete what is not here).
# Sensitive values are left out; applying keeps them. To set one: value: ${{env:NAME}}
"""


async def export_text(services: Services, caller: Caller) -> str:
    """Everything the caller may view, as a file ``apply_text`` reads back without changes."""
    model = (await load(services)).model
    principal = caller.principal
    sections: list[str] = []
    for kind in KINDS:
        docs = [
            _exported(kind, doc, principal)
            for doc in model.docs(kind)
            if _visible(kind, doc, principal)
        ]
        if docs:
            sections.append(yamlsource.dump({kind: _escaped(docs)}))
    return HEADER.format(user=caller.username) + ("\n".join(sections) or "{}\n")


def _allowed(principal: perms.Principal, permission: perms.Permission, **scope: Any) -> bool:
    return perms.authorize(principal, permission, **scope).allowed


def _visible(kind: Kind, doc: Any, principal: perms.Principal) -> bool:
    p = perms.Permission
    if kind == "environments":
        return _allowed(principal, p.EnvironmentView, environment=doc.name)
    if kind == "lifecycles":
        return _allowed(principal, p.LifecycleView)
    if kind == "project_groups":
        return _allowed(principal, p.ProjectGroupView, project_group=doc.name)
    if kind == "user_roles":
        return not doc.built_in and _allowed(principal, p.UserRoleView)
    if kind == "users":
        return _allowed(principal, p.UserView)
    if kind == "projects":
        return _allowed(principal, p.ProjectView, project=perms.ProjectRef(doc.name, doc.group))
    if kind == "targets":
        return any(
            _allowed(principal, p.MachineView, environment=env)
            for env in (doc.environments or (None,))
        )
    if kind == "subscriptions":
        return _allowed(principal, p.SubscriptionView)
    return _allowed(principal, p.TeamView)


def _exported(kind: Kind, doc: Any, principal: perms.Principal) -> dict[str, Any]:
    data = codec.encode(kind, doc, with_secrets=False)
    if isinstance(doc, Project):
        ref = perms.ProjectRef(doc.name, doc.group)
        if not _allowed(principal, perms.Permission.ProcessView, project=ref):
            data.pop("process", None)
        if not _allowed(principal, perms.Permission.VariableView, project=ref):
            data.pop("variables", None)
    return data


def _escaped(data: Any) -> Any:
    """Stored text that looks like ``${env:NAME}`` is written ``$${env:NAME}`` so that applying
    the file gives back the same text."""
    if isinstance(data, str):
        return ENV_REF.sub(lambda m: "$" + m.group(0), data)
    if isinstance(data, list):
        return [_escaped(item) for item in data]
    if isinstance(data, dict):
        return {k: _escaped(v) for k, v in data.items()}
    return data
