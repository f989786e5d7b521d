"""How a partial configuration file combines with the stored configuration.

Pure rules, no I/O: each document in the file replaces the stored one of the same name, except
that a project keeps its stored process, variables and channels when the file leaves those keys
out, and a sensitive variable given without a value keeps its stored value. Built-in roles
cannot be changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from conveyor.domain.documents import (
    Environment,
    Process,
    Project,
    Subscription,
    Target,
    User,
    UserRole,
    Variable,
    key,
)
from conveyor.domain.errors import Problem
from conveyor.domain.model import KINDS, Document, Kind, Model, doc_name

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class FileDoc:
    """One document of a file, as decoded."""

    kind: Kind
    # The mapping as written (empty when the item is not a mapping).
    raw: Mapping[str, Any]
    # Decoded as well as its fields allow (a wrong field takes its default); None when it
    # cannot take part in the merge (it has no name, or the name is used twice).
    doc: Any
    # (kind, name) when the name is unique in the file, else (kind, index).
    path: Path


def merge(
    current: Model, file: Mapping[Kind, list[FileDoc]], *, prune: bool = False, caller: str = ""
) -> tuple[Model, list[Problem]]:
    """The configuration a file asks for, and the problems only the stored one reveals (their
    paths point into the file). ``caller`` is never deactivated by ``prune``."""
    model = current
    problems: list[Problem] = []
    for kind in KINDS:
        entries = file.get(kind)
        if entries is None:
            continue
        docs: list[Document] = []
        for entry in entries:
            if entry.doc is None:
                continue
            stored = current.get(kind, doc_name(entry.doc))
            doc = entry.doc
            if isinstance(doc, Project):
                doc = kept_unsaid(stored, _merge_project(stored, doc, entry, problems), entry.raw)
            elif isinstance(doc, UserRole):
                doc = _merge_role(stored, doc, entry, problems)
            else:
                doc = kept_unsaid(stored, doc, entry.raw)
            docs.append(doc)
        if kind == "environments":
            model = replace(model, environments=_ordered(current.environments, docs))
        else:
            for doc in docs:
                model = model.with_doc(kind, doc)
        if prune:
            model = _pruned(model, kind, {key(doc_name(d)) for d in docs}, caller)
    return model, problems


def _merge_project(
    stored: Project | None, doc: Project, entry: FileDoc, problems: list[Problem]
) -> Project:
    if "process" in entry.raw:
        process = replace(doc.process, version=stored.process.version if stored else 0)
    else:
        process = stored.process if stored else Process()
    if "variables" not in entry.raw:
        return replace(doc, process=process, variables=stored.variables if stored else ())
    raw_vars = entry.raw["variables"]
    kept = {_var_key(v): v for v in (stored.variables if stored else ())}
    variables: list[Variable] = []
    for i, var in enumerate(doc.variables):
        raw = raw_vars[i] if isinstance(raw_vars, list) and i < len(raw_vars) else {}
        if var.sensitive and isinstance(raw, dict) and raw.get("value") is None:
            previous = kept.get(_var_key(var))
            if previous is None:
                problems.append(
                    Problem(
                        (*entry.path, "variables", i),
                        f"sensitive variable {var.name} needs a value: use value: ${{env:NAME}}",
                    )
                )
            else:
                var = replace(var, value=previous.value)
        variables.append(var)
    return replace(doc, process=process, variables=tuple(variables))


def kept_unsaid(stored: Any, doc: Any, raw: Mapping[str, Any]) -> Any:
    """What a document leaves unsaid keeps its stored value, where that value is not the
    writer's to state: a person's own preference, a webhook secret and an SSH key (never
    exported)."""
    if isinstance(doc, Environment) and isinstance(stored, Environment) and "checks" not in raw:
        # An environment's checks are governance, often kept in a file of their own
        # (docs/governance.md): a file that does not mention them leaves them in place.
        return replace(doc, checks=stored.checks)
    if isinstance(doc, Project) and isinstance(stored, Project) and "channels" not in raw:
        # Like the process and variables: a project written without them (the settings page,
        # a file of its own) keeps its channels; ``channels: []`` removes them.
        return replace(doc, channels=stored.channels)
    if isinstance(doc, User) and isinstance(stored, User) and "notify_interruptions" not in raw:
        return replace(doc, notify_interruptions=stored.notify_interruptions)
    if (
        isinstance(doc, Subscription)
        and isinstance(stored, Subscription)
        and doc.webhook is not None
        and stored.webhook is not None
    ):
        hook = raw.get("webhook")
        if not (isinstance(hook, Mapping) and "secret" in hook):
            return replace(doc, webhook=replace(doc.webhook, secret=stored.webhook.secret))
    if (
        isinstance(doc, Target)
        and isinstance(stored, Target)
        and doc.kind == "ssh"
        and "private_key" not in raw
    ):
        return replace(doc, private_key=stored.private_key)  # an SSH key: never exported
    return doc


def _var_key(var: Variable) -> tuple[str, frozenset[str]]:
    return key(var.name), frozenset(key(e) for e in var.environments)


def _merge_role(
    stored: UserRole | None, doc: UserRole, entry: FileDoc, problems: list[Problem]
) -> UserRole:
    if stored is not None and stored.built_in:
        same = {p.lower() for p in doc.permissions} == {p.lower() for p in stored.permissions}
        if not same or ("description" in entry.raw and doc.description != stored.description):
            problems.append(
                Problem(
                    entry.path,
                    f'user role "{stored.name}" is built in and cannot be changed; '
                    "create a custom role instead",
                )
            )
        return stored
    if doc.built_in:
        problems.append(
            Problem(
                (*entry.path, "built_in"),
                "only the roles that come with Conveyor are built in; remove built_in",
            )
        )
        return replace(doc, built_in=False)
    return doc


def _ordered(stored: tuple[Environment, ...], listed: list[Any]) -> tuple[Environment, ...]:
    """The file's environments in the file's order, in the places of the stored ones it names;
    environments it does not name keep their place; a new one goes next to its neighbour in
    the file (after the one listed before it, else before the one listed after it)."""
    mine = {key(e.name): e for e in listed}
    known = {key(e.name) for e in stored}
    existing = iter([e for e in listed if key(e.name) in known])
    slots = [next(existing) if key(e.name) in mine else e for e in stored]
    leading: list[Environment] = []
    after: dict[str, list[Environment]] = {}
    previous: str | None = None
    for env in listed:
        if key(env.name) in known:
            previous = key(env.name)
        elif previous is None:
            leading.append(env)
        else:
            after.setdefault(previous, []).append(env)
    first = next((key(e.name) for e in listed if key(e.name) in known), None)
    out: list[Environment] = []
    for env in slots:
        if key(env.name) == first:
            out.extend(leading)
        out.append(env)
        out.extend(after.get(key(env.name), []))
    if first is None:
        out.extend(leading)
    return tuple(out)


def _pruned(model: Model, kind: Kind, keep: set[str], caller: str) -> Model:
    """Delete what the file does not list; users are deactivated, never the caller, and
    built-in roles are never deleted."""
    for doc in model.docs(kind):
        name = doc_name(doc)
        if key(name) in keep or (isinstance(doc, UserRole) and doc.built_in):
            continue
        if kind == "users":
            if doc.active and key(name) != key(caller):
                model = model.with_doc("users", replace(doc, active=False))
            continue
        model = model.without(kind, name)
    return model
