"""Notifications' rules: which events a subscription matches, who may be told of an event, what a
mail or a webhook says, how a webhook body is signed, and when a failed delivery is tried again.

Pure: the outbox (``conveyor.services.outbox``) applies them inside the transaction that writes
the events, and the engine sends what they produced.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from conveyor.domain import permissions as perms
from conveyor.domain.audit import Category, event_scopes, utc_text
from conveyor.domain.documents import Subscription, key
from conveyor.domain.errors import Problem
from conveyor.domain.model import Model

CATEGORIES: dict[str, str] = {c.value.lower(): c.value for c in Category}
SIGNATURE_HEADER = "X-Conveyor-Signature"
MAX_SUBJECT = 200


# ---------------------------------------------------------------- validation


def subscription_problems(model: Model) -> list[Problem]:
    problems: list[Problem] = []
    for sub in model.subscriptions:
        path: tuple[str | int, ...] = ("subscriptions", sub.name)
        given = [
            n for n, v in (("team", sub.team), ("user", sub.user), ("webhook", sub.webhook)) if v
        ]
        if len(given) != 1:
            have = f" (this one has {' and '.join(given)})" if given else ""
            problems.append(
                Problem(path, f"a subscription has one subscriber: team, user or webhook{have}")
            )
        if sub.team and not model.has("teams", sub.team):
            problems.append(Problem((*path, "team"), f'team "{sub.team}" does not exist'))
        if sub.user and not model.has("users", sub.user):
            problems.append(Problem((*path, "user"), f'user "{sub.user}" does not exist'))
        if sub.webhook is not None and not sub.webhook.url.startswith(("http://", "https://")):
            problems.append(
                Problem((*path, "webhook", "url"), "must start with http:// or https://")
            )
        elif sub.webhook is not None and len(sub.webhook.url) > 2000:
            problems.append(Problem((*path, "webhook", "url"), "is at most 2000 characters"))
        for i, category in enumerate(sub.categories):
            if category.lower() not in CATEGORIES:
                problems.append(
                    Problem(
                        (*path, "categories", i),
                        f'"{category}" is not an event category '
                        "(they are listed by GET /api/v1/events/categories)",
                    )
                )
        for kind, names in (
            ("projects", sub.projects),
            ("project_groups", sub.project_groups),
            ("environments", sub.environments),
        ):
            label = kind.removesuffix("s").replace("_", " ")
            for i, name in enumerate(names):
                if not model.has(kind, name):  # type: ignore[arg-type]
                    problems.append(Problem((*path, kind, i), f'{label} "{name}" does not exist'))
    return problems


# ---------------------------------------------------------------- matching


@dataclass(frozen=True)
class EventFacts:
    """An event as a notification needs it: names rather than row ids."""

    id: int
    category: str
    message: str
    occurred_at: datetime
    actor: str
    on_behalf_of: str | None
    project: perms.ProjectRef | None
    environment: str | None
    documents: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def public_id(self) -> str:
        return f"Events-{self.id}"

    @property
    def task(self) -> str | None:
        return next((d for d in self.documents if d.startswith("ServerTasks-")), None)


def _keys(names: Iterable[str]) -> set[str]:
    return {key(n) for n in names}


def wants(sub: Subscription, category: str) -> bool:
    """The cheap first test, before names are looked up: enabled, and the category."""
    if sub.disabled:
        return False
    return not sub.categories or category.lower() in {c.lower() for c in sub.categories}


def matches(sub: Subscription, event: EventFacts) -> bool:
    """Any value within a filter, every filter given; an event without a project (or an
    environment) matches no filter on projects (or environments)."""
    if not wants(sub, event.category):
        return False
    project = event.project
    if sub.projects and (project is None or key(project.name) not in _keys(sub.projects)):
        return False
    if sub.project_groups and (
        project is None or key(project.group) not in _keys(sub.project_groups)
    ):
        return False
    return not sub.environments or (
        event.environment is not None and key(event.environment) in _keys(sub.environments)
    )


def may_view_event(
    principal: perms.Principal, project: perms.ProjectRef | None, environment: str | None
) -> bool:
    """May this person read the event in the audit log? The audit log's own rule
    (``event_scopes``), asked about this one event's project and environment."""
    scopes = event_scopes(
        principal, [project] if project else [], [environment] if environment else []
    )
    if scopes is None:
        return True
    return any(
        (s.projects is None or (project is not None and project.name in s.projects))
        and (s.environments is None or (environment is not None and environment in s.environments))
        for s in scopes
    )


