"""Changing the configuration: the one path shared by the API, config as code and the web forms.

load the model -> compute the desired model -> validate it -> diff -> authorise only what
differs -> write -> audit each change, all in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.domain import ids
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.codec import encode, encode_process
from conveyor.domain.diff import Aspect, Change, FieldChange, diff, needs
from conveyor.domain.documents import Project, UserRole, key
from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.domain.model import KINDS, Kind, Model, doc_name
from conveyor.domain.validation import validate
from conveyor.domain.webhook_targets import new_target_problems
from conveyor.services import model_cache
from conveyor.services.core import Caller, PendingEvent, Services, Tx
from conveyor.store import tables as t
from conveyor.store.documents import Loaded, load_model, persist, rename_row

KNOWN_PERMISSIONS = [p.value for p in perms.Permission]

# (kind, old name, new name) of each document a change renames.
Renames = tuple[tuple[Kind, str, str], ...]
# (kind, name, aspect) of each document a one-document edit is about.
Edits = tuple[tuple[Kind, str, Aspect], ...]


@dataclass
class ConfigResult:
    changes: list[Change]
    dry_run: bool
    # Public ids of the documents the change touched, by (kind, name key).
    ids: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def project_ref(model: Model, name: str) -> perms.ProjectRef:
    project = model.get("projects", name)
    return perms.ProjectRef(
        name=project.name if project else name, group=project.group if project else ""
    )


def public_id(kind: str, row_id: int | None) -> str:
    return f"{t.ID_PREFIXES[kind]}-{row_id}" if row_id is not None else ""


def parse_public_id(kind: str, ref: str) -> int | None:
    """``"Projects-3"`` -> 3; ``None`` unless ``ref`` is a public id of ``kind`` a row may have."""
    return ids.parse_public_id(t.ID_PREFIXES[kind], ref)


def require_public_id(kind: str, ref: str, noun: str, *, bare: bool = True) -> int:
    """The row number of ``ref`` (``"ServerTasks-12"`` or ``"12"``), or ``NotFound``."""
    return ids.require_public_id(t.ID_PREFIXES[kind], ref, noun, bare=bare)


def built_in_roles() -> tuple[UserRole, ...]:
    return tuple(
        UserRole(
            name=r.name,
            description=r.description,
            permissions=tuple(sorted(p.value for p in r.permissions)),
            built_in=True,
        )
        for r in perms.BUILT_IN_ROLES
    )


def _authorise(
    tx: Tx, changes: list[Change], current: Model, desired: Model, renames: Renames = ()
) -> None:
    """Check every permission the changes need; refuse with every missing one at once.

    A renamed document is asked about by its current name: that is the name teams' scopes use.
    """
    old_names = {(kind, key(new)): old for kind, old, new in renames}

    def stored(kind: Kind, name: str | None) -> str | None:
        return old_names.get((kind, key(name)), name) if name is not None else None

    refused: list[str] = []
    seen: set[tuple[str, str | None, str | None, str | None]] = set()
    for change in changes:
        for need in needs(change, current, desired):
            ident = (need.permission, need.project, need.project_group, need.environment)
            if ident in seen:
                continue
            seen.add(ident)
            project = None
            project_name = stored("projects", need.project)
            if project_name is not None:
                model = current if current.has("projects", project_name) else desired
                project = project_ref(model, project_name)
            decision = tx.check(
                need.permission,
                project=project,
                project_group=stored("project_groups", need.project_group),
                environment=stored("environments", need.environment),
            )
            if not decision.allowed:
                refused.append(f"{change.render().splitlines()[0]}: {decision.reason}")
    if refused:
        message = (
            refused[0]
            if len(refused) == 1
            else f"{len(refused)} changes are not allowed: " + "; ".join(refused)
        )
        tx.refusals.append(
            PendingEvent(
                Category.ACCESS_DENIED,
                f"{tx.caller.username} was refused a configuration change: {message}",
                [],
                {"refused": refused},
                None,
                None,
            )
        )
        raise PermissionDenied(message, refused=refused)


def _audit_details(change: Change) -> dict[str, Any]:
    details: dict[str, Any] = {
        "kind": change.kind,
        "name": change.name,
        "aspect": change.aspect,
        "fields": [{"field": f.field, "before": f.before, "after": f.after} for f in change.fields],
    }
    if change.op == "create" and change.after is not None and change.aspect == "document":
        details["after"] = _masked_doc(change.kind, change.after)
    if change.op == "delete" and change.before is not None:
        details["before"] = _masked_doc(change.kind, change.before)
    if change.aspect == "process" and isinstance(change.after, Project):
        # The whole process as written, under the version it gets (the store adds one to the
        # version read): a process's history, its diffs and reverts read these.
        read = change.before.process.version if isinstance(change.before, Project) else 0
        details["snapshot"] = {"version": read + 1, **encode_process(change.after.process)}
    return details


def _masked_doc(kind: Kind, doc: Any) -> dict[str, Any]:
    data = encode(kind, doc)
    data.pop("process", None)
    data.pop("variables", None)
    return data


_CATEGORY = {
    "create": Category.DOCUMENT_CREATED,
    "update": Category.DOCUMENT_MODIFIED,
    "delete": Category.DOCUMENT_DELETED,
}


async def change_config(
    services: Services,
    caller: Caller,
    mutate: Callable[[Model], Model],
    *,
    renames: Renames = (),
    dry_run: bool = False,
    summary: str | Callable[[list[Change]], str] | None = None,
    problem_locator: Callable[[ValidationFailed], ValidationFailed] | None = None,
    edits: Edits = (),
) -> ConfigResult:
    """``edits`` names the documents a one-document edit (an API PUT, a web form) is about: the
    caller must be allowed to edit them even when the edit changes nothing, so that "nothing
    changed" is never an answer to someone who may not edit them. A multi-document ``apply``
    passes none: there only what differs is checked (CLI.md)."""
    async with services.tx(caller, config=True) as tx:
        loaded = await load_model(tx.session, services.box)
        current = loaded.model
        # Merging, validating and diffing is CPU work the caller sizes (a 2 MB file applied):
        # done in a worker thread, so that the server goes on answering everyone else.
        desired = await asyncio.to_thread(mutate, current)
        problems = await asyncio.to_thread(validate, desired, KNOWN_PERMISSIONS)
        if not services.settings.allow_private_webhooks:
            problems += new_target_problems(current, desired)
        if problems:
            error = ValidationFailed(problems)
            raise problem_locator(error) if problem_locator else error
        changes = await asyncio.to_thread(
            lambda: _with_renames(
                diff(_renamed(current, renames), desired), current, desired, renames
            )
        )
        # References a rename rewrites are written and audited, but need no permission of
        # their own: they name the same thing (Octopus refers by id, so a rename touches nothing
        # else there). Everything else the caller asked for is authorised.
        asked = changes
        if renames:
            asked = _with_renames(
                diff(_renamed(current, renames, cascade=True), desired), current, desired, renames
            )
        asked = asked + _unchanged(edits, asked, current, desired)
        try:
            _authorise(tx, asked, current, desired, renames)
        except PermissionDenied:
            _concerning(tx.refusals[-1:], asked, loaded)
            raise
        result = ConfigResult(changes, dry_run)
        if dry_run or not changes:
            _collect_ids(result, loaded, desired)
            return result
        for kind, old, new in renames:
            await rename_row(tx.session, loaded, kind, old, new)
        await persist(tx.session, services.box, loaded, desired, changes, tx.now)
        for change in changes:
            row_id = loaded.id_of(change.kind, change.name) if change.aspect != "order" else None
            doc_id = public_id(change.kind, row_id) if row_id is not None else ""
            project_id = None
            if change.kind == "projects" and row_id is not None:
                project_id = row_id
            await tx.audit(
                _CATEGORY[change.op],
                _message(caller, change),
                documents=[doc_id] if doc_id else [],
                details=_audit_details(change),
                project_id=project_id,
                environment_id=row_id if change.kind == "environments" else None,
            )
        if summary:
            await tx.audit(
                Category.CONFIG_APPLIED,
                summary if isinstance(summary, str) else summary(changes),
                details={"changes": [c.render() for c in changes]},
            )
        _collect_ids(result, loaded, desired)
        return result


def authorise_edits(tx: Tx, loaded: Loaded, edits: Edits) -> None:
    """Authorise one-document edits before what was sent is even decoded (authorise before
    validating): who may not edit a document is refused, as ``change_config`` would refuse them,
    and never told which fields of what they sent are wrong."""
    asked = _unchanged(edits, [], loaded.model, loaded.model)
    try:
        _authorise(tx, asked, loaded.model, loaded.model)
    except PermissionDenied:
        _concerning(tx.refusals[-1:], asked, loaded)
        raise


def _unchanged(edits: Edits, changes: list[Change], current: Model, desired: Model) -> list[Change]:
    """The edits asked for that change nothing, as updates to authorise all the same."""
    made = {(c.kind, key(c.name), c.aspect) for c in changes}
    out: list[Change] = []
    for kind, name, aspect in edits:
        before, after = current.get(kind, name), desired.get(kind, name)
        if (kind, key(name), aspect) in made or before is None or after is None:
            continue
        out.append(Change(kind, name, "update", aspect, before=before, after=after))
    return out


def _concerning(refusals: list[PendingEvent], changes: list[Change], loaded: Loaded) -> None:
    """A refused change names the projects it touched, so that their readers see it."""
    ids = sorted(
        {
            row_id
            for c in changes
            if c.kind == "projects" and (row_id := loaded.id_of("projects", c.name)) is not None
        }
    )
    for event in refusals:
        event.documents = [public_id("projects", i) for i in ids]
        event.project_id = ids[0] if len(ids) == 1 else None


def _name_field(kind: Kind) -> str:
    return "username" if kind == "users" else "name"


def _renamed(model: Model, renames: Renames, *, cascade: bool = False) -> Model:
    """The current model as if the renamed documents had had their new names all along, so a
    rename diffs as an update of that document. Without ``cascade`` the references to them keep
    the old names, so each rewritten reference diffs as an update of the document holding it."""
    for kind, old, new in renames:
        doc = model.get(kind, old)
        if doc is None:
            continue
        doc = replace(doc, **{_name_field(kind): new})
        if cascade:
            model = model.with_doc(kind, doc, previous_name=old)
        else:
            docs = (doc if key(doc_name(d)) == key(old) else d for d in model.docs(kind))
            model = replace(model, **{kind: tuple(docs)})
    return model


def _with_renames(
    changes: list[Change], current: Model, desired: Model, renames: Renames
) -> list[Change]:
    """``changes`` with each rename recorded on its document (a change of the name field)."""
    out = list(changes)
    for kind, old, new in renames:
        before, after = current.get(kind, old), desired.get(kind, new)
        if before is None or after is None or old == new:
            continue
        renamed = FieldChange(_name_field(kind), old, new)
        for i, change in enumerate(out):
            if (change.kind, change.aspect, key(change.name)) == (kind, "document", key(new)):
                out[i] = replace(change, before=before, fields=(renamed, *change.fields))
                break
        else:
            position = next(
                (i for i, c in enumerate(out) if KINDS.index(c.kind) > KINDS.index(kind)),
                len(out),
            )
            change = Change(kind, new, "update", before=before, after=after, fields=(renamed,))
            out.insert(position, change)
    return out


def _collect_ids(result: ConfigResult, loaded: Loaded, desired: Model) -> None:
    for kind, doc in desired.all_docs():
        name = doc.username if kind == "users" else doc.name  # type: ignore[union-attr]
        row_id = loaded.id_of(kind, name)
        if row_id is not None:
            result.ids[(kind, key(name))] = row_id


def _message(caller: Caller, change: Change) -> str:
    verb = {"create": "created", "update": "changed", "delete": "deleted"}[change.op]
    if change.aspect == "order":
        return f"{caller.username} reordered the environments"
    if change.aspect == "process":
        return f'{caller.username} changed the deployment process of project "{change.name}"'
    if change.aspect == "variables":
        return f'{caller.username} changed the variables of project "{change.name}"'
    deactivated = any(f.field == "active" and f.after is False for f in change.fields)
    if change.kind == "users" and (change.op == "delete" or deactivated):
        return f'{caller.username} deactivated user "{change.name}"'
    renamed = next((f for f in change.fields if f.field == _name_field(change.kind)), None)
    if change.op == "update" and renamed is not None:
        return f'{caller.username} renamed {change.label} "{renamed.before}" to "{renamed.after}"'
    return f'{caller.username} {verb} {change.label} "{change.name}"'


async def load(services: Services) -> Loaded:
    """The configuration of the current revision, from this node's cache (one revision query
    when nothing changed). Sensitive values are ``Sealed``: decrypt one with ``reveal`` where a
    step needs it. Treat the result as read-only: it is shared by every reader."""
    return (await model_cache.snapshot(services)).loaded


async def load_outline(services: Services) -> Loaded:
    """What reads that show tasks, deployments and the dashboard need (names, groups, order and
    ids): the cached model, which costs them no more than the outline did."""
    return await load(services)


def project_of(model: Model, name: str) -> Project | None:
    project = model.get("projects", name)
    return project if isinstance(project, Project) else None
