"""The audit log's rules: the category catalogue, the hash chain, and who may read which events.

Every change of state and every refused attempt at a protected action appends one event; the
category says what caused it, the documents say what it concerns. Each event carries the SHA-256
of its canonical form, which includes the previous event's hash: altering, removing or inserting
an event breaks the chain at that point, and ``ChainCheck`` names where.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from conveyor.domain import permissions as perms
from conveyor.domain.documents import key


class Category(StrEnum):
    DOCUMENT_CREATED = "DocumentCreated"
    DOCUMENT_MODIFIED = "DocumentModified"
    DOCUMENT_DELETED = "DocumentDeleted"
    CONFIG_APPLIED = "ConfigApplied"
    USER_CREATED = "UserCreated"
    PASSWORD_CHANGED = "PasswordChanged"
    API_KEY_CREATED = "ApiKeyCreated"
    API_KEY_REVOKED = "ApiKeyRevoked"
    LOGIN_SUCCEEDED = "LoginSucceeded"
    LOGIN_FAILED = "LoginFailed"
    LOGGED_OUT = "LoggedOut"
    ACCESS_DENIED = "AccessDenied"
    PACKAGE_PUSHED = "PackagePushed"
    PACKAGE_DELETED = "PackageDeleted"
    RELEASE_CREATED = "ReleaseCreated"
    RELEASE_DELETED = "ReleaseDeleted"
    RELEASE_PINNED = "ReleasePinned"
    RELEASE_UNPINNED = "ReleaseUnpinned"
    RELEASE_BLOCKED = "ReleaseBlocked"
    RELEASE_UNBLOCKED = "ReleaseUnblocked"
    RELEASE_VARIABLES_UPDATED = "ReleaseVariablesUpdated"
    DEPLOYMENT_QUEUED = "DeploymentQueued"
    DEPLOYMENT_STARTED = "DeploymentStarted"
    DEPLOYMENT_SUCCEEDED = "DeploymentSucceeded"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    DEPLOYMENT_CANCELED = "DeploymentCanceled"
    DEPLOYMENT_RESUMED = "DeploymentResumed"
    STEP_SKIPPED = "StepSkipped"
    INTERRUPTION_RAISED = "InterruptionRaised"
    INTERRUPTION_TAKEN = "InterruptionTaken"
    INTERRUPTION_SUBMITTED = "InterruptionSubmitted"
    TASK_CANCELED = "TaskCanceled"
    TARGET_HEALTH_CHANGED = "TargetHealthChanged"
    TARGET_HOST_KEY_PINNED = "TargetHostKeyPinned"
    AGENT_TOKEN_CREATED = "AgentTokenCreated"
    AGENT_ENROLLED = "AgentEnrolled"
    AGENT_REVOKED = "AgentRevoked"
    APPROVAL_GIVEN = "ApprovalGiven"
    APPROVAL_REVOKED = "ApprovalRevoked"
    DEPLOYMENT_HELD = "DeploymentHeld"
    DEPLOYMENT_RELEASED = "DeploymentReleased"
    DEPLOYMENT_SUPERSEDED = "DeploymentSuperseded"
    DEPLOYMENT_EXPIRED = "DeploymentExpired"
    FREEZE_OVERRIDDEN = "FreezeOverridden"
    RETENTION_APPLIED = "RetentionApplied"
    BUILD_INFORMATION_PUSHED = "BuildInformationPushed"
    WEBHOOK_RECEIVED = "WebhookReceived"
    WEBHOOK_REFUSED = "WebhookRefused"
    WEBHOOK_SOURCE_CHANGED = "WebhookSourceChanged"


DESCRIPTIONS: dict[Category, str] = {
    Category.DOCUMENT_CREATED: "A configuration document was created",
    Category.DOCUMENT_MODIFIED: "A configuration document was changed (before and after)",
    Category.DOCUMENT_DELETED: "A configuration document was deleted",
    Category.CONFIG_APPLIED: "A config-as-code file was applied",
    Category.USER_CREATED: "A user or service account was created",
    Category.PASSWORD_CHANGED: "A password was set or changed",
    Category.API_KEY_CREATED: "An API key was created",
    Category.API_KEY_REVOKED: "An API key was revoked",
    Category.LOGIN_SUCCEEDED: "Someone signed in",
    Category.LOGIN_FAILED: "A sign-in failed",
    Category.LOGGED_OUT: "Someone signed out",
    Category.ACCESS_DENIED: "A protected action was refused for lack of permission",
    Category.PACKAGE_PUSHED: "A package was pushed to the built-in feed",
    Category.PACKAGE_DELETED: "A package was deleted from the built-in feed",
    Category.RELEASE_CREATED: "A release was created",
    Category.RELEASE_DELETED: "A release was deleted",
    Category.RELEASE_PINNED: "A release was pinned in an environment (with the reason)",
    Category.RELEASE_UNPINNED: "A release pinned in an environment was unpinned",
    Category.RELEASE_BLOCKED: "A release was blocked from being promoted (with the reason)",
    Category.RELEASE_UNBLOCKED: "A blocked release was unblocked",
    Category.RELEASE_VARIABLES_UPDATED: "A release's variables were refreshed from its project "
    "(the names that changed, never the values)",
    Category.DEPLOYMENT_QUEUED: "A deployment was queued",
    Category.DEPLOYMENT_STARTED: "A deployment started running",
    Category.DEPLOYMENT_SUCCEEDED: "A deployment succeeded",
    Category.DEPLOYMENT_FAILED: "A deployment failed",
    Category.DEPLOYMENT_CANCELED: "A deployment was canceled",
    Category.DEPLOYMENT_RESUMED: "A deployment resumed after an interruption was answered",
    Category.STEP_SKIPPED: "A step was skipped (the details say why)",
    Category.INTERRUPTION_RAISED: "A deployment is waiting for a person",
    Category.INTERRUPTION_TAKEN: "Someone took responsibility for an interruption",
    Category.INTERRUPTION_SUBMITTED: "Someone answered an interruption (with notes)",
    Category.TASK_CANCELED: "A task was canceled",
    Category.TARGET_HEALTH_CHANGED: "A health check found a target healthy or unhealthy "
    "(only when that differs from the check before)",
    Category.TARGET_HOST_KEY_PINNED: "An ssh target's host key was pinned on first use",
    Category.AGENT_TOKEN_CREATED: "An administrator made an enrolment token for an agent target",
    Category.AGENT_ENROLLED: "An agent enrolled with a token and got its own credential",
    Category.AGENT_REVOKED: "An administrator revoked an agent",
    Category.APPROVAL_GIVEN: "Someone approved a release for an environment ahead of time "
    "(notes and answers in the details)",
    Category.APPROVAL_REVOKED: "An approval given ahead of time was revoked",
    Category.DEPLOYMENT_HELD: "A deployment waits for its environment's checks (approvals, a "
    "change window, a freeze, its start time); the details list each check",
    Category.DEPLOYMENT_RELEASED: "A held deployment passed its environment's checks and may start",
    Category.DEPLOYMENT_SUPERSEDED: "A queued deployment was canceled by a newer one (run latest)",
    Category.DEPLOYMENT_EXPIRED: "A scheduled deployment was canceled: its change window closed "
    "before it could start",
    Category.FREEZE_OVERRIDDEN: "Someone deployed during a freeze, with the reason they gave",
    Category.RETENTION_APPLIED: "Retention deleted old releases, deployments, task logs or "
    "package versions: how many and which (audit events are never deleted)",
    Category.BUILD_INFORMATION_PUSHED: "A build server pushed build information for a package "
    "version (stored with the version; the event keeps a summary)",
    Category.WEBHOOK_RECEIVED: "A Git host's push webhook was accepted: the branch, its commits "
    "and the releases it created",
    Category.WEBHOOK_REFUSED: "A webhook was refused: a bad signature or token, a replayed "
    "delivery, or a stale timestamp",
    Category.WEBHOOK_SOURCE_CHANGED: "A webhook source was added or removed, or a project's "
    "release-on-push setting changed",
}

# ---------------------------------------------------------------- the hash chain

# The previous hash of the first event.
GENESIS = "0" * 64
# Column widths: a value is cut to fit before it is hashed, so the stored value hashes the same.
USER_AGENT_MAX = 400
IP_MAX = 64


@dataclass(frozen=True)
class EventRecord:
    """An event as stored: what the hash covers, plus the chain fields."""

    id: int
    occurred_at: datetime
    category: str
    actor_id: int | None
    actor: str
    on_behalf_of: str | None
    ip_address: str | None
    user_agent: str | None
    message: str
    project_id: int | None
    environment_id: int | None
    documents: Sequence[str]
    details: Mapping[str, Any]
    hash: str | None = None
    prev_hash: str | None = None


def utc_text(value: datetime) -> str:
    """The one text form of a time in the hash: ``2025-03-01T12:00:01.123456Z`` (SQLite hands
    back naive UTC datetimes, PostgreSQL aware ones)."""
    if value.tzinfo is None:
        return value.isoformat(timespec="microseconds") + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def plain_json(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as they read back from a JSON column (string keys, no tuples or datetimes), so
    that what is hashed when writing is what is hashed when verifying."""
    result: dict[str, Any] = json.loads(json.dumps(dict(details), default=str))
    return result


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical(event: EventRecord, prev_hash: str) -> bytes:
    """JSON with sorted keys and no whitespace, ASCII only: reproducible in any language."""
    form = {
        "id": event.id,
        "occurred_at": utc_text(event.occurred_at),
        "category": event.category,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "on_behalf_of": event.on_behalf_of,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "message": event.message,
        "project_id": event.project_id,
        "environment_id": event.environment_id,
        "documents": sorted(event.documents),
        "details": event.details,
        "prev_hash": prev_hash,
    }
    return _CANONICAL.encode(form).encode("ascii")


