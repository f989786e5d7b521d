"""The notification endpoints: subscriptions as documents, deliveries, and preferences."""

from __future__ import annotations

import httpx

from tests.api.conftest import ClientFor, UserFactory


async def test_subscriptions_are_documents_without_their_secret(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/subscriptions",
        json={
            "name": "Chat",
            "webhook": {"url": "https://chat.example/h", "secret": "never-shown"},
            "categories": ["DeploymentFailed"],
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"].startswith("Subscriptions-")
    read = (await client.get("/subscriptions/chat")).json()
    assert read["webhook"] == {"url": "https://chat.example/h"}
    assert "never-shown" not in (await client.get("/subscriptions")).text
    bad = await client.post("/subscriptions", json={"name": "Nobody", "categories": ["Nope"]})
    assert bad.status_code == 422
    assert {p["path"] for p in bad.json()["problems"]} == {
        "subscriptions[Nobody]",
        "subscriptions[Nobody].categories[0]",
    }


async def test_deliveries_need_subscription_view(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    assert (await client.get("/deliveries")).json() == []
    assert (await client.get("/deliveries?state=sideways")).status_code == 422
    viewer = client_for(await user_with("viewer", roles=[{"role": "Project Viewer"}]))
    assert (await viewer.get("/deliveries")).status_code == 403
    auditor = client_for(await user_with("aud", roles=[{"role": "Auditor"}]))
    assert (await auditor.get("/deliveries")).status_code == 200


async def test_a_person_sets_their_own_preference_only(
    client: httpx.AsyncClient, client_for: ClientFor, user_with: UserFactory
) -> None:
    dana = client_for(await user_with("dana"))
    await user_with("eve")
    assert (await dana.get("/users/dana/preferences")).json() == {
        "username": "dana",
        "notify_interruptions": True,
    }
    changed = await dana.put("/users/dana/preferences", json={"notify_interruptions": False})
    assert changed.status_code == 200 and changed.json()["notify_interruptions"] is False
    assert (
        await dana.put("/users/eve/preferences", json={"notify_interruptions": False})
    ).status_code == 403
    assert (await dana.put("/users/dana/preferences", json={"colour": "red"})).status_code == 422
    # The user document shows it; an administrator may set anyone's.
    assert (await client.get("/users/dana")).json()["notify_interruptions"] is False
    again = await client.put("/users/dana/preferences", json={"notify_interruptions": True})
    assert again.json()["notify_interruptions"] is True
