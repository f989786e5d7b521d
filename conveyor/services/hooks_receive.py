"""A webhook delivery received: verified, checked for replay, recorded as build information,
and, for the projects that allow it, turned into releases of what the push changed
(docs/webhooks.md).

Every delivery is audited: one refused (no source, a bad signature or token, a stale
timestamp, a replayed delivery id) as ``WebhookRefused`` by ``webhook:<provider>`` with the
sender's address; one accepted as ``WebhookReceived`` by the source's service account, whose
roles then decide what the push may do (create releases, deploy them to the lifecycle's
automatic environments), exactly as if it had called the API itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.exc import IntegrityError

from conveyor.domain import hooks, throttling
from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category
from conveyor.domain.changes import matching
from conveyor.domain.documents import Project
from conveyor.domain.errors import Conflict, ConveyorError, Unauthenticated, ValidationFailed
from conveyor.services import buildinfo, deployments, throttle
from conveyor.services.access import caller_for_user, find_user
from conveyor.services.config import load
from conveyor.services.core import Caller, Services
from conveyor.services.gitrepo import SAFE, Repository
from conveyor.services.hooks import Source, release_on_push, sources_for
from conveyor.store import tables as t

FETCH_TIMEOUT = 120.0


@dataclass
class Received:
    status: int  # 200: recorded; 202: accepted and ignored (not a push to a watched branch)
    body: dict[str, Any]


@dataclass
class Detected:
    """Per changed project: the commit it starts from and the commits the release brings."""

    changed: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sender(provider: str, ip: str | None, user_agent: str | None) -> Caller:
    """Who a delivery is from until its signature shows which source sent it: nobody with any
    permission, named for the audit log."""
    name = f"webhook:{provider}"
    return Caller(None, name, perms.Principal(name, False, ()), ip, user_agent)


async def _refuse(
    services: Services, who: Caller, provider: str, reason: str, details: dict[str, Any]
) -> None:
    recorded = await throttle.recording(
        services, throttling.refusals("webhook", who.ip_address), services.clock()
    )
    if not recorded.record:
        return
    async with services.tx(who) as tx:
        await tx.audit(
            Category.WEBHOOK_REFUSED,
            f"a {provider} webhook from {who.ip_address or 'an unknown address'} was refused: "
            f"{reason}{throttle.unrecorded_note(recorded)}",
            details={"provider": provider, "reason": reason, **details},
        )


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The JSON body; GitHub may send it form-encoded, as the ``payload`` field."""
    text = body.decode("utf-8", errors="replace")
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        text = (parse_qs(text).get("payload") or [""])[0]
    try:
        data = json.loads(text)
    except ValueError:
        raise ValidationFailed(
            "the body is not JSON: send the webhook as application/json"
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    return data


async def _verified(
    services: Services,
    who: Caller,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    source_name: str | None,
) -> Source:
    """The source whose secret the delivery proves, or an audited 401."""
    ident = next(
        (headers[n.lower()] for n in hooks.DELIVERY_HEADERS[provider] if n.lower() in headers), ""
    )[:200]
    candidates = await sources_for(services, provider, source_name)
    if not candidates:
        named = f' named "{source_name}"' if source_name else ""
        reason = f"no {provider} webhook source{named} is configured"
        await _refuse(services, who, provider, reason, {"delivery": ident})
        raise Unauthenticated(f"{reason}: an administrator adds one (docs/webhooks.md)")
    now = services.clock().timestamp()
    reason = ""
    for candidate in candidates:
        try:
            hooks.verify(
                provider, services.box.decrypt(candidate.secret_cipher), headers, body, now
            )
            return candidate
        except hooks.Refused as exc:
            reason = exc.reason
    await _refuse(
        services,
        who,
        provider,
        reason,
        {"delivery": ident, "sources": [c.name for c in candidates]},
    )
    raise Unauthenticated(reason)


async def _acting_as(services: Services, source: Source, who: Caller) -> Caller:
    """The source's service account, with the sender's address and user agent."""
    async with services.read() as session:
        user = await find_user(session, source.run_as)
        if user is None:  # removed since: the push is recorded and may do nothing else
            return who
        return await caller_for_user(
            session,
            user,
            ip_address=who.ip_address,
            user_agent=who.user_agent,
            services=services,
        )


def _ignored_because(source: Source, delivery: hooks.Delivery) -> str | None:
    push = delivery.push
    if push is None:
        return f"{delivery.event} events are not acted on (only push)"
    if not hooks.same_repository(source.repository, push.repository):
        return (
            f"the push is to {push.repository or 'an unnamed repository'}, not {source.repository}"
        )
    if push.branch is None:
        return "the push is not to a branch (a tag?)"
    if not hooks.watched(push.branch, source.branches):
        return f"branch {push.branch} is not watched ({', '.join(source.branches)})"
    if push.after is None:
        return f"branch {push.branch} was deleted"
    return None


async def receive(
    services: Services,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    source_name: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Received:
    """Verify, refuse replays, record, and release what changed; ``headers`` lower-cased."""
    who = sender(provider, ip, user_agent)
    source = await _verified(services, who, provider, headers, body, source_name)
    delivery = hooks.read_delivery(provider, headers, _payload(headers, body))
    caller = await _acting_as(services, source, who)
    ignored = _ignored_because(source, delivery)
    push = delivery.push
    commits = list(push.commits) if push is not None and ignored is None else []
    notes = [ignored] if ignored else []
    try:
        async with services.tx(caller) as tx:
            row_id = (
                await tx.session.execute(
                    t.hook_deliveries.insert()
                    .values(
                        source_id=source.id,
                        delivery_id=delivery.delivery_id,
                        received_at=tx.now,
                        event=delivery.event[:64],
                        outcome="ignored" if ignored else "recorded",
                        branch=push.branch if push else None,
                        before=push.before if push else None,
                        after=push.after if push else None,
                        commits=commits,
                        releases=[],
                        notes=notes,
                    )
                    .returning(t.hook_deliveries.c.id)
                )
            ).scalar_one()
            what = (
                f"{delivery.event} ignored: {ignored}"
                if ignored
                else f"push to {push.branch if push else '?'} ({len(commits)} commit(s))"
            )
            await tx.audit(
                Category.WEBHOOK_RECEIVED,
                f"webhook {source.name} ({provider}) delivery {delivery.delivery_id}: {what}",
                details={
                    "source": source.name,
                    "provider": provider,
                    "delivery": delivery.delivery_id,
                    "event": delivery.event,
                    "branch": push.branch if push else None,
                    "after": push.after if push else None,
                    "commits": len(commits),
                    "ignored": ignored,
                },
            )
    except IntegrityError:
        reason = f"delivery {delivery.delivery_id} was received before (a replay)"
        await _refuse(
            services,
            who,
            provider,
            reason,
            {"delivery": delivery.delivery_id, "source": source.name},
        )
        raise Conflict(reason) from None
    out: dict[str, Any] = {
        "source": source.name,
        "delivery": delivery.delivery_id,
        "event": delivery.event,
        "outcome": "ignored" if ignored else "recorded",
        "branch": push.branch if push else None,
        "after": push.after if push else None,
        "commits": len(commits),
        "releases": [],
        "notes": notes,
    }
    if ignored or push is None or push.after is None or push.branch is None:
        return Received(202, out)
    releases, said = await _release_changed(services, caller, source, push.after, push.branch)
    out["releases"], out["notes"] = releases, notes + said
    if releases or said:
        async with services.write() as session:
            await session.execute(
                t.hook_deliveries.update()
                .where(t.hook_deliveries.c.id == row_id)
                .values(releases=releases, notes=notes + said)
            )
    return Received(200, out)


# ---------------------------------------------------------------- releasing what changed


async def _release_changed(
    services: Services, caller: Caller, source: Source, after: str, branch: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """A release of each project that allows it and whose watch paths the push changed, since
    the commit of its newest release (as ``conveyor changes --since last-release``)."""
    loaded = await load(services)
    projects = {
        p.name: p
        for p in loaded.model.projects
        if isinstance(p, Project) and p.watch_paths and not p.disabled
    }
    ids = {name: loaded.id_of("projects", name) for name in projects}
    allowed = await release_on_push(services, [i for i in ids.values() if i is not None])
    wanted = [projects[name] for name, pid in ids.items() if pid in allowed]
    if not wanted:
        return [], []
    if not source.repo_path:
        return [], [
            f"{len(wanted)} project(s) release on push, but the source {source.name} has no "
            "repo_path: change detection needs a clone of the repository on the server"
        ]
    starts: dict[str, str | None] = {}
    notes: list[str] = []
    try:
        for item in await buildinfo.baselines(services, caller):
            starts[item["project"]] = item["commit"]
    except ConveyorError as exc:
        return [], [f"the baselines could not be read as {caller.username}: {exc.message}"]
    try:
        found = await asyncio.to_thread(_detect, Path(source.repo_path), after, wanted, starts)
    except ConveyorError as exc:
        return [], [f"change detection failed: {exc.message}"]
    notes += found.notes
    made: list[dict[str, Any]] = []
    for project in wanted:
        if project.name not in found.changed:
            continue
        build = {"commit": after, "branch": branch, "commits": found.changed[project.name]}
        try:
            release, automatic = await deployments.create_release(
                services,
                caller,
                project.name,
                build=build,
                notes=f"Created by the webhook {source.name} for a push to {branch}.",
            )
        except ConveyorError as exc:
            made.append({"project": project.name, "error": exc.message[:1000]})
            continue
        made.append(
            {
                "project": project.name,
                "version": release.version,
                "automatic_deployments": automatic,
            }
        )
    return made, notes


def _fetch(folder: Path) -> None:
    """``git fetch`` from the clone's remotes, for a pushed commit it does not have yet."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    done = subprocess.run(
        ["git", *SAFE, "-C", str(folder), "fetch", "--quiet", "--all", "--no-tags"],
        capture_output=True,
        env=env,
        timeout=FETCH_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", errors="replace").strip()[:500]
        raise ValidationFailed(f"git fetch in {folder} failed: {said or 'no message'}")


def _detect(
    folder: Path, after: str, projects: list[Project], starts: dict[str, str | None]
) -> Detected:
    repo = Repository.open(folder)
    if not repo.has_commit(after):
        _fetch(folder)
    until = repo.resolve(after)
    found = Detected()
    diffs: dict[str | None, list[str]] = {}
    for project in projects:
        since = starts.get(project.name)
        if since is not None and not repo.has_commit(since):
            found.notes.append(
                f"{project.name}: the commit of its newest release ({since[:10]}) is not in "
                f"{folder}: fetch the whole history there; not released"
            )
            continue
        if since not in diffs:
            changes = repo.changed_files(since, until)
            diffs[since] = repo.relative([p for c in changes for p in c.paths])
        files = matching(project.watch_paths, diffs[since], f"the watch paths of {project.name}")
        if not files:
            continue
        if since is None:
            found.notes.append(
                f"{project.name}: no release with a commit yet, so every file counts"
            )
        patterns = list(project.watch_paths)
        touching = lambda paths, p=patterns: bool(matching(p, paths))  # noqa: E731
        found.changed[project.name] = [
            c.as_dict() for c in repo.commits(since, until, hooks.MAX_COMMITS, touching)
        ]
    return found
