"""Read, create, update and delete one configuration document at a time.

Every write is a one-document change through ``change_config``, so the rules, permissions and
audit are those of config as code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from conveyor.domain import permissions as perms
from conveyor.domain.codec import decode, decode_process, decode_variables, encode, encode_process
from conveyor.domain.codec import encode_variables as _encode_variables
from conveyor.domain.diff import Aspect
from conveyor.domain.documents import Process, Project, UserRole, Variable, key, slugify
from conveyor.domain.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationFailed
from conveyor.domain.model import KIND_LABELS, Kind, Model, doc_name
from conveyor.services.config import (
    ConfigResult,
    authorise_edits,
    change_config,
    load,
    parse_public_id,
    project_ref,
    public_id,
)
from conveyor.services.configmerge import kept_unsaid
from conveyor.services.core import Caller, Services
from conveyor.store.documents import Loaded, reveal

P = perms.Permission


@dataclass(frozen=True)
class DocumentView:
    kind: Kind
    id: str
    name: str
    slug: str
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "slug": self.slug, **self.data}


def _view_decision(caller: Caller, model: Model, kind: Kind, doc: Any) -> perms.Decision:
    principal = caller.principal
    if kind == "environments":
        return perms.authorize(principal, P.EnvironmentView, environment=doc.name)
    if kind == "project_groups":
        return perms.authorize(principal, P.ProjectGroupView, project_group=doc.name)
    if kind == "projects":
        return perms.authorize(principal, P.ProjectView, project=project_ref(model, doc.name))
    if kind == "targets":
        decisions = [
            perms.authorize(principal, P.MachineView, environment=env) for env in doc.environments
        ] or [perms.authorize(principal, P.MachineView)]
        return next((d for d in decisions if d.allowed), decisions[0])
    permission = {
        "lifecycles": P.LifecycleView,
        "user_roles": P.UserRoleView,
        "users": P.UserView,
        "teams": P.TeamView,
        "subscriptions": P.SubscriptionView,
    }[kind]
    return perms.authorize(principal, permission)


def may_view(caller: Caller, model: Model, kind: Kind, doc: Any) -> bool:
    return _view_decision(caller, model, kind, doc).allowed


def _view(loaded: Loaded, kind: Kind, doc: Any) -> DocumentView:
    data = encode(kind, doc)
    data.pop("process", None)
    data.pop("variables", None)
    name = doc_name(doc)
    return DocumentView(
        kind=kind,
        id=public_id(kind, loaded.id_of(kind, name)),
        name=name,
        slug=slugify(name),
        data=data,
    )


def resolve(loaded: Loaded, kind: Kind, ref: str) -> Any:
    """A document by name, slug (case-insensitive) or public id ("Projects-3")."""
    row_id = parse_public_id(kind, ref)
    if row_id is not None:
        for doc in loaded.model.docs(kind):
            if loaded.id_of(kind, doc_name(doc)) == row_id:
                return doc
    else:
        doc = loaded.model.get(kind, ref)
        if doc is not None:
            return doc
    raise NotFound(f'{KIND_LABELS[kind]} "{ref}" does not exist')


async def list_documents(services: Services, caller: Caller, kind: Kind) -> list[DocumentView]:
    loaded = await load(services)
    return [
        _view(loaded, kind, doc)
        for doc in loaded.model.docs(kind)
        if may_view(caller, loaded.model, kind, doc)
    ]


async def get_document(services: Services, caller: Caller, kind: Kind, ref: str) -> DocumentView:
    loaded = await load(services)
    doc = resolve(loaded, kind, ref)
    decision = _view_decision(caller, loaded.model, kind, doc)
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(decision.permission))
    return _view(loaded, kind, doc)


def _without_read_only(kind: Kind, data: Any) -> Any:
    """A document as read (``DocumentView.as_dict``) may be sent back: drop what reading added."""
    if not isinstance(data, dict):
        return data
    added = {"id", "slug"} | ({"name"} if kind == "users" and "username" in data else set())
    return {k: v for k, v in data.items() if k not in added}


def _decode_one(kind: Kind, data: Any) -> Any:
    problems: list[Problem] = []
    data = _without_read_only(kind, data)
    if isinstance(data, dict) and kind == "projects" and ("process" in data or "variables" in data):
        problems.append(
            Problem(
                (),
                "edit a project's process and variables through "
                "/projects/{project}/process and /projects/{project}/variables",
            )
        )
    # Paths are relative to the document sent (``phases[0].environments``): the body is the
    # document, so a path under the kind (``lifecycles[phases]``) would only confuse.
    doc = decode(kind, data, (), problems)
    if problems or doc is None:
        raise ValidationFailed(problems)
    if isinstance(doc, UserRole) and doc.built_in:
        raise ValidationFailed(Problem(("built_in",), "only Conveyor defines built-in roles"))
    return doc


def _not_built_in(kind: Kind, doc: Any) -> None:
    if kind == "user_roles" and doc.built_in:
        raise Conflict(
            f'user role "{doc.name}" is built in and cannot be changed; '
            "create a custom role instead"
        )


async def _write(
    services: Services,
    caller: Caller,
    kind: Kind,
    name: str,
    mutate: Callable[[Model], Model],
    renames: tuple[tuple[Kind, str, str], ...] = (),
) -> DocumentView:
    # A PUT that changes nothing still needs the permission to edit the document.
    edits: tuple[tuple[Kind, str, Aspect], ...] = ((kind, name, "document"),)
    result = await change_config(services, caller, mutate, renames=renames, edits=edits)
    loaded = await load(services)
    doc = loaded.model.get(kind, name)
    if doc is None:  # pragma: no cover - the change just wrote it
        raise NotFound(f'{KIND_LABELS[kind]} "{name}" does not exist')
    del result
    return _view(loaded, kind, doc)


async def create_document(
    services: Services, caller: Caller, kind: Kind, data: Any
) -> DocumentView:
    doc = _decode_one(kind, data)
    name = doc_name(doc)

    def mutate(model: Model) -> Model:
        if model.has(kind, name):
            raise Conflict(f'a {KIND_LABELS[kind]} named "{name}" already exists')
        return model.with_doc(kind, doc)

    return await _write(services, caller, kind, name, mutate)


async def update_document(
    services: Services, caller: Caller, kind: Kind, ref: str, data: Any
) -> DocumentView:
    await authorise_edit(services, caller, kind, ref)
    new = _decode_one(kind, data)
    loaded = await load(services)
    old = resolve(loaded, kind, ref)
    _not_built_in(kind, old)
    old_name, new_name = doc_name(old), doc_name(new)
    if isinstance(old, Project) and isinstance(new, Project):
        new = replace(new, process=old.process, variables=old.variables)
    renames: tuple[tuple[Kind, str, str], ...] = ()
    if key(old_name) != key(new_name) or old_name != new_name:
        renames = ((kind, old_name, new_name),)

    def mutate(model: Model) -> Model:
        if key(old_name) != key(new_name) and model.has(kind, new_name):
            raise Conflict(f'a {KIND_LABELS[kind]} named "{new_name}" already exists')
        current = model.get(kind, old_name)
        if current is None:
            raise NotFound(f'{KIND_LABELS[kind]} "{old_name}" does not exist')
        doc = new
        if isinstance(current, Project) and isinstance(doc, Project):
            doc = replace(doc, process=current.process, variables=current.variables)
        # What a document as read leaves out (a webhook's secret, a person's preference) stays.
        doc = kept_unsaid(current, doc, data if isinstance(data, dict) else {})
        return model.with_doc(kind, doc, previous_name=old_name)

    return await _write(services, caller, kind, new_name, mutate, renames)


async def delete_document(services: Services, caller: Caller, kind: Kind, ref: str) -> None:
    loaded = await load(services)
    doc = resolve(loaded, kind, ref)
    _not_built_in(kind, doc)
    name = doc_name(doc)

    def mutate(model: Model) -> Model:
        if kind == "users":
            user = model.get("users", name)
            return model.with_doc("users", replace(user, active=False))
        return model.without(kind, name)

    try:
        # Deleting what is already gone (an inactive user) still needs the permission.
        await change_config(services, caller, mutate, edits=((kind, name, "document"),))
    except ValidationFailed as exc:
        label = KIND_LABELS[kind]
        # A reference to the deleted document reads "<label> "<name>" does not exist".
        dangling = f'{label} "{name}" does not exist'
        uses = [p.where for p in exc.problems if p.message == dangling]
        others = [str(p) for p in exc.problems if p.message != dangling]
        if uses:
            listed = "; ".join(uses[:5]) + (f"; and {len(uses) - 5} more" if len(uses) > 5 else "")
            message = f'{label} "{name}" is still used ({listed}); change those first'
        else:
            message = f'{label} "{name}" cannot be deleted: ' + "; ".join(others)
        raise Conflict(message, problems=[p.as_dict() for p in exc.problems]) from exc


# ---------------------------------------------------------------- process and variables


def _project(loaded: Loaded, caller: Caller, ref: str, permission: P) -> Project:
    project = resolve(loaded, "projects", ref)
    assert isinstance(project, Project)
    decision = perms.authorize(
        caller.principal, permission, project=project_ref(loaded.model, project.name)
    )
    if not decision.allowed:
        raise PermissionDenied(decision.reason, permission=str(permission))
    return project


async def authorise_edit(
    services: Services, caller: Caller, kind: Kind, ref: str, aspect: Aspect = "document"
) -> None:
    """Authorise before validating: someone who may not edit a document is told so (403,
    audited), never which fields of what they sent are wrong. ``change_config`` checks the
    change itself again, in full, once it is valid."""
    loaded = await load(services)
    name = doc_name(resolve(loaded, kind, ref))
    async with services.tx(caller) as tx:
        authorise_edits(tx, loaded, ((kind, name, aspect),))


async def get_process(services: Services, caller: Caller, ref: str) -> dict[str, Any]:
    loaded = await load(services)
    project = _project(loaded, caller, ref, P.ProcessView)
    return {
        "project": project.name,
        "version": project.process.version,
        **encode_process(project.process),
    }


async def update_process(services: Services, caller: Caller, ref: str, data: Any) -> dict[str, Any]:
    """Replace a project's process; ``data["version"]`` must be the version it was read at."""
    await authorise_edit(services, caller, "projects", ref, "process")
    problems: list[Problem] = []
    if not isinstance(data, dict) or "version" not in data:
        raise ValidationFailed(
            Problem(
                ("version",),
                "is required: send the version you read, so that edits "
                "made since then are not lost",
            )
        )
    # The document as read names its project; the URL already does, so that key is ignored.
    body = {k: v for k, v in data.items() if k != "project"}
    process = decode_process(body, (), problems)
    if problems:
        raise ValidationFailed(problems)
    loaded = await load(services)
    name = resolve(loaded, "projects", ref).name

    def mutate(model: Model) -> Model:
        project = model.get("projects", name)
        if project is None:
            raise NotFound(f'project "{name}" does not exist')
        if project.process.version != process.version:
            raise Conflict(
                f'the process of "{name}" changed since you read it (now version '
                f"{project.process.version}, yours {process.version}): reload it and make "
                "your edit again",
                current_version=project.process.version,
            )
        return model.with_doc(
            "projects", replace(project, process=Process(process.steps, project.process.version))
        )

    await change_config(services, caller, mutate, edits=(("projects", name, "process"),))
    return await get_process(services, caller, name)