@dataclass(frozen=True)
class CanonicalParts:
    """An event's canonical form with its three chain-given fields left out: ``before_id``,
    the id, ``before_time``, the time (``utc_text``), ``before_prev``, the previous hash, and
    ``rest``. The database that holds the chain's head fills them in and hashes the result, so
    an event is appended in one round trip; joined here they give `canonical` exactly."""

    before_id: str
    before_time: str
    before_prev: str
    rest: str

    def joined(self, event_id: int, time_text: str, prev_hash: str) -> bytes:
        return (
            self.before_id
            + str(event_id)
            + self.before_time
            + time_text
            + self.before_prev
            + prev_hash
            + self.rest
        ).encode("ascii")


def canonical_parts(event: EventRecord) -> CanonicalParts:
    """`canonical` cut around ``id``, ``occurred_at`` and ``prev_hash`` (keys in sorted order:
    each value is encoded exactly as it is inside the whole object)."""
    enc = _CANONICAL.encode

    def fields(*names: str) -> str:
        return "".join(f",{enc(name)}:{enc(values[name])}" for name in names)

    values: dict[str, Any] = {
        "actor": event.actor,
        "actor_id": event.actor_id,
        "category": event.category,
        "details": event.details,
        "documents": sorted(event.documents),
        "environment_id": event.environment_id,
        "ip_address": event.ip_address,
        "message": event.message,
        "on_behalf_of": event.on_behalf_of,
        "project_id": event.project_id,
        "user_agent": event.user_agent,
    }
    head = "{" + fields("actor", "actor_id", "category", "details", "documents")[1:]
    head += fields("environment_id")
    return CanonicalParts(
        before_id=head + ',"id":',
        before_time=fields("ip_address", "message") + ',"occurred_at":"',
        before_prev='"' + fields("on_behalf_of") + ',"prev_hash":"',
        rest='"' + fields("project_id", "user_agent") + "}",
    )


