"""OpenID Connect rules: which external tokens a service account trusts, and checking a token's
claims (issuer, audience, times, claim rules) once its signature has been verified.

Pure: the services fetch keys and verify signatures; these functions decide from the claims
alone, with the reason for a refusal (for the audit log) and a sentence that tells the caller
what was wrong without revealing the rules it was checked against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from conveyor.domain.errors import Problem
from conveyor.domain.reading import Path, Reader

# Clocks drift: exp, nbf and iat are allowed this much.
LEEWAY_SECONDS = 60
# A short-lived key lives at most this long (and by default this long).
MAX_MINUTES = 60
# Claim names a trust rule may not constrain: they are checked by the fixed rules above.
FIXED_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat"})
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
GLOB = frozenset("*?[")


@dataclass(frozen=True)
class ClaimRule:
    """``claim`` must equal ``pattern``, or match it when it holds ``*``, ``?`` or ``[...]``."""

    claim: str
    pattern: str


@dataclass(frozen=True)
class OidcTrust:
    """A service account trusts tokens of ``issuer`` meant for ``audience`` whose claims match
    every rule (GitHub Actions: repository, ref, environment; GitLab: project_path, ref, …)."""

    issuer: str
    audience: str
    rules: tuple[ClaimRule, ...] = ()
    # How long the Conveyor key made from such a token lives (at most MAX_MINUTES).
    minutes: int = MAX_MINUTES


@dataclass(frozen=True)
class Refusal:
    """Why a token is refused: ``reason`` for the audit log, ``message`` for the caller."""

    reason: str
    message: str
    # 401: the token is not acceptable at all; 403: it is, but it grants nothing here.
    forbidden: bool = False


def issuer_url_problem(url: str) -> str | None:
    """An issuer (or key set) must be HTTPS, or plain HTTP on this machine (tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in LOCAL_HOSTS:
        return None
    return "must be an https:// address (http:// only for localhost)"


def rule_matches(rule: ClaimRule, claims: Mapping[str, Any]) -> bool:
    value = claims.get(rule.claim)
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return False  # missing, a list or an object: never matches
    if GLOB & set(rule.pattern):
        return fnmatchcase(value, rule.pattern)
    return value == rule.pattern


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def times_refusal(
    claims: Mapping[str, Any], now: float, leeway: int = LEEWAY_SECONDS
) -> Refusal | None:
    """``exp`` is required and must lie ahead; ``nbf`` and ``iat``, when present, behind."""
    exp = _number(claims, "exp")
    if exp is None:
        return Refusal("no exp claim", "the token has no expiry (exp): it is refused")
    if exp + leeway < now:
        return Refusal("expired", "the token has expired: get a fresh one")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf - leeway > now:
        return Refusal("not yet valid (nbf)", "the token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat - leeway > now:
        return Refusal("issued in the future (iat)", "the token was issued in the future (iat)")
    return None


def trust_refusal(trust: OidcTrust, claims: Mapping[str, Any]) -> Refusal | None:
    """Whether a verified token's audience and claims satisfy one trust."""
    if claims.get("iss") != trust.issuer:
        return Refusal("issuer not trusted", "the token's issuer is not trusted", True)
    if trust.audience not in _audiences(claims):
        return Refusal(
            f"audience {_audiences(claims)!r} is not {trust.audience!r}",
            "the token's audience (aud) is not the one Conveyor expects",
        )
    failed = [rule.claim for rule in trust.rules if not rule_matches(rule, claims)]
    if failed:
        shown = {name: claims.get(name) for name in failed}
        return Refusal(
            f"claims do not match the trust rules: {shown!r}",
            f"the token's claims ({', '.join(failed)}) do not match the rules of any trusting "
            "service account",
            True,
        )
    return None


@dataclass(frozen=True)
class Candidate:
    """A service account and one of its trusts, in configuration order."""

    username: str
    trust: OidcTrust


def choose(
    candidates: Iterable[Candidate], claims: Mapping[str, Any]
) -> tuple[Candidate | None, Refusal | None]:
    """The one trust the token satisfies; a refusal when none does, or when several accounts
    do (the caller must then name the one it means)."""
    listed = list(candidates)
    if not listed:
        return None, Refusal(
            "no service account trusts this issuer", "the token's issuer is not trusted"
        )
    matched: list[Candidate] = []
    refusals: list[Refusal] = []
    for candidate in listed:
        refusal = trust_refusal(candidate.trust, claims)
        if refusal is None:
            matched.append(candidate)
        else:
            refusals.append(refusal)
    accounts = {c.username.lower() for c in matched}
    if len(accounts) > 1:
        return None, Refusal(
            f"several service accounts trust it: {sorted(accounts)}",
            "the token matches several service accounts: name one (service_account)",
            True,
        )
    if matched:
        return matched[0], None
    # The audience before the claim rules: a token for another audience is no business of ours.
    return None, min(refusals, key=lambda r: r.forbidden)


# ---------------------------------------------------------------- config as code


def decode_trust(r: Reader, field: str = "oidc_trust") -> tuple[OidcTrust, ...]:
    out: list[OidcTrust] = []
    for path, item in r.items(field):
        tr = Reader(item, path, r.problems, "an OIDC trust (issuer, audience, claims)")
        rules = tuple(ClaimRule(name, pattern) for name, pattern in tr.mapping("claims"))
        minutes = tr.integer("minutes", MAX_MINUTES, minimum=1) or MAX_MINUTES
        out.append(
            OidcTrust(
                issuer=tr.text("issuer", required=True),
                audience=tr.text("audience", required=True),
                rules=rules,
                minutes=minutes,
            )
        )
        tr.finish()
    return tuple(out)


def encode_trust(trusts: tuple[OidcTrust, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for trust in trusts:
        item: dict[str, Any] = {"issuer": trust.issuer, "audience": trust.audience}
        item["claims"] = {rule.claim: rule.pattern for rule in trust.rules}
        if trust.minutes != MAX_MINUTES:
            item["minutes"] = trust.minutes
        out.append(item)
    return out


def trust_problems(
    trusts: tuple[OidcTrust, ...], service_account: bool, path: Path
) -> list[Problem]:
    problems: list[Problem] = []
    if trusts and not service_account:
        problems.append(
            Problem(
                (*path, "oidc_trust"),
                "only a service account can trust an OIDC issuer (set service_account: true)",
            )
        )
    for i, trust in enumerate(trusts):
        at: Path = (*path, "oidc_trust", i)
        bad_url = issuer_url_problem(trust.issuer)
        if trust.issuer and bad_url:
            problems.append(Problem((*at, "issuer"), bad_url))
        if not trust.rules:
            # GitHub's and GitLab's issuers sign tokens for every repository they host.
            problems.append(
                Problem(
                    (*at, "claims"),
                    "name at least one claim rule (such as repository: my-org/my-repo): "
                    "the issuer signs tokens for everyone it hosts",
                )
            )
        for rule in trust.rules:
            if rule.claim in FIXED_CLAIMS:
                problems.append(
                    Problem((*at, "claims", rule.claim), "is checked already: leave it out")
                )
            elif not rule.pattern.strip() or rule.pattern.strip() == "*":
                problems.append(
                    Problem((*at, "claims", rule.claim), "must constrain the value (not * alone)")
                )
        if trust.minutes > MAX_MINUTES:
            problems.append(Problem((*at, "minutes"), f"is at most {MAX_MINUTES}"))
    return problems


# ---------------------------------------------------------------- single sign-on


def groups_of(claims: Mapping[str, Any], claim: str) -> tuple[str, ...] | None:
    """The groups a sign-in's claims name (``None``: the claim is absent, change nothing)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(g for g in value if isinstance(g, str))
    return None


def teams_for_groups(
    team_groups: Iterable[tuple[str, tuple[str, ...]]], groups: Iterable[str]
) -> set[str]:
    """Of the teams that follow groups (``(team, its sso_groups)``), those a member of
    ``groups`` belongs in. Group names match exactly (case matters, as in the provider)."""
    have = set(groups)
    return {team for team, wanted in team_groups if wanted and have.intersection(wanted)}


def username_from(claims: Mapping[str, Any]) -> str:
    """A username proposed from a first sign-in's claims (made unique by the caller)."""
    for name in ("preferred_username", "email", "nickname", "name", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            if name == "email":
                text = text.split("@", 1)[0]
            cleaned = "".join(c if c.isalnum() or c in "._@-" else "-" for c in text)
            cleaned = cleaned.lstrip("._@-")[:90]
            if cleaned:
                return cleaned
    return "user"


def id_token_refusal(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    leeway: int = LEEWAY_SECONDS,
) -> Refusal | None:
    """A single sign-on ID token (signature verified): from our provider, for us, current,
    and answering our own request (nonce)."""
    if claims.get("iss") != issuer:
        return Refusal(
            f"wrong issuer {str(claims.get('iss'))[:200]!r}",
            "the sign-in came back from another issuer than the one configured",
        )
    audiences = _audiences(claims)
    if client_id not in audiences:
        return Refusal(
            "ID token not meant for this client (aud)", "the sign-in was not meant for us"
        )
    if len(audiences) > 1 and claims.get("azp") != client_id:
        return Refusal("ID token's azp is another client", "the sign-in was not meant for us")
    timing = times_refusal(claims, now, leeway)
    if timing is not None:
        return Refusal(f"ID token {timing.reason}", "the sign-in has expired: sign in again")
    if not isinstance(claims.get("nonce"), str) or claims.get("nonce") != nonce:
        return Refusal(
            "the ID token's nonce is not the one sent", "the sign-in does not answer our request"
        )
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        return Refusal("no usable sub claim", "the provider did not say who signed in")
    return None
