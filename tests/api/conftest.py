"""API fixtures: an ``httpx.AsyncClient`` speaking to the app in process, on both databases.

With ``ASGITransport`` the app's lifespan does not run; ``create_app`` takes the test's
``services`` and puts them on ``app.state`` itself. Errors the app does not map to a response
are raised in the test (``raise_app_exceptions``), so a would-be 500 fails loudly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conveyor.api.app import create_app
from conveyor.domain.codec import decode
from conveyor.domain.errors import Problem
from conveyor.domain.model import Kind, Model
from conveyor.services import documents as docs
from conveyor.services.config import change_config
from conveyor.services.core import Services, system_caller
from conveyor.services.users import add_user, create_api_key
from conveyor.settings import Settings

BASE_URL = "http://conveyor.test/api/v1"

ClientFor = Callable[[str | None], httpx.AsyncClient]


@pytest.fixture
def app(settings: Settings, services: Services) -> FastAPI:
    return create_app(settings, services)


@pytest.fixture
async def admin_key(services: Services) -> str:
    return await create_api_key(services, system_caller(), "admin", "test")


@pytest.fixture
async def client_for(app: FastAPI) -> AsyncIterator[ClientFor]:
    """Clients that send the given API key (or none); closed at the end of the test."""
    opened: list[httpx.AsyncClient] = []

    def make(api_key: str | None) -> httpx.AsyncClient:
        headers = {"X-Api-Key": api_key} if api_key is not None else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
        )
        opened.append(client)
        return client

    try:
        yield make
    finally:
        for client in opened:
            await client.aclose()


@pytest.fixture
def client(client_for: ClientFor, admin_key: str) -> httpx.AsyncClient:
    """Signed in as the administrator."""
    return client_for(admin_key)


@pytest.fixture
def anonymous(client_for: ClientFor) -> httpx.AsyncClient:
    return client_for(None)


UserFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def user_with(services: Services) -> UserFactory:
    """``await user_with("dev", roles=[{"role": "Project Viewer"}])`` -> the user's API key.

    Creates the user and, when roles are given, a team of its own holding them.
    """

    async def make(username: str, roles: list[dict[str, Any]] | None = None) -> str:
        await add_user(services, system_caller(), username)
        if roles:
            await docs.create_document(
                services,
                system_caller(),
                "teams",
                {"name": f"{username} team", "members": [username], "roles": roles},
            )
        return await create_api_key(services, system_caller(), username, "test")

    return make


SHOP: dict[Kind, list[dict[str, Any]]] = {
    "environments": [{"name": "Dev"}, {"name": "Test"}, {"name": "Prod"}],
    "lifecycles": [
        {
            "name": "Main",
            "phases": [
                {"name": "Dev", "environments": ["Dev"]},
                {"name": "Test", "environments": ["Test"]},
                {"name": "Prod", "environments": ["Prod"]},
            ],
        }
    ],
    "project_groups": [{"name": "Shop"}],
    "projects": [
        {"name": "Web", "group": "Shop", "lifecycle": "Main"},
        {"name": "Database", "group": "Shop", "lifecycle": "Main"},
    ],
}


@pytest.fixture
async def shop(services: Services) -> None:
    """A small configuration, written in one change: three environments, a lifecycle, a group
    and two projects."""
    problems: list[Problem] = []
    wanted = [
        (kind, decode(kind, data, (kind, i), problems))
        for kind, items in SHOP.items()
        for i, data in enumerate(items)
    ]
    assert not problems, problems

    def mutate(model: Model) -> Model:
        for kind, doc in wanted:
            assert doc is not None
            model = model.with_doc(kind, doc)
        return model

    await change_config(services, system_caller(), mutate)
