"""The outbox: the notifications events cause, written in the transaction that writes the events.

``core.write_event`` hands over the events it appends. Subscriptions are read once per call (one
call per transaction) and tested on category first, so a transaction whose events nobody wants
costs one small query. For what matches, names, people and their permissions are loaded, and one
row per message is inserted: a mail per recipient (each told only of what they may view), a POST
per webhook, a call per member of an interruption's responsible teams. The engine sends them
(``conveyor.engine.delivery``); the rows are the durable promise that survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain import subscriptions as rules
from conveyor.domain.audit import Category, EventRecord
from conveyor.domain.codec import decode
from conveyor.domain.documents import Subscription, Team, User, UserRole, key
from conveyor.domain.errors import Problem
from conveyor.domain.interruptions import Kind
from conveyor.services import model_cache
from conveyor.store import tables as t
from conveyor.store.documents import Sealed, without_cipher

if TYPE_CHECKING:
    from conveyor.services.core import Services


@dataclass(frozen=True)
class _Sub:
    doc: Subscription
    # The webhook's secret as stored (encrypted): copied into the row, never decrypted here.
    cipher: str | None


def _is_call(event: EventRecord) -> bool:
    return (
        event.category == Category.INTERRUPTION_RAISED
        and event.details.get("kind") == Kind.MANUAL_INTERVENTION.value
        and bool(event.details.get("responsible_teams"))
    )


async def enqueue(
    session: AsyncSession,
    services: Services,
    events: list[EventRecord],
    revision: int | None = None,
) -> int:
    """Insert the deliveries ``events`` cause; returns how many. With the configuration
    ``revision`` the transaction read, the subscriptions come from this node's cached model when
    it holds that revision (a query less on every audited write)."""
    subs = _cached_subscriptions(services, revision)
    if subs is None:
        subs = await _subscriptions(session)
    wanted = [(e, [s for s in subs if rules.wants(s.doc, e.category)]) for e in events]
    wanted = [(e, matched) for e, matched in wanted if matched]
    calls = [e for e in events if _is_call(e)]
    if not wanted and not calls:
        return 0
    people = await _People.load(session, services, events)
    rows: list[dict[str, Any]] = []
    for event, matched in wanted:
        facts = people.facts(event)
        for sub in matched:
            if rules.matches(sub.doc, facts):
                rows += people.for_subscription(sub, facts)
    for event in calls:
        rows += people.for_call(people.facts(event))
    if rows:
        now = services.clock()
        for row in rows:
            row.update(state="pending", attempts=0, next_attempt_at=now, created_at=now)
        await session.execute(insert(t.deliveries), rows)
    return len(rows)


def _cached_subscriptions(services: Services, revision: int | None) -> list[_Sub] | None:
    snapshot = model_cache.cached(services, revision) if revision is not None else None
    if snapshot is None:
        return None
    out = []
    for doc in snapshot.loaded.model.subscriptions:
        secret = doc.webhook.secret if doc.webhook is not None else None
        out.append(_Sub(doc, str(secret) if isinstance(secret, Sealed) else None))
    return out


async def _subscriptions(session: AsyncSession) -> list[_Sub]:
    out: list[_Sub] = []
    for row in (
        await session.execute(select(t.subscriptions.c.name, t.subscriptions.c.body))
    ).all():
        body, cipher = without_cipher(row.body)
        problems: list[Problem] = []
        doc = decode("subscriptions", body, ("subscriptions", row.name), problems)
        if isinstance(doc, Subscription):
            out.append(_Sub(doc, cipher))
    return out


@dataclass
class _People:
    """What matching and addressing need, loaded once per transaction and only when needed."""

    services: Services
    projects: dict[int, perms.ProjectRef] = field(default_factory=dict)
    environments: dict[int, str] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    teams: list[Team] = field(default_factory=list)
    roles: dict[str, UserRole] = field(default_factory=dict)

    @classmethod
    async def load(
        cls, session: AsyncSession, services: Services, events: list[EventRecord]
    ) -> _People:
        from conveyor.services.access import load_access  # access imports core, core imports us

        people = cls(services)
        project_ids = {e.project_id for e in events if e.project_id is not None}
        env_ids = {e.environment_id for e in events if e.environment_id is not None}
        if project_ids:
            query = select(t.projects.c.id, t.projects.c.name, t.projects.c.body)
            for row in (await session.execute(query.where(t.projects.c.id.in_(project_ids)))).all():
                group = row.body.get("group", "") if isinstance(row.body, dict) else ""
                people.projects[row.id] = perms.ProjectRef(row.name, str(group))
        if env_ids:
            envs = select(t.environments.c.id, t.environments.c.name)
            for env in (await session.execute(envs.where(t.environments.c.id.in_(env_ids)))).all():
                people.environments[env.id] = env.name
        if services.settings.smtp_host:
            for row in (await session.execute(select(t.users))).all():
                people.users[key(row.username)] = User(
                    username=row.username,
                    email=row.email,
                    active=row.active,
                    notify_interruptions=row.notify_interruptions,
                )
            teams, people.roles = await load_access(session)
            people.teams = list(teams)
        return people

    def facts(self, event: EventRecord) -> rules.EventFacts:
        return rules.EventFacts(
            id=event.id,
            category=event.category,
            message=event.message,
            occurred_at=event.occurred_at,
            actor=event.actor,
            on_behalf_of=event.on_behalf_of,
            project=self.projects.get(event.project_id) if event.project_id else None,
            environment=self.environments.get(event.environment_id)
            if event.environment_id
            else None,
            documents=tuple(event.documents),
            details=event.details,
        )

    @property
    def base_url(self) -> str:
        return self.services.settings.base_url

    def _principal(self, user: User) -> perms.Principal:
        return perms.principal_for(user.username, user.active, self.teams, self.roles)

    def _reachable(self, username: str, *, team_mail: bool) -> User | None:
        """A person mail may go to: active, with an address, and (for mail addressed to one of
        their teams) not opted out. No mail at all unless SMTP is configured."""
        user = self.users.get(key(username))
        if user is None or not user.active or not user.email:
            return None
        if team_mail and not user.notify_interruptions:
            return None
        return user

    def _members(self, team_name: str) -> list[str]:
        team = next((tm for tm in self.teams if key(tm.name) == key(team_name)), None)
        return list(team.members) if team else []

    def for_subscription(self, sub: _Sub, event: rules.EventFacts) -> list[dict[str, Any]]:
        doc = sub.doc
        common = {"event_id": event.id, "reason": "subscription", "subscription": doc.name}
        if doc.webhook is not None:
            body = rules.body_bytes(rules.event_webhook(event, self.base_url, doc.name))
            payload = {
                "body": body.decode(),
                "headers": [list(h) for h in doc.webhook.headers],
                "cipher": sub.cipher,
            }
            hook = {"channel": "webhook", "recipient": None, "target": doc.webhook.url}
            return [{**common, **hook, "payload": payload}]
        names = self._members(doc.team) if doc.team else [doc.user]
        subject, body_text = rules.event_mail(event, self.base_url, doc.name)
        rows = []
        for name in dict.fromkeys(key(n) for n in names):
            user = self._reachable(name, team_mail=bool(doc.team))
            # Each person hears only of what the audit log would show them.
            if user is None or not rules.may_view_event(
                self._principal(user), event.project, event.environment
            ):
                continue
            rows.append(_mail(common, user, subject, body_text))
        return rows

    def for_call(self, event: rules.EventFacts) -> list[dict[str, Any]]:
        teams = [str(name) for name in event.details.get("responsible_teams") or ()]
        common = {"event_id": event.id, "reason": "interruption", "subscription": None}
        subject, body_text = rules.call_mail(event, self.base_url, teams)
        rows = []
        seen: set[str] = set()
        for team in teams:
            for name in self._members(team):
                user = self._reachable(name, team_mail=True)
                if user is None or key(name) in seen:
                    continue
                seen.add(key(name))
                allowed = perms.authorize(
                    self._principal(user),
                    perms.Permission.InterruptionView,
                    project=event.project,
                    environment=event.environment,
                ).allowed
                if allowed:
                    rows.append(_mail(common, user, subject, body_text))
        return rows


def _mail(common: dict[str, Any], user: User, subject: str, body: str) -> dict[str, Any]:
    return {
        **common,
        "channel": "email",
        "recipient": user.username,
        "target": user.email,
        "payload": {"subject": subject, "body": body},
    }
