"""The pure OIDC rules: claim rules, times, choosing the trusting account, ID token checks,
groups to teams, and the config-as-code shape of trusts and sso_groups."""

from __future__ import annotations

from conveyor.domain import oidc
from conveyor.domain.codec import decode, encode
from conveyor.domain.documents import Team, User
from conveyor.domain.errors import Problem

NOW = 2_000_000_000.0
ISSUER = "https://token.actions.githubusercontent.com"
TRUST = oidc.OidcTrust(
    ISSUER,
    "conveyor",
    (oidc.ClaimRule("repository", "org/shop"), oidc.ClaimRule("ref", "refs/heads/release/*")),
)
GOOD = {
    "iss": ISSUER,
    "aud": ["conveyor", "other"],
    "repository": "org/shop",
    "ref": "refs/heads/release/1.2",
    "exp": NOW + 300,
}


def test_claim_rules_are_exact_unless_they_hold_a_glob() -> None:
    exact = oidc.ClaimRule("repository", "org/shop")
    assert oidc.rule_matches(exact, {"repository": "org/shop"})
    assert not oidc.rule_matches(exact, {"repository": "org/shop-fork"})
    assert not oidc.rule_matches(exact, {"repository": "ORG/shop"})
    assert not oidc.rule_matches(exact, {})
    assert not oidc.rule_matches(exact, {"repository": ["org/shop"]})  # a list never matches
    flag = oidc.ClaimRule("ref_protected", "true")
    assert oidc.rule_matches(flag, {"ref_protected": True})
    glob = oidc.ClaimRule("ref", "refs/heads/release/*")
    assert oidc.rule_matches(glob, {"ref": "refs/heads/release/2"})
    assert not oidc.rule_matches(glob, {"ref": "refs/heads/main"})


def test_times_have_a_small_leeway() -> None:
    assert oidc.times_refusal({"exp": NOW - 30}, NOW) is None
    refusal = oidc.times_refusal({"exp": NOW - 61}, NOW)
    assert refusal is not None and refusal.reason == "expired"
    no_exp = oidc.times_refusal({}, NOW)
    assert no_exp is not None and "exp" in no_exp.reason
    early = oidc.times_refusal({"exp": NOW + 600, "nbf": NOW + 120}, NOW)
    assert early is not None and "nbf" in early.reason


def test_the_one_matching_trust_is_chosen() -> None:
    ci = oidc.Candidate("ci", TRUST)
    chosen, refusal = oidc.choose([ci], GOOD)
    assert chosen == ci and refusal is None
    _, wrong_aud = oidc.choose([ci], GOOD | {"aud": "someone"})
    assert wrong_aud is not None and not wrong_aud.forbidden
    _, fork = oidc.choose([ci], GOOD | {"repository": "evil/shop"})
    assert fork is not None and fork.forbidden
    assert "org/shop" not in fork.message and "evil/shop" in fork.reason  # rules stay private
    _, both = oidc.choose([ci, oidc.Candidate("other", TRUST)], GOOD)
    assert both is not None and "several" in both.message
    _, nobody = oidc.choose([], GOOD)
    assert nobody is not None


def test_an_id_token_must_be_ours_current_and_answer_our_nonce() -> None:
    token = {"iss": "https://idp", "aud": "conveyor", "sub": "u1", "nonce": "n1", "exp": NOW + 60}
    check = {"issuer": "https://idp", "client_id": "conveyor", "nonce": "n1", "now": NOW}
    assert oidc.id_token_refusal(token, **check) is None  # type: ignore[arg-type]
    for change, words in [
        ({"iss": "https://other"}, "wrong issuer"),
        ({"aud": "someone"}, "aud"),
        ({"aud": ["conveyor", "x"], "azp": "x"}, "azp"),
        ({"exp": NOW - 3600}, "expired"),
        ({"nonce": "n2"}, "nonce"),
        ({"sub": ""}, "sub"),
    ]:
        refusal = oidc.id_token_refusal(token | change, **check)  # type: ignore[arg-type]
        assert refusal is not None and words in refusal.reason, change


def test_groups_pick_the_teams_that_follow_them() -> None:
    teams = [("Devs", ("shop-devs",)), ("Ops", ("ops", "sre")), ("Manual", ())]
    assert oidc.teams_for_groups(teams, ["sre", "x"]) == {"Ops"}
    assert oidc.teams_for_groups(teams, []) == set()
    assert oidc.groups_of({"groups": "ops"}, "groups") == ("ops",)
    assert oidc.groups_of({}, "groups") is None
    assert oidc.username_from({"preferred_username": "Alice Smith"}) == "Alice-Smith"
    assert oidc.username_from({"email": "bob@example.com"}) == "bob"
    assert oidc.username_from({}) == "user"


def test_trusts_and_sso_groups_are_config_as_code() -> None:
    data = {
        "username": "ci",
        "service_account": True,
        "oidc_trust": [
            {"issuer": ISSUER, "audience": "conveyor", "claims": {"repository": "org/shop"}},
        ],
    }
    problems: list[Problem] = []
    user = decode("users", data, ("users", "ci"), problems)
    assert isinstance(user, User) and not problems
    assert user.oidc_trust[0].rules == (oidc.ClaimRule("repository", "org/shop"),)
    assert encode("users", user) == data
    team = decode("teams", {"name": "Devs", "sso_groups": ["shop-devs"]}, ("teams",), problems)
    assert isinstance(team, Team) and team.sso_groups == ("shop-devs",)
    assert encode("teams", team)["sso_groups"] == ["shop-devs"]
    person = oidc.trust_problems(user.oidc_trust, False, ("users", "ci"))
    assert any("only a service account" in p.message for p in person)
