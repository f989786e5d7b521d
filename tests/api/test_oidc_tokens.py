"""CI without long-lived keys: a locally served JWKS, locally minted tokens, the real app.

Every mismatch is refused with a reason that names no rule and no secret, and is audited;
the one good token becomes a short-lived key that works against /api/v1 until it expires."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conveyor.domain.errors import ValidationFailed
from conveyor.domain.throttling import MAX_RECORDED_REFUSALS
from conveyor.services import documents as docs
from conveyor.services.core import Services, system_caller
from conveyor.store import tables as t
from tests.api.conftest import ClientFor
from tests.oidc_issuer import Issuer, serve_issuer
from tests.receivers import free_port

AUDIENCE = "https://conveyor.example.com"
REPO = "octo-org/octo-pet-shop"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with serve_issuer(free_port()) as served:
        served.new_key("k1")
        served.new_key("rogue", publish=False)
        yield served


def ci_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": AUDIENCE,
        "sub": f"repo:{REPO}:ref:refs/heads/main",
        "repository": REPO,
        "ref": "refs/heads/main",
        "environment": "production",
    }
    return claims | overrides


async def trusting_account(services: Services, issuer: Issuer) -> None:
    await docs.create_document(
        services,
        system_caller(),
        "users",
        {
            "username": "ci-deployer",
            "service_account": True,
            "oidc_trust": [
                {
                    "issuer": issuer.url,
                    "audience": AUDIENCE,
                    "claims": {"repository": REPO, "ref": "refs/heads/*"},
                    "minutes": 15,
                }
            ],
        },
    )
    await docs.create_document(
        services,
        system_caller(),
        "teams",
        {"name": "CI", "members": ["ci-deployer"], "roles": [{"role": "Project Viewer"}]},
    )


async def refusals(services: Services) -> list[dict[str, Any]]:
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.events.c.details, t.events.c.message)
                .where(t.events.c.category == "LoginFailed")
                .order_by(t.events.c.id)
            )
        ).all()
    return [dict(r.details) | {"message": r.message} for r in rows]


async def test_oidc_tokens_are_exchanged_only_when_everything_matches(
    services: Services, client_for: ClientFor, issuer: Issuer
) -> None:
    await trusting_account(services, issuer)
    anonymous = client_for(None)

    async def exchange(token: str) -> httpx.Response:
        return await anonymous.post("/oidc/token", json={"token": token})

    cases: list[tuple[str, str, int, str]] = [
        ("not a token", "not.a.jwt", 401, "not a well-formed signed JWT"),
        ("wrong signature", _resigned(issuer), 401, "signature does not verify"),
        ("unknown kid", issuer.mint("rogue", **ci_claims()), 401, "does not publish"),
        (
            "wrong iss",
            issuer.mint(issuer="https://token.actions.githubusercontent.com", **ci_claims()),
            401,
            "issuer is not trusted",
        ),
        ("wrong aud", issuer.mint(**ci_claims(aud="someone-else")), 401, "audience"),
        ("expired", issuer.mint(**ci_claims(exp=1_000_000_000)), 401, "expired"),
        ("not yet valid", issuer.mint(**ci_claims(nbf=4_000_000_000)), 401, "not valid yet"),
        (
            "claim mismatch",
            issuer.mint(**ci_claims(repository="someone/fork")),
            403,
            "(repository) do not match",
        ),
        ("glob mismatch", issuer.mint(**ci_claims(ref="refs/tags/v1")), 403, "(ref) do not match"),
    ]
    for name, token, status, words in cases:
        answer = await exchange(token)
        assert answer.status_code == status, (name, answer.text)
        assert words in answer.json()["message"], (name, answer.json())
        # Nothing of the rules or the keys travels back.
        assert REPO not in answer.text and "refs/heads" not in answer.text, name
    audited = await refusals(services)
    assert len(audited) == len(cases)
    assert all(e["method"] == "oidc_token" and e["reason"] for e in audited)
    reasons = " | ".join(e["reason"] for e in audited)
    for words in ("bad_signature", "unknown key id", "no active service account", "audience"):
        assert words in reasons
    assert "expired" in reasons and "someone/fork" in reasons

    good = await exchange(issuer.mint(**ci_claims()))
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["service_account"] == "ci-deployer"
    assert body["token"].startswith("API-")
    async with services.read() as session:
        row = (
            await session.execute(
                select(t.api_keys).where(t.api_keys.c.prefix == body["token"][:8])
            )
        ).one()
    assert row.key_hash != body["token"] and body["token"] not in str(row)  # hashed at rest
    ci = client_for(body["token"])
    assert (await ci.get("/projects")).status_code == 200
    # A Project Viewer: the key carries the service account's permissions, no more.
    refused = await ci.post("/environments", json={"name": "Nope"})
    assert refused.status_code == 403

    # 15 minutes later (the trust's own limit), the key is refused.
    now = services.clock()
    services.clock = lambda: now + timedelta(minutes=16)
    expired = await ci.get("/projects")
    assert expired.status_code == 401
    assert "expired" in expired.json()["message"]


def _resigned(issuer: Issuer) -> str:
    """A token whose payload was changed after signing (a forged claim)."""
    header, payload, signature = issuer.mint(**ci_claims(repository="someone/fork")).split(".")
    good = issuer.mint(**ci_claims()).split(".")[1]
    assert payload != good
    return f"{header}.{good}.{signature}"


async def test_rotated_keys_are_fetched_again(
    services: Services, client_for: ClientFor, issuer: Issuer
) -> None:
    await trusting_account(services, issuer)
    anonymous = client_for(None)
    first = await anonymous.post("/oidc/token", json={"token": issuer.mint(**ci_claims())})
    assert first.status_code == 200
    fetched = issuer.jwks_fetches
    # Unknown key ids fetch the keys again at most this often (10 s by default).
    services.settings.oidc_jwks_refetch_seconds = 0.0
    kid = f"k{len(issuer.keys) + 1}"
    issuer.new_key(kid)  # the issuer rotates: a key id the cache has not seen
    rotated = await anonymous.post("/oidc/token", json={"token": issuer.mint(kid, **ci_claims())})
    assert rotated.status_code == 200, rotated.text
    assert issuer.jwks_fetches == fetched + 1


@pytest.mark.parametrize(
    ("trust", "words"),
    [
        ({"issuer": "http://ci.example.com", "audience": "x", "claims": {"a": "b"}}, "https://"),
        ({"issuer": "https://ci.example.com", "audience": "x"}, "at least one claim rule"),
        ({"issuer": "https://ci.example.com", "audience": "x", "claims": {"ref": "*"}}, "not *"),
        ({"issuer": "https://ci.example.com", "audience": "x", "claims": {"aud": "y"}}, "checked"),
    ],
)
async def test_a_trust_that_would_let_anyone_in_is_refused(
    services: Services, trust: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await docs.create_document(
            services,
            system_caller(),
            "users",
            {"username": "ci", "service_account": True, "oidc_trust": [trust]},
        )
    assert words in str(refused.value.problems)


async def test_a_flood_of_bad_tokens_is_answered_but_recorded_only_so_often(
    services: Services, client_for: ClientFor, issuer: Issuer
) -> None:
    """Each refusal is still a 401 with its reason, but one address's refusals are recorded at
    most MAX_RECORDED_REFUSALS times in five minutes, the last saying so: a flood must not fill
    the audit log or hold its chain's lock. A good token from there still works."""
    await trusting_account(services, issuer)
    anonymous = client_for(None)
    flood = MAX_RECORDED_REFUSALS + 15
    for n in range(flood):
        answer = await anonymous.post("/oidc/token", json={"token": f"not.a.jwt{n}"})
        assert answer.status_code == 401, answer.text
        assert "not a well-formed signed JWT" in answer.json()["message"]
    audited = await refusals(services)
    assert len(audited) == MAX_RECORDED_REFUSALS
    assert (
        "further refusals from this address are not recorded for 5 minutes"
        in (audited[-1]["message"])
    )
    assert not any("not recorded" in e["message"] for e in audited[:-1])
    good = await anonymous.post("/oidc/token", json={"token": issuer.mint(**ci_claims())})
    assert good.status_code == 200, good.text
