"""Channels in the browser and the API, in process, on both databases: the new-release form
offers the channels and "the highest the channel allows"; posting a channel creates the release
there (or says which rule failed); the release page names its channel; the dashboard has a
release line per channel; the API's ``channel`` and its 422 naming channel, package, version
and rule."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from conveyor.services import deployments
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import set_password
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.integration.test_channels import CONFIG, _push


async def test_channels_in_the_browser_and_the_api(
    services: Services, admin: Caller, client: httpx.AsyncClient, app: FastAPI, tmp_path: Path
) -> None:
    await apply_text(services, admin, CONFIG)
    for version in ("1.4.3", "1.9.0", "2.0.0-beta.1"):
        await _push(services, admin, tmp_path, version)
    await set_password(services, system_caller(), "admin", PASSWORD)

    # The API: the channel chosen by the rules, or given and checked.
    made = await client.post("/projects/Web/releases", json={"version": "1.9.0"})
    assert made.status_code == 201, made.text
    assert made.json()["channel"] == "Main"
    refused = await client.post(
        "/projects/Web/releases",
        json={"version": "1.4.9", "channel": "Hotfix", "packages": {"Web": "1.9.0"}},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["problems"] == [
        {
            "path": "channel",
            "message": 'channel "Hotfix": Web 1.9.0 does not satisfy its rule '
            "range [1.4,1.5) and tag ^$",
        }
    ]

    async with browser(app) as web:
        assert (await sign_in(web, "admin")).status_code == 303
        form = await web.get("/projects/web/releases/new")
        assert form.status_code == 200, form.text
        assert '<select id="release-channel" name="channel"' in form.text
        assert '<option value="Main">Main (default)</option>' in form.text
        assert '<option value="" selected>The highest the channel allows</option>' in form.text
        created = await web.post(
            "/projects/web/releases/new",
            data={"csrf": form_token(form), "version": "1.4.3", "channel": "Hotfix", "package": ""},
        )
        assert created.status_code == 303, created.text
        page = await web.get(created.headers["location"])
        assert "Channel Hotfix (lifecycle Fast)" in page.text
        wrong = await web.post(
            "/projects/web/releases/new",
            data={
                "csrf": form_token(form),
                "version": "1.4.4",
                "channel": "Hotfix",
                "package": "Web:1.9.0",
            },
        )
        assert wrong.status_code == 422
        assert "Web 1.9.0 does not satisfy its rule range [1.4,1.5)" in wrong.text

        await deployments.deploy(services, admin, "Web", "1.9.0", "Dev")
        await deployments.deploy(services, admin, "Web", "1.4.3", "Test")
        board = await web.get("/dashboard/board")
        assert board.status_code == 200
        assert board.text.count('class="channel-line"') == 5  # Web: 3 channels, All: 2
        assert "channel Hotfix" in board.text

    # The Octopus API: ChannelName chooses (its rules checked); IgnoreChannelRules is refused.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://conveyor.test",
        headers={"X-Octopus-ApiKey": client.headers["X-Api-Key"]},
    ) as octo:
        create = "/api/Spaces-1/releases/create/v1"
        body = {"ProjectName": "Web", "ChannelName": "Hotfix", "ReleaseVersion": "1.4.5"}
        ignored = await octo.post(create, json={**body, "IgnoreChannelRules": True})
        assert ignored.status_code == 400 and "IgnoreChannelRules" in ignored.text
        beta = await octo.post(create, json={**body, "PackageVersion": "2.0.0-beta.1"})
        assert beta.status_code == 400, beta.text
        assert "does not satisfy its rule range [1.4,1.5)" in beta.text

    api_board = (await client.get("/dashboard")).json()
    hotfix = next(
        line
        for line in api_board["channels"]
        if (line["project"], line["channel"]) == ("Web", "Hotfix")
    )
    assert [(c["environment"], c["release"]) for c in hotfix["cells"]] == [("Test", "1.4.3")]
