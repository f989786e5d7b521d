"""Load the configuration model from the store, and write the changes a service decided on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain.codec import decode, decode_process, encode, encode_process
from conveyor.domain.diff import Change
from conveyor.domain.documents import (
    Process,
    Project,
    Subscription,
    SubscriptionWebhook,
    Target,
    User,
    Variable,
    key,
    slugify,
)
from conveyor.domain.errors import ConveyorError, Problem
from conveyor.domain.model import KINDS, Kind, Model, doc_name
from conveyor.domain.oidc import OidcTrust, decode_trust, encode_trust
from conveyor.domain.reading import Reader
from conveyor.store import tables as t


class Box(Protocol):
    def encrypt(self, plain: str) -> str: ...
    def decrypt(self, cipher: str) -> str: ...


class Sealed(str):
    """A sensitive value still encrypted: the string is its cipher. A model loaded for reading
    holds these instead of plain text (decrypting every secret of every project on each read is
    what made a load cost 70 ms); ``reveal`` opens one for the step that needs it, and writing
    one back stores the cipher as it is."""

    __slots__ = ()


def reveal(box: Box, value: str) -> str:
    """The plain text of a sensitive value, decrypting it only if it is still sealed."""
    return box.decrypt(value) if isinstance(value, Sealed) else value


def cipher_of(box: Box, value: str) -> str:
    """What to store for a sensitive value: a sealed one keeps its cipher, plain text is
    encrypted."""
    return str(value) if isinstance(value, Sealed) else box.encrypt(value)


@dataclass
class Loaded:
    """The model plus what the store needs to write it back: row ids and process versions."""

    model: Model
    ids: dict[tuple[str, str], int] = field(default_factory=dict)
    _index: tuple[Model, dict[tuple[str, int], Any]] | None = field(default=None, repr=False)

    def id_of(self, kind: str, name: str) -> int | None:
        return self.ids.get((kind, key(name)))

    def name_of(self, kind: Kind, row_id: int) -> str | None:
        doc = self._by_id().get((kind, row_id))
        return doc_name(doc) if doc is not None else None

    def _by_id(self) -> dict[tuple[str, int], Any]:
        # Built once per load: reads resolve many ids (a page of deployments, the dashboard).
        if self._index is None or self._index[0] is not self.model:
            index: dict[tuple[str, int], Any] = {}
            for kind, doc in self.model.all_docs():
                row_id = self.ids.get((kind, key(doc_name(doc))))
                if row_id is not None:
                    index[(kind, row_id)] = doc
            self._index = (self.model, index)
            return index
        return self._index[1]


def _corrupt(kind: str, name: str, problems: list[Problem]) -> ConveyorError:
    return ConveyorError(
        f"stored {kind} {name!r} cannot be read: " + "; ".join(str(p) for p in problems)
    )


async def read_revision(session: AsyncSession) -> int:
    """The configuration's revision: one primary-key read, done before each cached read."""
    row = (
        await session.execute(
            select(t.config_revision.c.revision).where(t.config_revision.c.id == 1)
        )
    ).scalar_one_or_none()
    return int(row) if row is not None else 0


def revision_column() -> Any:
    """The revision as a column of another query, to read it without a statement of its own."""
    return (
        select(t.config_revision.c.revision)
        .where(t.config_revision.c.id == 1)
        .scalar_subquery()
        .label("config_revision")
    )


