"""Webhooks in: verifying who sent a delivery, and reading a push out of it (docs/webhooks.md).

Three kinds of sender, each with its own proof:

- **GitHub**: ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of the raw body with the
  shared secret; the delivery's id is ``X-GitHub-Delivery``, the event ``X-GitHub-Event``.
- **GitLab**: ``X-Gitlab-Token``, the secret itself, compared in constant time; the id is
  ``Idempotency-Key`` (GitLab 17.4 and later, the same on a retry) or ``X-Gitlab-Event-UUID``.
- **generic** (any CI or script): ``X-Conveyor-Timestamp: <unix seconds>`` and
  ``X-Conveyor-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<raw body>``; the
  timestamp must be within five minutes of the server's clock, so a captured request cannot be
  replayed later; the id is ``X-Conveyor-Delivery``.

Pure: bytes, headers and parsed JSON in, decisions out.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.domain.errors import Problem, ValidationFailed

PROVIDERS = ("github", "gitlab", "generic")
# The generic sender's timestamp may be this far from the server's clock, either way.
TOLERANCE_SECONDS = 300
MIN_SECRET = 16
MAX_BRANCH_PATTERNS = 50
MAX_COMMITS = 1000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")
ZERO = re.compile(r"0+")
SHA = re.compile(r"[0-9a-fA-F]{7,64}")
DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}")
GENERIC_SIGNATURE = "x-conveyor-signature"
GENERIC_TIMESTAMP = "x-conveyor-timestamp"
GENERIC_DELIVERY = "x-conveyor-delivery"


class Refused(Exception):
    """The delivery cannot be shown to come from the configured sender; why, for the audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Push:
    repository: str
    branch: str | None  # None: a tag or another kind of ref
    before: str | None  # None: the branch was created
    after: str | None  # None: the branch was deleted
    commits: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str  # "push", "ping", or whatever else the host sent
    push: Push | None


