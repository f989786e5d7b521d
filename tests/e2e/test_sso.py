"""Single sign-on against a real OpenID provider (the npm package oidc-provider, run with node),
and CI tokens exchanged by the real `conveyor login --oidc-token`, on a real server process.

The provider is driven as a browser would be: httpx follows the redirects and submits the
provider's login form. Refusals come from the same provider, with one claim of its ID token
changed and re-signed with its own key (tests/e2e/oidc/provider.mjs): a wrong issuer, an
expiry long past, another nonce; and a callback replayed. Each is refused with a page that
says so, and audited.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import loopback
from tests.e2e.axe import NPM_DIR
from tests.e2e.conftest import (
    START_TIMEOUT,
    describe,
    free_port,
    install,
    read_log,
    run_conveyor,
    start_conveyor,
    stop,
    wait_for_api,
)
from tests.oidc_issuer import Issuer, serve_issuer

pytestmark = pytest.mark.e2e

PROVIDER_SCRIPT = Path(__file__).with_name("oidc") / "provider.mjs"
CLIENT_SECRET = "a client secret only the server and the provider know"
CI_AUDIENCE = "conveyor-e2e"


def _require_provider() -> None:
    if (NPM_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    message = f"oidc-provider is not installed in {NPM_DIR} (npm ci tests/e2e/browser-checks)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Setup:
    url: str
    provider: str
    api_key: str
    admin_password: str
    env: dict[str, str]
    ci: Issuer
    log: Path


@pytest.fixture(scope="module")
def setup(e2e_database: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    _require_provider()
    tmp = tmp_path_factory.mktemp("sso")
    port, provider_port = free_port(), free_port()
    url, provider = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{provider_port}"
    args = [str(NPM_DIR), str(provider_port), url + "/sso/callback", CLIENT_SECRET]
    with (tmp / "provider.log").open("w") as provider_log:
        node = subprocess.Popen(
            ["node", str(PROVIDER_SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=provider_log,
            text=True,
        )
    try:
        assert node.stdout is not None
        assert node.stdout.readline().startswith("ready"), "the OpenID provider did not start"
        data_dir = tmp / "data"
        secrets = install(data_dir, e2e_database)
        env = {
            **({"CONVEYOR_DATABASE_URL": e2e_database} if e2e_database else {}),
            "CONVEYOR_DATA_DIR": str(data_dir),
            "CONVEYOR_PUBLIC_URL": url,
            "CONVEYOR_SSO_ISSUER": provider,
            "CONVEYOR_SSO_CLIENT_ID": "conveyor",
            "CONVEYOR_SSO_CLIENT_SECRET": CLIENT_SECRET,
            "CONVEYOR_SSO_SCOPES": "openid profile email groups",
            "CONVEYOR_SSO_NAME": "Test IdP",
            "CONVEYOR_PASSWORD_SIGN_IN": "false",
        }
        log = tmp / "server.log"
        proc = start_conveyor(["server", "--port", str(port)], env, tmp, log)
        try:
            wait_for_api(url, proc, log, START_TIMEOUT)
            with serve_issuer(free_port()) as ci:
                ci.new_key("ci-1")
                yield Setup(url, provider, secrets["api_key"], secrets["password"], env, ci, log)
        finally:
            stop(proc)
        assert "Traceback" not in read_log(log), read_log(log)
    finally:
        node.terminate()
        node.wait(timeout=10)


def api(setup: Setup, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-Api-Key": setup.api_key}
    return loopback.request(
        method, f"{setup.url}/api/v1{path}", headers=headers, timeout=30, **kwargs
    )


def events(setup: Setup, category: str) -> list[dict[str, Any]]:
    answer = api(setup, "GET", "/events", params={"category": category, "limit": 100})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    items: list[dict[str, Any]] = body["events"]
    return items


def sign_in(browser: httpx.Client, setup: Setup, login: str) -> httpx.Response:
    """Start at our sign-in button; fill in the provider's forms (login, consent) it shows."""
    page = browser.get(f"{setup.url}/sso/start", params={"next": "/projects"})
    for _ in range(3):
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        action = re.search(r'<form[^>]* action="([^"]+)"', page.text)
        if "prompt" not in hidden or action is None:
            break
        if hidden["prompt"] == "login":
            hidden |= {"login": login, "password": "any password will do"}
        page = browser.post(httpx.URL(str(page.url)).join(action.group(1)), data=hidden)
    return page


def tamper(setup: Setup, claim: str) -> None:
    answer = loopback.post(f"{setup.provider}/__test/tamper", params={"claim": claim}, timeout=10)
    assert answer.status_code == 200


