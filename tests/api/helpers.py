"""Assertions and look-ups shared by the API tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from conveyor.services.core import Services
from conveyor.store import tables as t

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["message"]
    return body


async def events(services: Services, *categories: str) -> list[Any]:
    async with services.read() as session:
        query = select(t.events).order_by(t.events.c.id)
        if categories:
            query = query.where(t.events.c.category.in_(categories))
        return list((await session.execute(query)).all())


def row_text(row: Any) -> str:
    return json.dumps({k: v for k, v in row._mapping.items()}, default=str)