# ---------------------------------------------------------------- signatures


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_generic(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Conveyor-Signature`` a generic sender puts on ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac_hex(secret, f"{timestamp}.".encode() + body)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def verify(provider: str, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raises ``Refused`` unless the delivery carries proof of ``secret`` (``headers`` have
    lower-case names; ``now`` is the server's Unix time)."""
    if provider == "github":
        given = headers.get("x-hub-signature-256", "")
        if not given:
            raise Refused("no X-Hub-Signature-256 header: set the webhook's secret on GitHub")
        if not _same(given.strip(), "sha256=" + hmac_hex(secret, body)):
            raise Refused("the X-Hub-Signature-256 signature does not match the secret")
    elif provider == "gitlab":
        given = headers.get("x-gitlab-token", "")
        if not given:
            raise Refused("no X-Gitlab-Token header: set the webhook's secret token on GitLab")
        if not _same(given, secret):
            raise Refused("the X-Gitlab-Token does not match the secret")
    elif provider == "generic":
        stamp = headers.get(GENERIC_TIMESTAMP, "").strip()
        given = headers.get(GENERIC_SIGNATURE, "").strip()
        if not stamp or not given:
            raise Refused("X-Conveyor-Timestamp and X-Conveyor-Signature are both required")
        if not stamp.isdigit() or len(stamp) > 12:
            raise Refused("X-Conveyor-Timestamp must be Unix time in seconds")
        if abs(now - int(stamp)) > TOLERANCE_SECONDS:
            raise Refused(
                f"X-Conveyor-Timestamp is more than {TOLERANCE_SECONDS} s from the server's "
                "clock: a late replay, or a clock to set right"
            )
        if not _same(given, sign_generic(secret, int(stamp), body)):
            raise Refused("the X-Conveyor-Signature does not match the secret")
    else:  # pragma: no cover - the routes name only the known providers
        raise Refused(f"unknown provider {provider}")


# ---------------------------------------------------------------- reading deliveries


DELIVERY_HEADERS = {
    "github": ("X-GitHub-Delivery",),
    "gitlab": ("Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID"),
    "generic": ("X-Conveyor-Delivery",),
}


def delivery_id(provider: str, headers: Mapping[str, str]) -> str:
    """The id the sender gave the delivery (the same on a retry): how a replay is recognised."""
    names = DELIVERY_HEADERS[provider]
    for name in names:
        value = headers.get(name.lower(), "").strip()
        if value:
            if not DELIVERY_ID.fullmatch(value):
                raise ValidationFailed(f"{name} is not a delivery id (1 to 200 visible characters)")
            return value
    raise ValidationFailed(
        f"no delivery id: the {provider} webhook must send {' or '.join(names)} "
        "(replays are recognised by it)"
    )


def event_name(provider: str, headers: Mapping[str, str], payload: Mapping[str, Any]) -> str:
    if provider == "github":
        return headers.get("x-github-event", "").strip().lower() or "unknown"
    if provider == "gitlab":
        kind = str(payload.get("object_kind") or "").lower()
        return kind or headers.get("x-gitlab-event", "").strip().lower() or "unknown"
    return str(payload.get("event") or "push").lower()


def branch_of(ref: str) -> str | None:
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else None


def _commit_id(value: Any) -> str | None:
    if isinstance(value, str) and SHA.fullmatch(value) and not ZERO.fullmatch(value):
        return value.lower()
    return None


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else ""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _commits(items: Any) -> tuple[dict[str, str], ...]:
    """The pushed commits as build information: sha, author, email, message, timestamp."""
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        sha = _commit_id(item.get("id") or item.get("sha"))
        if sha is None:
            continue
        author = item.get("author")
        author = author if isinstance(author, Mapping) else {"name": author}
        out.append(
            {
                "sha": sha,
                "author": _text(author.get("name"), 200),
                "email": _text(author.get("email"), 200),
                "message": _text(item.get("message"), 1000),
                "timestamp": _text(item.get("timestamp"), 40),
            }
        )
        if len(out) >= MAX_COMMITS:
            break
    return tuple(out)


def _repository(provider: str, payload: Mapping[str, Any]) -> str:
    if provider == "gitlab":
        project = payload.get("project")
        if isinstance(project, Mapping):
            return _text(project.get("path_with_namespace"), 400)
        return ""
    repo = payload.get("repository")
    if isinstance(repo, Mapping):
        return _text(repo.get("full_name") or repo.get("name"), 400)
    return _text(repo, 400)


def read_push(provider: str, payload: Mapping[str, Any]) -> Push:
    """A push event's branch, commits before and after, and the commits it brought."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref or len(ref) > 255 + len("refs/heads/"):
        raise ValidationFailed(
            Problem(("ref",), 'a push names its ref ("refs/heads/main", at most 255 characters)')
        )
    branch = branch_of(ref)
    if branch is None and provider == "generic" and not ref.startswith("refs/"):
        branch = ref  # a generic sender may give the branch name alone
    if branch is not None and len(branch) > 255:
        raise ValidationFailed(Problem(("ref",), "a branch name has at most 255 characters"))
    return Push(
        repository=_repository(provider, payload),
        branch=branch,
        before=_commit_id(payload.get("before")),
        after=_commit_id(payload.get("after")),
        commits=_commits(payload.get("commits")),
    )


def read_delivery(
    provider: str, headers: Mapping[str, str], payload: Mapping[str, Any]
) -> Delivery:
    ident = delivery_id(provider, headers)
    event = event_name(provider, headers, payload)
    push = read_push(provider, payload) if event == "push" else None
    return Delivery(ident, event, push)


# ---------------------------------------------------------------- what a push does


def watched(branch: str | None, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether pushes to ``branch`` count: a name or a glob (``release/*``) of ``patterns``."""
    return branch is not None and any(fnmatch.fnmatchcase(branch, p) for p in patterns)


def same_repository(configured: str, named: str) -> bool:
    """An empty configured repository accepts any; otherwise names compare without case."""
    return not configured or configured.strip("/").lower() == named.strip("/").lower()


# ---------------------------------------------------------------- configuring a source


@dataclass(frozen=True)
class SourceSpec:
    name: str
    provider: str
    repository: str
    branches: tuple[str, ...]
    repo_path: str
    run_as: str


def check_source(data: Mapping[str, Any]) -> SourceSpec:
    """A new source's fields, or ``ValidationFailed`` naming each that is wrong."""
    problems: list[Problem] = []
    name = str(data.get("name") or "").strip()
    if not NAME.fullmatch(name):
        problems.append(
            Problem(("name",), "1 to 100 letters, digits, spaces, dots, dashes or underscores")
        )
    provider = str(data.get("provider") or "").strip().lower()
    if provider not in PROVIDERS:
        problems.append(Problem(("provider",), f"one of {', '.join(PROVIDERS)}"))
    branches_raw = data.get("branches") or ["main"]
    if not isinstance(branches_raw, list) or not all(
        isinstance(b, str) and b.strip() and len(b) <= 255 for b in branches_raw
    ):
        problems.append(Problem(("branches",), "a list of branch names or globs (release/*)"))
        branches_raw = []
    elif len(branches_raw) > MAX_BRANCH_PATTERNS:
        problems.append(Problem(("branches",), f"at most {MAX_BRANCH_PATTERNS}"))
    repository = str(data.get("repository") or "").strip()
    if len(repository) > 400:
        problems.append(Problem(("repository",), "at most 400 characters"))
    repo_path = str(data.get("repo_path") or "").strip()
    if len(repo_path) > 2000:
        problems.append(Problem(("repo_path",), "at most 2000 characters"))
    run_as = str(data.get("run_as") or "").strip()
    if not run_as:
        problems.append(
            Problem(("run_as",), "the service account the pushes act as (its roles decide)")
        )
    secret = data.get("secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET):
        problems.append(
            Problem(("secret",), f"at least {MIN_SECRET} characters, or leave it out for one made")
        )
    if problems:
        raise ValidationFailed(problems)
    return SourceSpec(
        name, provider, repository, tuple(b.strip() for b in branches_raw), repo_path, run_as
    )