async def bump_revision(session: AsyncSession) -> None:
    """Move the revision on, in the transaction that changes the configuration: every node's
    cache then reloads on its next read (and none can see the change without the new number)."""
    result = await session.execute(
        update(t.config_revision)
        .where(t.config_revision.c.id == 1)
        .values(revision=t.config_revision.c.revision + 1)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        await session.execute(insert(t.config_revision).values(id=1, revision=2))


async def load_model(
    session: AsyncSession, box: Box, *, parts: bool = True, decrypt: bool = True
) -> Loaded:
    """The whole configuration; ``parts=False`` leaves out the projects' processes and
    variables, for reads that only turn ids into names. ``decrypt=False`` leaves sensitive
    values ``Sealed`` (the cached model); configuration writes decrypt, to diff real values."""
    loaded = Loaded(Model())
    docs: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    for kind, table in t.DOCUMENT_TABLES.items():
        rows = (await session.execute(select(table).order_by(table.c.position, table.c.id))).all()
        for row in rows:
            problems: list[Problem] = []
            body, cipher = without_cipher(row.body)
            doc = decode(kind, body, (kind, row.name), problems)  # type: ignore[arg-type]
            if doc is None:
                raise _corrupt(kind, row.name, problems)
            if cipher and (parts or isinstance(doc, Target)):
                doc = _with_secret(doc, box.decrypt(cipher) if decrypt else Sealed(cipher))
            docs[kind].append((row.id, doc))
            loaded.ids[(kind, key(row.name))] = row.id
    processes: dict[int, Any] = {}
    variable_sets: dict[int, Any] = {}
    if parts:
        processes = {r.project_id: r for r in (await session.execute(select(t.processes))).all()}
        variable_sets = {
            r.project_id: r for r in (await session.execute(select(t.variable_sets))).all()
        }
    projects = []
    for row_id, project in docs["projects"]:
        proc_row = processes.get(row_id)
        process = Process()
        if proc_row is not None:
            problems = []
            process = decode_process(proc_row.body, ("projects", project.name, "process"), problems)
            if problems:
                raise _corrupt("process of", project.name, problems)
            process = replace(process, version=proc_row.version)
        var_row = variable_sets.get(row_id)
        variables = _read_variables(var_row.body, box, decrypt) if var_row is not None else ()
        projects.append((row_id, replace(project, process=process, variables=variables)))
    docs["projects"] = projects
    user_rows = (
        await session.execute(select(t.users).order_by(t.users.c.position, t.users.c.id))
    ).all()
    for row in user_rows:
        loaded.ids[("users", key(row.username))] = row.id
    model = Model(
        **{kind: tuple(doc for _, doc in docs[kind]) for kind in KINDS if kind != "users"},
        users=tuple(
            User(
                username=r.username,
                display_name=r.display_name,
                email=r.email,
                service_account=r.service_account,
                active=r.active,
                notify_interruptions=r.notify_interruptions,
                oidc_trust=_trust(r.oidc_trust),
            )
            for r in user_rows
        ),
    )
    loaded.model = model
    return loaded


def _trust(stored: Any) -> tuple[OidcTrust, ...]:
    """A user's OIDC trusts, stored in the shape of config as code."""
    if not stored:
        return ()
    problems: list[Problem] = []
    trusts = decode_trust(Reader({"oidc_trust": stored}, ("users",), problems, "a user"))
    if problems:
        raise _corrupt("users", "oidc_trust", problems)
    return trusts


def _read_variables(body: list[dict[str, Any]], box: Box, decrypt: bool) -> tuple[Variable, ...]:
    out = []
    for item in body:
        value = item.get("value", "")
        if item.get("sensitive"):
            value = box.decrypt(item["cipher"]) if decrypt else Sealed(item["cipher"])
        out.append(
            Variable(
                name=item["name"],
                value=value,
                sensitive=bool(item.get("sensitive")),
                environments=tuple(item.get("environments", ())),
            )
        )
    return tuple(out)


def _write_variables(variables: tuple[Variable, ...], box: Box) -> list[dict[str, Any]]:
    out = []
    for v in variables:
        item: dict[str, Any] = {"name": v.name, "environments": list(v.environments)}
        if v.sensitive:
            item["sensitive"] = True
            item["cipher"] = cipher_of(box, v.value)
        else:
            item["value"] = v.value
        out.append(item)
    return out


def _body(kind: str, doc: Any, box: Box) -> dict[str, Any]:
    body = encode(kind, doc)  # type: ignore[arg-type]
    body.pop("process", None)
    body.pop("variables", None)
    hook = doc.webhook if isinstance(doc, Subscription) else None
    if isinstance(hook, SubscriptionWebhook) and hook.secret:
        body["webhook"]["cipher"] = cipher_of(box, hook.secret)
    if isinstance(doc, Target) and doc.private_key:
        body["cipher"] = cipher_of(box, doc.private_key)
    return body


def _with_secret(doc: Any, secret: str) -> Any:
    """A document with its one sensitive field (a webhook's secret, an SSH key) put back."""
    if isinstance(doc, Subscription) and doc.webhook is not None:
        return replace(doc, webhook=replace(doc.webhook, secret=secret))
    if isinstance(doc, Target):
        return replace(doc, private_key=secret)
    return doc


def without_cipher(body: Any) -> tuple[Any, str | None]:
    """A document's body without its encrypted secret (a subscription's webhook secret, a
    target's private key), and that secret's cipher."""
    if isinstance(body, dict) and "cipher" in body:
        return {k: v for k, v in body.items() if k != "cipher"}, str(body["cipher"])
    hook = body.get("webhook") if isinstance(body, dict) else None
    if not isinstance(hook, dict) or "cipher" not in hook:
        return body, None
    rest = {k: v for k, v in hook.items() if k != "cipher"}
    return {**body, "webhook": rest}, str(hook["cipher"])


async def rename_row(session: AsyncSession, loaded: Loaded, kind: Kind, old: str, new: str) -> None:
    """Give a stored document a new name in place, so its id and history stay."""
    row_id = loaded.id_of(kind, old)
    if row_id is None:
        return
    table = t.users if kind == "users" else t.DOCUMENT_TABLES[kind]
    name_col = "username" if kind == "users" else "name"
    await session.execute(
        update(table).where(table.c.id == row_id).values({name_col: new, "slug": slugify(new)})
    )
    del loaded.ids[(kind, key(old))]
    loaded.ids[(kind, key(new))] = row_id
    await bump_revision(session)


async def persist(
    session: AsyncSession,
    box: Box,
    loaded: Loaded,
    desired: Model,
    changes: list[Change],
    now: datetime,
) -> dict[tuple[str, str], int]:
    """Write ``changes`` (from ``loaded.model`` to ``desired``); returns ids of new rows."""
    if changes:
        await bump_revision(session)
    created: dict[tuple[str, str], int] = {}
    positions = {
        (kind, key(doc_name(d))): i for kind in KINDS for i, d in enumerate(desired.docs(kind))
    }
    row_id: int | None
    for change in changes:
        if change.op == "delete":
            continue
        if change.aspect == "order":
            continue  # written below, with the positions that creations shift
        doc = change.after
        assert doc is not None
        position = positions.get((change.kind, key(change.name)), 0)
        if change.aspect == "document":
            row_id = await _upsert_document(
                session, box, loaded, change.kind, doc, position, now, change.op == "create"
            )
            if change.op == "create":
                created[(change.kind, key(change.name))] = row_id
                loaded.ids[(change.kind, key(change.name))] = row_id
        elif isinstance(doc, Project):
            project_id = loaded.id_of("projects", doc.name)
            assert project_id is not None, "a project's own row is written before its parts"
            if change.aspect == "process":
                await _write_part(
                    session, t.processes, project_id, encode_process(doc.process), now
                )
            else:
                await _write_part(
                    session, t.variable_sets, project_id, _write_variables(doc.variables, box), now
                )
    # Environments are ordered: a reorder, or one created between others, moves the rest.
    if any(c.kind == "environments" and (c.op == "create" or c.aspect == "order") for c in changes):
        for env in desired.environments:
            env_id = loaded.id_of("environments", env.name)
            if env_id is not None:
                await session.execute(
                    update(t.environments)
                    .where(t.environments.c.id == env_id)
                    .values(position=positions[("environments", key(env.name))])
                )
    for change in reversed(changes):
        if change.op != "delete":
            continue
        row_id = loaded.id_of(change.kind, change.name)
        if row_id is None:
            continue
        if change.kind == "users":
            # Users are deactivated, never deleted, so the audit log keeps its meaning.
            await session.execute(
                update(t.users).where(t.users.c.id == row_id).values(active=False, updated_at=now)
            )
            continue
        table = t.DOCUMENT_TABLES[change.kind]
        await session.execute(delete(table).where(table.c.id == row_id))
    return created


async def _upsert_document(
    session: AsyncSession,
    box: Box,
    loaded: Loaded,
    kind: Kind,
    doc: Any,
    position: int,
    now: datetime,
    create: bool,
) -> int:
    name = doc_name(doc)
    if kind == "users":
        values: dict[str, Any] = {
            "username": doc.username,
            "slug": slugify(doc.username),
            "display_name": doc.display_name,
            "email": doc.email,
            "service_account": doc.service_account,
            "active": doc.active,
            "notify_interruptions": doc.notify_interruptions,
            "oidc_trust": encode_trust(doc.oidc_trust) if doc.oidc_trust else None,
            "position": position,
            "updated_at": now,
        }
        table = t.users
    else:
        table = t.DOCUMENT_TABLES[kind]
        values = {
            "name": name,
            "slug": slugify(name),
            "position": position,
            "body": _body(kind, doc, box),
            "updated_at": now,
        }
        if kind == "user_roles":
            values["built_in"] = bool(doc.built_in)
    if create:
        result = await session.execute(
            insert(table).values(**values, created_at=now, version=1).returning(table.c.id)
        )
        return int(result.scalar_one())
    row_id = loaded.id_of(kind, name)
    assert row_id is not None
    await session.execute(
        update(table).where(table.c.id == row_id).values(**values, version=table.c.version + 1)
    )
    return row_id


async def _write_part(
    session: AsyncSession, table: Table, project_id: int, body: Any, now: datetime
) -> None:
    current = (
        await session.execute(select(table.c.version).where(table.c.project_id == project_id))
    ).scalar_one_or_none()
    if current is None:
        await session.execute(
            insert(table).values(project_id=project_id, version=1, body=body, updated_at=now)
        )
    else:
        await session.execute(
            update(table)
            .where(table.c.project_id == project_id)
            .values(version=current + 1, body=body, updated_at=now)
        )