async def get_variables(services: Services, caller: Caller, ref: str) -> dict[str, Any]:
    loaded = await load(services)
    project = _project(loaded, caller, ref, P.VariableView)
    return {
        "project": project.name,
        "version": variables_version(project.variables),
        "variables": _encode_variables(project.variables, False),
    }


def variables_version(variables: tuple[Variable, ...]) -> str:
    """What an edit of a project's variables names to be made from, as a process names its
    version. Read from the cached configuration, where a sensitive value is its cipher: every
    write of the variables encrypts them anew, so the version changes with any write, and
    neither it nor reading it opens a secret."""
    items = [[v.name, list(v.environments), v.sensitive, str(v.value)] for v in variables]
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:20]


async def variables_as_read(services: Services, name: str, read_at: str) -> tuple[Variable, ...]:
    """The project's variables if they are still at version ``read_at`` (plain text, for
    ``unchanged_since`` to compare inside the write), or Conflict."""
    project = (await load(services)).model.get("projects", name)
    if not isinstance(project, Project):
        raise NotFound(f'project "{name}" does not exist')
    if variables_version(project.variables) != read_at:
        raise _stale(name)
    return tuple(replace(v, value=reveal(services.box, v.value)) for v in project.variables)


def unchanged_since(project: Project, as_read: tuple[Variable, ...]) -> None:
    """Inside the write (configuration writers are serialised): refuse if the variables
    differ from those checked against the version the edit was read at."""
    if project.variables != as_read:
        raise _stale(project.name)


