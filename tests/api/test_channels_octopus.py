"""A project's channels through the Octopus API and the browser, on both databases: each
channel has its own id (``Channels-<project>`` for "Default", ``Channels-<project>-<slug>``
for another), listed per project and for the space; releases and deployments carry their real
channel's id; create-release takes a ``ChannelId``; the dashboard, release page and project
page follow a hotfix release's own lifecycle (Patch -> Prod)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import set_password
from tests.api.test_octopus_api import assert_octopus_error
from tests.api.test_web import PASSWORD, browser, sign_in
from tests.integration.test_channel_lifecycles import CONFIG, succeed


async def test_each_channel_has_its_id_and_its_lifecycle_in_the_octopus_api(
    services: Services, admin: Caller, client: httpx.AsyncClient, app: FastAPI
) -> None:
    await apply_text(services, admin, CONFIG)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://conveyor.test",
        headers={"X-Octopus-ApiKey": client.headers["X-Api-Key"]},
    ) as octo:
        [web] = (await octo.get("/api/Spaces-1/projects?partialName=Web")).json()["Items"]
        number = web["Id"].removeprefix("Projects-")
        main, hotfix = f"Channels-{number}-main", f"Channels-{number}-hotfix"
        [express] = (await octo.get("/api/Spaces-1/lifecycles?partialName=Express")).json()["Items"]

        listed = await octo.get(f"/api/Spaces-1/projects/{web['Id']}/channels")
        assert listed.status_code == 200, listed.text
        assert listed.json()["ItemType"] == "Channel"
        assert [
            (c["Id"], c["Name"], c["IsDefault"], c["LifecycleId"], c["ProjectId"])
            for c in listed.json()["Items"]
        ] == [
            (main, "Main", True, None, web["Id"]),  # None: the project's lifecycle
            (hotfix, "Hotfix", False, express["Id"], web["Id"]),
        ]
        everywhere = (await octo.get("/api/Spaces-1/channels?partialName=hot")).json()
        assert [c["Id"] for c in everywhere["Items"]] == [hotfix]
        one = await octo.get(f"/api/Spaces-1/channels/{hotfix}")
        assert one.status_code == 200 and one.json()["Name"] == "Hotfix"
        # The id every project's one channel had: still its default channel.
        legacy = await octo.get(f"/api/Spaces-1/channels/Channels-{number}")
        assert legacy.status_code == 200 and legacy.json()["Id"] == main
        assert_octopus_error(
            await octo.get(f"/api/Spaces-1/channels/Channels-{number}-nightly"),
            404,
            "does not exist",
        )
        assert_octopus_error(
            await octo.get("/api/Spaces-1/projects/Projects-999/channels"), 404, "does not exist"
        )

        # Create-release: a ChannelId chooses the channel; the release carries its id.
        create = "/api/Spaces-1/releases/create/v1"
        made = await octo.post(
            create, json={"ProjectName": "Web", "ReleaseVersion": "1.0.1", "ChannelId": hotfix}
        )
        assert made.status_code == 201, made.text
        normal = await octo.post(create, json={"ProjectName": "Web", "ReleaseVersion": "1.0.0"})
        assert normal.status_code == 201, normal.text
        release = (await octo.get(f"/api/Spaces-1/releases/{made.json()['ReleaseId']}")).json()
        assert (release["Version"], release["ChannelId"]) == ("1.0.1", hotfix)
        other = (await octo.get(f"/api/Spaces-1/releases/{normal.json()['ReleaseId']}")).json()
        assert other["ChannelId"] == main
        of_hotfix = (await octo.get(f"/api/Spaces-1/channels/{hotfix}/releases")).json()
        assert [r["Version"] for r in of_hotfix["Items"]] == ["1.0.1"]
        # searchByVersion (what the Octopus clients send to find a release): any case, a part.
        of_web = f"/api/Spaces-1/projects/{web['Id']}/releases"
        found = (await octo.get(of_web, params={"searchByVersion": ".0.1"})).json()
        assert [r["Version"] for r in found["Items"]] == ["1.0.1"]
        both = (await octo.get(of_web, params={"searchByVersion": "1.0"})).json()
        assert sorted(r["Version"] for r in both["Items"]) == ["1.0.0", "1.0.1"]
        none = await octo.get(f"/api/Spaces-1/channels/{main}/releases?searchByVersion=1.0.1")
        assert none.json()["Items"] == []
        conflict = await octo.post(
            create,
            json={
                "ProjectName": "Web",
                "ReleaseVersion": "1.0.2",
                "ChannelName": "Main",
                "ChannelId": hotfix,
            },
        )
        assert_octopus_error(conflict, 400, 'names channel "Hotfix" but ChannelName names "Main"')
        unknown = await octo.post(
            create, json={"ProjectName": "Web", "ChannelId": f"Channels-{number}-nightly"}
        )
        assert_octopus_error(unknown, 400, f'"Hotfix" ({hotfix})')

        # A deployment carries its release's channel, and the list filters by channel.
        deploy = "/api/Spaces-1/deployments/create/untenanted/v1"
        sent = await octo.post(
            deploy,
            json={"ProjectName": "Web", "ReleaseVersion": "1.0.1", "EnvironmentNames": ["Patch"]},
        )
        assert sent.status_code == 201, sent.text
        [task] = sent.json()["DeploymentServerTasks"]
        shown = (await octo.get(f"/api/Spaces-1/deployments/{task['DeploymentId']}")).json()
        assert shown["ChannelId"] == hotfix
        await octo.post(
            deploy,
            json={"ProjectName": "Web", "ReleaseVersion": "1.0.0", "EnvironmentNames": ["Dev"]},
        )
        by_channel = (await octo.get(f"/api/Spaces-1/deployments?channels={hotfix}")).json()
        assert [d["Id"] for d in by_channel["Items"]] == [task["DeploymentId"]]


async def test_the_pages_follow_a_hotfix_release_lifecycle(
    services: Services, admin: Caller, app: FastAPI
) -> None:
    from conveyor.services import releases

    await apply_text(services, admin, CONFIG)
    await releases.create_release(services, admin, "Web", version="1.0.0")
    await releases.create_release(services, admin, "Web", version="1.0.1", channel="Hotfix")
    await succeed(services, admin, "1.0.1", "Patch")
    await succeed(services, admin, "1.0.0", "Dev")
    await set_password(services, system_caller(), "admin", PASSWORD)
    async with browser(app) as web:
        assert (await sign_in(web, "admin")).status_code == 303
        board = await web.get("/dashboard/board")
        assert board.status_code == 200
        # Web's row and its channel lines: each release promoted in its channel's lifecycle.
        hotfix_promote = 'href="/projects/web/releases/1.0.1/deploy?to=Prod">Promote to Prod'
        main_promote = 'href="/projects/web/releases/1.0.0/deploy?to=Test">Promote to Test'
        assert board.text.count(hotfix_promote) == 2  # the Patch cell of the row and of Hotfix
        assert board.text.count(main_promote) == 2  # the Dev cell of the row and of Main
        assert "1.0.1/deploy?to=Test" not in board.text
        page = await web.get("/projects/web/releases/1.0.1")
        assert page.status_code == 200
        assert "Review and approve for Patch" in page.text
        main = await web.get("/projects/web/releases/1.0.0")
        assert "Review and approve for Patch" not in main.text
        project = await web.get("/projects/web")
        assert '<th scope="col">Patch</th>' in project.text
        assert 'data-channel="Hotfix"' in project.text
        assert "<dt>Channel Hotfix</dt><dd>lifecycle Express</dd>" in project.text
        lifecycles = (await web.get("/lifecycles")).text
        express = lifecycles[lifecycles.index('id="lifecycle-express"') :]
        express = express[: express.index("</section>")]
        assert '<a href="/projects/web">Web</a>' in express  # through its Hotfix channel
