"""Sign-in holds under attack, against a real `conveyor server`: parallel guesses are counted
before any password is checked, a guesser can lock out neither the account's owner nor the
people sharing a proxy, X-Forwarded-For is believed only from trusted proxies, and a password
changed through the API needs the current one and ends the user's web sessions."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.domain import throttling
from conveyor.domain.errors import Unauthenticated
from conveyor.domain.forwarding import client_address, trusted_networks
from conveyor.services import audit, sessions
from conveyor.services.audit import Filters
from conveyor.services.core import Services, system_caller
from conveyor.services.users import add_user
from tests import loopback
from tests.conftest import _fresh_pg_database, drop_pg_database_soon
from tests.e2e import conftest as e2e
from tests.e2e.conftest import (
    CONVEYOR,
    START_TIMEOUT,
    Server,
    clean_env,
    describe,
    free_port,
    read_log,
    run_conveyor,
    stop,
    wait_for_api,
)

pytestmark = pytest.mark.e2e

# The real server of the end-to-end tests, one per module and database.
e2e_database, server = e2e.e2e_database, e2e.server

PASSWORD = "correct horse battery staple"
GUESSES = 20
BAD_INPUT = 2


# ---------------------------------------------------------------- the servers


@pytest.fixture(scope="module")
def proxied(
    e2e_database: str | None,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """A server behind a reverse proxy on 127.0.0.1 (``trusted_proxies``): the test plays the
    proxy, so X-Forwarded-For says which address each request comes from."""
    tmp = tmp_path_factory.mktemp("proxied")
    env = {"CONVEYOR_DATA_DIR": str(tmp / "data")}
    if e2e_database:
        # A database of its own: the module's other server counts its attempts apart.
        env["CONVEYOR_DATABASE_URL"] = _fresh_pg_database(request.getfixturevalue("pg_database"))
    init = run_conveyor(("admin", "init", "--output", "json"), env, cwd=tmp)
    assert init.returncode == 0, describe(init)
    secrets = json.loads(init.stdout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(CONVEYOR), "server", "--port", str(port)],
            env=clean_env({**env, "CONVEYOR_TRUSTED_PROXIES": '["127.0.0.1"]'}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        wait_for_api(url, proc, log, START_TIMEOUT)
        yield Server(
            url=url,
            api_key=secrets["api_key"],
            admin_password=secrets["password"],
            data_dir=tmp / "data",
            log=log,
            database_url=env.get("CONVEYOR_DATABASE_URL"),
            tmp=tmp,
            proc=proc,
        )
    finally:
        stop(proc)
        if "CONVEYOR_DATABASE_URL" in env:
            drop_pg_database_soon(env["CONVEYOR_DATABASE_URL"])
    assert "Traceback" not in read_log(log), read_log(log)


# ---------------------------------------------------------------- helpers


def add_person(server: Server, username: str, password: str = PASSWORD) -> None:
    headers = {"X-Api-Key": server.api_key}
    made = loopback.post(
        f"{server.url}/api/v1/users", json={"username": username}, headers=headers, timeout=30
    )
    assert made.status_code == 201, made.text
    # An administrator sets another person's password: no current password needed.
    set_ = httpx.put(
        f"{server.url}/api/v1/users/{username}/password",
        json={"password": password},
        headers=headers,
        timeout=30,
    )
    assert set_.status_code == 204, set_.text


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in_form(server: Server) -> tuple[str, str]:
    """The sign-in page's form token and the cookie it belongs to."""
    page = loopback.get(f"{server.url}/sign-in", timeout=30)
    return form_token(page), page.cookies["conveyor_form"]