def test_single_sign_on_with_a_real_provider(setup: Setup) -> None:
    made = api(
        setup,
        "POST",
        "/teams",
        json={
            "name": "Shop Devs",
            "sso_groups": ["shop-devs"],
            "roles": [{"role": "Project Viewer"}],
        },
    )
    assert made.status_code == 201, made.text

    with loopback.client(follow_redirects=True, timeout=30) as browser:
        # Password sign-in is off: the page offers the provider only.
        page = browser.get(f"{setup.url}/sign-in")
        assert "Sign in with Test IdP" in page.text
        assert 'name="password"' not in page.text

        landed = sign_in(browser, setup, "alice")
        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/projects"
        me = browser.get(f"{setup.url}/api/v1/me").json()
        assert me["username"] == "alice"
        callback = next(r for r in landed.history if r.url.path == "/sso/callback")

        # The same callback again (with the state cookie, as an attacker replaying it would).
        browser.cookies.set("conveyor_sso_state", callback.url.params["state"], path="/sso")
        replayed = browser.get(callback.url)
        assert replayed.status_code == 400
        assert "used already" in replayed.text

    team = api(setup, "GET", "/teams/shop-devs").json()
    assert "alice" in team["members"], team
    created = [e for e in events(setup, "UserCreated") if "alice" in e["message"]]
    assert created, "the first sign-in's user creation is audited"
    succeeded = [e for e in events(setup, "LoginSucceeded") if e["actor"] == "alice"]
    assert succeeded and succeeded[0]["details"]["method"] == "oidc"

    refusals = {"iss": "another issuer", "exp": "expired", "nonce": "does not answer our request"}
    try:
        for claim, words in refusals.items():
            tamper(setup, claim)
            with loopback.client(follow_redirects=True, timeout=30) as browser:
                refused = sign_in(browser, setup, "alice")
            assert refused.status_code == 401, (claim, refused.text)
            assert words in refused.text, claim
            assert "Sign-in refused" in refused.text
    finally:
        tamper(setup, "none")
    reasons = [e["details"].get("reason", "") for e in events(setup, "LoginFailed")]
    for words in ("replayed state", "wrong issuer", "ID token expired", "nonce"):
        assert any(words in r for r in reasons), (words, reasons)

    # Password sign-in is refused (and audited); API keys keep working.
    with loopback.client(timeout=30) as browser:
        browser.get(f"{setup.url}/sign-in")
        form = {"username": "admin", "password": setup.admin_password}
        form["csrf"] = browser.cookies["conveyor_form"]
        refused = browser.post(f"{setup.url}/sign-in", data=form)
    assert refused.status_code == 401
    assert "turned off" in refused.text
    assert api(setup, "GET", "/projects").status_code == 200


def test_conveyor_login_exchanges_a_ci_token(setup: Setup) -> None:
    ci = setup.ci
    account = {
        "username": "github-deploy",
        "service_account": True,
        "oidc_trust": [
            {
                "issuer": ci.url,
                "audience": CI_AUDIENCE,
                "claims": {"repository": "octo-org/shop", "environment": "prod*"},
            }
        ],
    }
    made = api(setup, "POST", "/users", json=account)
    assert made.status_code == 201, made.text
    claims = {"aud": CI_AUDIENCE, "sub": "repo:octo-org/shop", "repository": "octo-org/shop"}
    env = {"CONVEYOR_SERVER": setup.url}

    good = run_conveyor(
        (
            "login",
            "--oidc-token",
            ci.mint("ci-1", environment="production", **claims),
            "--output",
            "json",
        ),
        env,
    )
    assert good.returncode == 0, describe(good)
    answer = json.loads(good.stdout)
    assert set(answer) == {"token", "expires"}
    me = loopback.get(f"{setup.url}/api/v1/me", headers={"X-Api-Key": answer["token"]}, timeout=30)
    assert me.json()["username"] == "github-deploy"

    # Text output is the key alone, for CONVEYOR_API_KEY=$(conveyor login …); the token may come
    # from standard input.
    piped = run_conveyor(
        ("login", "--oidc-token", "-"), env, input=ci.mint("ci-1", environment="prod-eu", **claims)
    )
    assert piped.returncode == 0, describe(piped)
    assert piped.stdout.strip().startswith("API-") and "\n" not in piped.stdout.strip()

    mismatch = run_conveyor(
        ("login", "--oidc-token", ci.mint("ci-1", environment="staging", **claims)), env
    )
    assert mismatch.returncode == 3, describe(mismatch)
    assert "(environment) do not match" in mismatch.stderr