def event_hash(event: EventRecord, prev_hash: str) -> str:
    return hashlib.sha256(canonical(event, prev_hash)).hexdigest()


def public(event_id: int) -> str:
    return f"Events-{event_id}"


@dataclass(frozen=True)
class Finding:
    """The first place the chain breaks."""

    event_id: int
    kind: str  # altered | removed | inserted | unhashed
    message: str


@dataclass
class ChainCheck:
    """Walks events in id order, fed in chunks, and stops at the first break.

    For each event: its ``prev_hash`` must be the previous event's hash (the genesis value for
    the first), and its own hash must be the hash of its content. Events written before the
    chain existed (no hash, before any hashed event) are counted as unchained.
    """

    count: int = 0
    unchained: int = 0
    finding: Finding | None = None
    _last: EventRecord | None = field(default=None, repr=False)
    _before_last: EventRecord | None = field(default=None, repr=False)

    @property
    def head(self) -> EventRecord | None:
        return self._last

    def feed(self, events: Iterable[EventRecord]) -> bool:
        """Check the next events; False once a break was found (feed no more)."""
        for event in events:
            if self.finding is not None:
                return False
            self.finding = self._check(event)
            if self.finding is None:
                self.count += 1
        return self.finding is None

    def _check(self, event: EventRecord) -> Finding | None:
        name = public(event.id)
        last = self._last
        if event.hash is None:
            if last is None or last.hash is None:
                self.unchained += 1
                self._last = event
                return None
            return Finding(
                event.id,
                "unhashed",
                f"{name} has no hash: it was written outside Conveyor, or its hash was erased",
            )
        expected = last.hash if last is not None and last.hash is not None else GENESIS
        content_ok = event_hash(event, event.prev_hash or "") == event.hash
        if not content_ok:
            return Finding(
                event.id,
                "altered",
                f"{name} was altered (or forged): its content does not match its hash",
            )
        if event.prev_hash != expected:
            return self._broken_link(event, last)
        self._before_last, self._last = last, event
        return None

    def _broken_link(self, event: EventRecord, last: EventRecord | None) -> Finding:
        """The event is intact but not chained to its predecessor: say what happened between."""
        name = public(event.id)
        before = self._before_last
        if last is not None and before is not None and event.prev_hash == before.hash:
            return Finding(
                last.id,
                "inserted",
                f"{public(last.id)} was inserted: {name} is chained to {public(before.id)}",
            )
        first_missing = last.id + 1 if last is not None else 1
        if event.id > first_missing:
            gap = public(first_missing)
            if event.id - 1 > first_missing:
                gap += f" to {public(event.id - 1)}"
            return Finding(
                event.id,
                "removed",
                f"the event before {name} is missing or was altered: {gap} removed",
            )
        return Finding(
            event.id,
            "removed",
            f"the event before {name} is missing or was altered "
            f"({name} is not chained to the hash of "
            f"{public(last.id) if last is not None else 'the start of the log'})",
        )


