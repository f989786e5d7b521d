"""Who a notification step mails: active members of its teams, its users, its addresses."""

from __future__ import annotations

from conveyor.domain.documents import NotificationAction, key
from conveyor.domain.model import Model


def recipients(model: Model, action: NotificationAction) -> list[str]:
    """Addresses, each once: active members of the teams (less those who opted out of team
    mail), the users, and the plain addresses."""
    out: dict[str, str] = {}
    teams = {key(name) for name in action.to_teams}
    for team in model.teams:
        if key(team.name) not in teams:
            continue
        for member in team.members:
            user = model.get("users", member)
            if user is not None and user.active and user.email and user.notify_interruptions:
                out.setdefault(user.email.lower(), user.email)
    for name in action.to_users:
        user = model.get("users", name)
        if user is not None and user.active and user.email:
            out.setdefault(user.email.lower(), user.email)
    for address in action.to_addresses:
        out.setdefault(address.lower(), address)
    return list(out.values())
