"""A person's own preferences: set by themselves, or by someone with UserEdit.

Stored on the user document (so config as code shows them) and changed through
``change_config`` (so the change is validated and audited like any other). Changing one's own
preference needs no UserEdit: the change is limited to that one field of one's own user.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from conveyor.domain import permissions as perms
from conveyor.domain.documents import User, key
from conveyor.domain.errors import NotFound, PermissionDenied, Problem, ValidationFailed
from conveyor.domain.model import Model
from conveyor.services.config import change_config, load
from conveyor.services.core import Caller, Services

FIELDS = ("notify_interruptions",)


def _view(user: User) -> dict[str, Any]:
    return {"username": user.username, "notify_interruptions": user.notify_interruptions}


async def get_preferences(services: Services, caller: Caller, username: str) -> dict[str, Any]:
    user = (await load(services)).model.get("users", username)
    if user is None:
        raise NotFound(f'user "{username}" does not exist')
    if key(caller.username) != key(user.username):
        decision = perms.authorize(caller.principal, perms.Permission.UserView)
        if not decision.allowed:
            raise PermissionDenied(decision.reason, permission="UserView")
    return _view(user)


async def set_preferences(
    services: Services, caller: Caller, username: str, data: Any
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed(Problem((), "expected a mapping like {notify_interruptions: false}"))
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise ValidationFailed(
            [Problem((k,), f"is not a preference (one of: {', '.join(FIELDS)})") for k in unknown]
        )
    value = data.get("notify_interruptions")
    if value is not None and not isinstance(value, bool):
        raise ValidationFailed(Problem(("notify_interruptions",), "must be true or false"))
    acting = caller
    if key(caller.username) == key(username) and not caller.is_system:
        # One's own preference: a grant of UserEdit that this one change below can use only.
        own = perms.Grant(
            "(own preferences)", "(own preferences)", frozenset({perms.Permission.UserEdit})
        )
        principal = caller.principal
        acting = replace(caller, principal=replace(principal, grants=(*principal.grants, own)))

    def mutate(model: Model) -> Model:
        user = model.get("users", username)
        if user is None:
            raise NotFound(f'user "{username}" does not exist')
        if value is None:
            return model
        return model.with_doc("users", replace(user, notify_interruptions=value))

    # Setting a preference to what it is still needs the right to set it.
    await change_config(services, acting, mutate, edits=(("users", username, "document"),))
    return await get_preferences(services, caller, username)