def _stale(name: str) -> Conflict:
    return Conflict(
        f'the variables of "{name}" changed since you read them: reload them and make your '
        "edit again"
    )


async def update_variables(
    services: Services, caller: Caller, ref: str, data: Any
) -> dict[str, Any]:
    """Replace a project's variables; a sensitive one sent without a value keeps its value.
    With ``data["version"]`` (as read), an edit made since then refuses the change."""
    await authorise_edit(services, caller, "projects", ref, "variables")
    problems: list[Problem] = []
    items = data.get("variables") if isinstance(data, dict) else data
    variables = decode_variables(items, ("variables",), problems)
    if problems:
        raise ValidationFailed(problems)
    loaded = await load(services)
    name = resolve(loaded, "projects", ref).name
    raw = items if isinstance(items, list) else []
    read_at = data.get("version") if isinstance(data, dict) else None
    as_read = None if read_at is None else await variables_as_read(services, name, str(read_at))

    def mutate(model: Model) -> Model:
        project = model.get("projects", name)
        if project is None:
            raise NotFound(f'project "{name}" does not exist')
        if as_read is not None:
            unchanged_since(project, as_read)
        kept = _keep_sensitive(project.variables, variables, raw)
        return model.with_doc("projects", replace(project, variables=kept))

    await change_config(services, caller, mutate, edits=(("projects", name, "variables"),))
    return await get_variables(services, caller, name)


def _keep_sensitive(
    stored: tuple[Variable, ...], new: tuple[Variable, ...], raw: list[Any]
) -> tuple[Variable, ...]:
    def ident(v: Variable) -> tuple[str, frozenset[str]]:
        return key(v.name), frozenset(key(e) for e in v.environments)

    old = {ident(v): v for v in stored}
    out = []
    problems = []
    for i, v in enumerate(new):
        given = isinstance(raw[i], dict) and "value" in raw[i] if i < len(raw) else True
        if v.sensitive and not given:
            previous = old.get(ident(v))
            if previous is None or not previous.sensitive:
                problems.append(
                    Problem(
                        ("variables", i, "value"), f'sensitive variable "{v.name}" needs a value'
                    )
                )
                continue
            v = replace(v, value=previous.value)
        out.append(v)
    if problems:
        raise ValidationFailed(problems)
    return tuple(out)


__all__ = [
    "ConfigResult",
    "DocumentView",
    "authorise_edit",
    "create_document",
    "delete_document",
    "get_document",
    "get_process",
    "get_variables",
    "list_documents",
    "may_view",
    "resolve",
    "unchanged_since",
    "update_document",
    "update_process",
    "update_variables",
    "variables_as_read",
    "variables_version",
]