# ---------------------------------------------------------------- who may read which events


@dataclass(frozen=True)
class EventScope:
    """The events one grant of EventView shows: ``None`` on a dimension means any value,
    events without a project or environment included; a set means only events naming one."""

    projects: frozenset[str] | None
    environments: frozenset[str] | None


def sees_everything(principal: perms.Principal) -> bool:
    """Holds EventView through a grant restricted neither by project nor by environment."""
    return principal.active and any(
        perms.Permission.EventView in g.permissions
        and not (g.projects or g.project_groups or g.environments)
        for g in principal.grants
    )


def event_scopes(
    principal: perms.Principal,
    projects: Sequence[perms.ProjectRef],
    environments: Sequence[str],
) -> list[EventScope] | None:
    """``None``: every event. Otherwise one scope per grant of EventView (an empty list: none).

    Each grant is judged on its own (as ``authorize`` does), and the projects and environments
    it covers are found by asking ``authorize`` itself, so reading never drifts from the rules.
    """
    if not principal.active:
        return []
    scopes: list[EventScope] = []
    for grant in principal.grants:
        if perms.Permission.EventView not in grant.permissions:
            continue
        alone = perms.Principal(principal.username, principal.active, (grant,))
        project_names: frozenset[str] | None = None
        if grant.projects or grant.project_groups:
            # Only the projects the grant names, or whose group it names, can be in scope: ask
            # ``authorize`` about those, not about every project there is.
            named = {key(n) for n in grant.projects}
            groups = {key(n) for n in grant.project_groups}
            project_names = frozenset(
                p.name
                for p in projects
                if (key(p.name) in named or key(p.group) in groups)
                and perms.authorize(alone, perms.Permission.EventView, project=p).allowed
            )
        env_names: frozenset[str] | None = None
        if grant.environments:
            env_names = frozenset(
                e
                for e in environments
                if perms.authorize(alone, perms.Permission.EventView, environment=e).allowed
            )
        if project_names is None and env_names is None:
            return None
        scopes.append(EventScope(project_names, env_names))
    return scopes
