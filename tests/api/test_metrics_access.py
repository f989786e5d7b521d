"""Who may read /metrics: the addresses in CONVEYOR_METRICS_NETWORKS (loopback by default, judged
after trusted proxies), or a bearer token when one is set."""

from __future__ import annotations

import httpx

from conveyor.api.app import create_app
from conveyor.services.core import Services
from conveyor.settings import Settings


async def _get(settings: Settings, services: Services, **headers: str) -> httpx.Response:
    app = create_app(settings, services)
    transport = httpx.ASGITransport(app=app)  # the client is 127.0.0.1
    async with httpx.AsyncClient(transport=transport, base_url="http://conveyor.test") as c:
        return await c.get("/metrics", headers=headers)


async def test_open_to_loopback_by_default(settings: Settings, services: Services) -> None:
    found = await _get(settings, services)
    assert found.status_code == 200, found.text
    assert "conveyor_tasks" in found.text and "conveyor_build_info" in found.text


async def test_other_networks_need_to_be_listed_or_the_token(
    settings: Settings, services: Services
) -> None:
    behind_proxy = settings.model_copy(
        update={"trusted_proxies": ["127.0.0.1"], "metrics_networks": ["10.0.0.0/8"]}
    )
    listed = await _get(behind_proxy, services, **{"X-Forwarded-For": "10.1.2.3"})
    assert listed.status_code == 200
    outside = await _get(behind_proxy, services, **{"X-Forwarded-For": "192.0.2.7"})
    assert outside.status_code == 403 and "192.0.2.7" in outside.json()["message"]

    with_token = behind_proxy.model_copy(update={"metrics_token": "s3cret-token-value"})
    fine = await _get(
        with_token,
        services,
        **{"X-Forwarded-For": "192.0.2.7", "Authorization": "Bearer s3cret-token-value"},
    )
    assert fine.status_code == 200
    wrong = await _get(with_token, services, Authorization="Bearer guess")
    assert wrong.status_code == 401