# ---------------------------------------------------------------- what is said


def task_link(base_url: str, task: str) -> str:
    return f"{base_url}/tasks/{task}"


def _link(event: EventFacts, base_url: str) -> str:
    if event.task:
        return task_link(base_url, event.task)
    query = {"category": event.category}
    if event.project:
        query["project"] = event.project.name
    if event.environment:
        query["environment"] = event.environment
    return f"{base_url}/audit?{urlencode(query)}"


def _subject(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1] + "…"


def event_mail(event: EventFacts, base_url: str, subscription: str) -> tuple[str, str]:
    """Subject and plain-text body of a subscription's mail about one event."""
    who = event.actor + (f" (on behalf of {event.on_behalf_of})" if event.on_behalf_of else "")
    lines = [
        event.message,
        "",
        f"Category:    {event.category}",
        f"When:        {utc_text(event.occurred_at)}",
        f"Who:         {who}",
    ]
    if event.project:
        lines.append(f"Project:     {event.project.name}")
    if event.environment:
        lines.append(f"Environment: {event.environment}")
    lines += [
        f"Event:       {event.public_id}",
        f"Link:        {_link(event, base_url)}",
        "",
        f'You get this mail through the subscription "{subscription}".',
    ]
    return _subject(f"[Conveyor] {event.message}"), "\n".join(lines) + "\n"


def call_mail(event: EventFacts, base_url: str, teams: Iterable[str]) -> tuple[str, str]:
    """The mail that calls the responsible teams' members to an interruption."""
    link = task_link(base_url, event.task) if event.task else base_url
    instructions = str(event.details.get("instructions") or "").strip()
    lines = [event.message, ""]
    if instructions:
        lines += [instructions, ""]
    lines += [
        f"Take responsibility and answer here: {link}",
        "",
        f"You get this mail because you are in {', '.join(teams)}. To stop mail addressed to "
        "your teams, set notify_interruptions to false (PUT /api/v1/users/<you>/preferences).",
    ]
    return _subject(f"[Conveyor] Waiting for you: {event.message}"), "\n".join(lines) + "\n"


def event_webhook(event: EventFacts, base_url: str, subscription: str) -> dict[str, Any]:
    """A webhook body: Slack-compatible ``text``, then the event itself."""
    link = _link(event, base_url)
    return {
        "text": f"{event.message}\n{link}",
        "subscription": subscription,
        "server": base_url,
        "link": link,
        "event": {
            "id": event.public_id,
            "category": event.category,
            "message": event.message,
            "occurred_at": utc_text(event.occurred_at),
            "actor": event.actor,
            "on_behalf_of": event.on_behalf_of,
            "project": event.project.name if event.project else None,
            "environment": event.environment,
            "documents": list(event.documents),
            "details": dict(event.details),
        },
    }


def step_webhook(subject: str, body: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A notification step's webhook body: Slack-compatible ``text``, then the deployment."""
    return {
        "text": f"{subject}\n{body}".rstrip("\n"),
        "subject": subject,
        "body": body,
        "project": values.get("Conveyor.Project.Name"),
        "release": values.get("Conveyor.Release.Number"),
        "environment": values.get("Conveyor.Environment.Name"),
        "deployment": values.get("Conveyor.Deployment.Id"),
        "task": values.get("Conveyor.Task.Id"),
        "link": values.get("Conveyor.Web.TaskLink"),
        "state": values.get("Conveyor.Deployment.State"),
        "error": values.get("Conveyor.Deployment.Error") or None,
    }


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def sign(secret: str, body: bytes) -> str:
    """The ``X-Conveyor-Signature`` value: ``sha256=`` and the HMAC-SHA256 of the body in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base_seconds: float, cap_seconds: float = 3600.0) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: doubling, capped."""
    return float(min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)))