def attempts(server: Server, tries: list[tuple[str, str, str | None]]) -> list[httpx.Response]:
    """Sign-in attempts (username, password, X-Forwarded-For), all sent at the same moment."""
    token, cookie = sign_in_form(server)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(tries), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:

            async def one(username: str, password: str, forwarded: str | None) -> httpx.Response:
                headers = {"Cookie": f"conveyor_form={cookie}"}
                if forwarded:
                    headers["X-Forwarded-For"] = forwarded
                return await client.post(
                    "/sign-in",
                    data={"csrf": token, "username": username, "password": password},
                    headers=headers,
                )

            return list(await asyncio.gather(*(one(*attempt) for attempt in tries)))

    return asyncio.run(send_all())


def codes(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def login_failures(server: Server, username: str) -> Counter[str]:
    page = loopback.get(
        f"{server.url}/api/v1/events?category=LoginFailed&limit=500",
        headers={"X-Api-Key": server.api_key},
        timeout=30,
    ).json()
    return Counter(
        e["details"]["reason"] for e in page["events"] if e["details"]["username"] == username
    )


def signed_in_client(server: Server, username: str, password: str = PASSWORD) -> httpx.Client:
    client = loopback.client(base_url=server.url, timeout=30)
    token = form_token(client.get("/sign-in"))
    done = client.post("/sign-in", data={"csrf": token, "username": username, "password": password})
    assert done.status_code == 303, done.text
    assert client.get("/account").status_code == 200
    return client


def still_signed_in(client: httpx.Client) -> bool:
    page = client.get("/account")
    return page.status_code == 200


# ---------------------------------------------------------------- throttling


def test_twenty_parallel_wrong_passwords_get_five_checks(server: Server) -> None:
    add_person(server, "victim")
    responses = attempts(server, [("victim", f"guess {i}", None) for i in range(GUESSES)])
    limit = throttling.MAX_PER_NAME_FROM_ADDRESS
    assert codes(responses) == {401: limit, 429: GUESSES - limit}
    assert all(int(r.headers["retry-after"]) > 0 for r in responses if r.status_code == 429)
    # Only the five were checked; the rest were refused without looking at the password.
    assert login_failures(server, "victim") == {
        "wrong password": limit,
        "throttled": GUESSES - limit,
    }
    # Nor is the right password checked from this address now.
    [right] = attempts(server, [("victim", PASSWORD, None)])
    assert right.status_code == 429 and "Too many failed sign-ins" in right.text


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(server: Server) -> None:
    """A guesser who makes up a new address for every attempt is still one address."""
    add_person(server, "spoofed")
    responses = attempts(
        server, [("spoofed", f"guess {i}", f"198.18.0.{i}") for i in range(GUESSES)]
    )
    limit = throttling.MAX_PER_NAME_FROM_ADDRESS
    assert codes(responses) == {401: limit, 429: GUESSES - limit}


def test_a_guesser_cannot_lock_the_owner_out(proxied: Server) -> None:
    add_person(proxied, "owner")
    guesses = attempts(proxied, [("owner", f"guess {i}", "203.0.113.9") for i in range(GUESSES)])
    limit = throttling.MAX_PER_NAME_FROM_ADDRESS
    assert codes(guesses) == {401: limit, 429: GUESSES - limit}
    # The owner, from their own address, signs in; the guesser's address stays throttled.
    [owner] = attempts(proxied, [("owner", PASSWORD, "198.51.100.7")])
    assert owner.status_code == 303, owner.text
    [guesser] = attempts(proxied, [("owner", PASSWORD, "203.0.113.9")])
    assert guesser.status_code == 429


def test_one_address_cannot_lock_everyone_behind_the_proxy_out(proxied: Server) -> None:
    add_person(proxied, "bystander")
    limit = throttling.MAX_PER_ADDRESS
    # Spread over many names, so that only the address's own limit applies.
    guesses = attempts(
        proxied,
        [(f"name{i}", "guess", "192.0.2.66") for i in range(limit + 5)],
    )
    assert codes(guesses) == {401: limit, 429: 5}
    [from_the_attacker] = attempts(proxied, [("bystander", PASSWORD, "192.0.2.66")])
    assert from_the_attacker.status_code == 429
    # Everyone else reaches the server through the same proxy, and signs in.
    [bystander] = attempts(proxied, [("bystander", PASSWORD, "192.0.2.67")])
    assert bystander.status_code == 303, bystander.text
    # Through a chain, the right-most address the trusted proxy did not vouch for counts: what
    # the client itself wrote on the left is not believed.
    [chained] = attempts(proxied, [("bystander", PASSWORD, "10.9.9.9, 192.0.2.66")])
    assert chained.status_code == 429


async def test_guessing_one_name_from_many_addresses_is_capped(services: Services) -> None:
    """The name's own limit over every address: a distributed guesser gets MAX_PER_NAME."""
    await add_user(services, system_caller(), "target", password=PASSWORD)
    per = throttling.MAX_PER_NAME_FROM_ADDRESS
    for n in range(throttling.MAX_PER_NAME // per):
        for _ in range(per):
            with pytest.raises(Unauthenticated) as refused:
                await sessions.sign_in(services, "target", "guess", f"10.0.{n}.1")
            assert not isinstance(refused.value, sessions.SignInThrottled)
    with pytest.raises(sessions.SignInThrottled):
        await sessions.sign_in(services, "target", PASSWORD, "10.99.0.1")


async def test_a_throttled_guesser_is_recorded_only_so_often(services: Services) -> None:
    """Every sign-in refused unchecked is answered (throttled), but one address's are recorded
    at most MAX_RECORDED_REFUSALS times in the window, the last one saying so: hammering the
    form must not fill the audit log."""
    await add_user(services, system_caller(), "target", password=PASSWORD)
    for _ in range(throttling.MAX_PER_NAME_FROM_ADDRESS):
        with pytest.raises(Unauthenticated):
            await sessions.sign_in(services, "target", "guess", "10.7.0.1")
    for _ in range(throttling.MAX_RECORDED_REFUSALS + 10):
        with pytest.raises(sessions.SignInThrottled):
            await sessions.sign_in(services, "target", "guess", "10.7.0.1")
    page = await audit.list_events(
        services, system_caller(), Filters(categories=("LoginFailed",)), limit=500
    )
    unchecked = [e for e in page["events"] if e["details"].get("reason") == "throttled"]
    assert len(unchecked) == throttling.MAX_RECORDED_REFUSALS
    newest = unchecked[0]["message"]  # the list is newest first
    assert "further refusals from this address are not recorded for 5 minutes" in newest


def test_the_client_is_the_right_most_untrusted_hop() -> None:
    proxies = trusted_networks(["10.0.0.0/8", "::1"])
    assert client_address("10.0.0.5", ["203.0.113.1, 10.0.0.7"], proxies) == "203.0.113.1"
    # Whatever the client put first is ignored when a proxy appended the real address.
    assert client_address("10.0.0.5", ["1.1.1.1, 203.0.113.1"], proxies) == "203.0.113.1"
    # A peer that is no proxy of ours speaks for itself only.
    assert client_address("203.0.113.9", ["1.1.1.1"], proxies) == "203.0.113.9"
    # Several headers are one list.
    assert client_address("::1", ["198.51.100.1", "10.1.1.1"], proxies) == "198.51.100.1"
    assert client_address("10.0.0.5", [], proxies) == "10.0.0.5"
    # What is not an address was not written by a proxy: the hop to its right is the client.
    assert client_address("10.0.0.5", ["\x00evil, 10.0.0.9"], proxies) == "10.0.0.9"
    with pytest.raises(ValueError, match="not an address"):
        trusted_networks(["proxy.example"])


# ---------------------------------------------------------------- changing a password


def put_password(server: Server, username: str, api_key: str, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{server.url}/api/v1/users/{username}/password",
        json=body,
        headers={"X-Api-Key": api_key},
        timeout=60,
    )


def password_events(server: Server, username: str) -> list[dict[str, Any]]:
    user = loopback.get(
        f"{server.url}/api/v1/users/{username}",
        headers={"X-Api-Key": server.api_key},
        timeout=30,
    ).json()["id"]
    found: list[dict[str, Any]] = loopback.get(
        f"{server.url}/api/v1/events?category=PasswordChanged&document={user}",
        headers={"X-Api-Key": server.api_key},
        timeout=30,
    ).json()["events"]
    return found


def test_changing_ones_own_password_needs_the_current_one(proxied: Server) -> None:
    add_person(proxied, "carol")
    key = proxied.api_key_for("carol", in_process=True)
    browser = signed_in_client(proxied, "carol")
    before = len(password_events(proxied, "carol"))
    # A stolen key alone cannot take the account over.
    bare = put_password(proxied, "carol", key, password="taken over by mallory")
    assert bare.status_code == 422 and "current password" in bare.json()["message"]
    wrong = put_password(
        proxied, "carol", key, password="taken over by mallory", current_password="guess"
    )
    assert wrong.status_code == 422 and "current password is wrong" in wrong.json()["message"]
    assert still_signed_in(browser)
    assert len(password_events(proxied, "carol")) == before
    done = put_password(
        proxied, "carol", key, password="a brand new password", current_password=PASSWORD
    )
    assert done.status_code == 204, done.text
    # The web session (maybe the thief's) is over; the new password works.
    assert not still_signed_in(browser)
    signed_in_client(proxied, "carol", "a brand new password")
    changes = password_events(proxied, "carol")
    [event] = changes[: len(changes) - before]
    assert event["details"] == {"own": True, "sessions_ended": 1}
    text = json.dumps(event)
    assert "a brand new password" not in text and PASSWORD not in text


def test_guessing_the_current_password_is_throttled(proxied: Server) -> None:
    add_person(proxied, "dave")
    key = proxied.api_key_for("dave", in_process=True)
    refused = [
        put_password(proxied, "dave", key, password="whatever it is", current_password=f"g{i}")
        for i in range(throttling.MAX_PER_NAME_FROM_ADDRESS + 1)
    ]
    assert [r.status_code for r in refused[:-1]] == [422] * throttling.MAX_PER_NAME_FROM_ADDRESS
    assert refused[-1].status_code == 429 and int(refused[-1].headers["retry-after"]) > 0
    assert refused[-1].json()["code"] == "throttled"


def test_an_administrator_setting_a_password_ends_every_session(proxied: Server) -> None:
    add_person(proxied, "erin")
    first, second = signed_in_client(proxied, "erin"), signed_in_client(proxied, "erin")
    done = put_password(proxied, "erin", proxied.api_key, password="reset by the admin")
    assert done.status_code == 204, done.text
    assert not still_signed_in(first) and not still_signed_in(second)
    event = password_events(proxied, "erin")[0]
    assert event["actor"] == "admin" and event["details"] == {"own": False, "sessions_ended": 2}
    assert "reset by the admin" not in json.dumps(event)
    # Someone without UserEdit may not set another person's password.
    add_person(proxied, "frank")
    frank = proxied.api_key_for("frank", in_process=True)
    assert put_password(proxied, "erin", frank, password="frank was here!").status_code == 403


def test_admin_user_set_password_from_the_command_line(proxied: Server) -> None:
    add_person(proxied, "gina")
    browser = signed_in_client(proxied, "gina")
    missing = proxied.cli("admin", "user", "set-password", "gina")
    assert missing.returncode == BAD_INPUT and "--password-stdin" in missing.stderr
    assert "Traceback" not in missing.stderr
    short = proxied.cli("admin", "user", "set-password", "gina", "--password-stdin", input="x\n")
    assert short.returncode == BAD_INPUT and "at least" in short.stderr
    done = proxied.cli(
        "admin", "user", "set-password", "gina", "--password-stdin", input="set from the shell\n"
    )
    assert done.returncode == 0, describe(done)
    assert not still_signed_in(browser)
    signed_in_client(proxied, "gina", "set from the shell")
    event = password_events(proxied, "gina")[0]
    assert event["actor"] == "system" and event["details"]["sessions_ended"] == 1
