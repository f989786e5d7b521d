"""The pure rules of webhooks in: each provider's proof, reading a push, watched branches."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from conveyor.domain import hooks
from conveyor.domain.errors import ValidationFailed

SECRET = "a-shared-secret-of-some-length"
BODY = b'{"ref": "refs/heads/main"}'
NOW = 1_700_000_000.0


def test_github_signature() -> None:
    good = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    hooks.verify("github", SECRET, {"x-hub-signature-256": good}, BODY, NOW)
    with pytest.raises(hooks.Refused, match="does not match"):
        hooks.verify("github", SECRET, {"x-hub-signature-256": good}, BODY + b" ", NOW)
    with pytest.raises(hooks.Refused, match="no X-Hub-Signature-256"):
        hooks.verify("github", SECRET, {}, BODY, NOW)


def test_gitlab_token() -> None:
    hooks.verify("gitlab", SECRET, {"x-gitlab-token": SECRET}, BODY, NOW)
    with pytest.raises(hooks.Refused, match="does not match"):
        hooks.verify("gitlab", SECRET, {"x-gitlab-token": SECRET[:-1]}, BODY, NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_generic_signature_and_its_time_window(skew: int) -> None:
    stamp = int(NOW)
    fresh = {"x-conveyor-timestamp": str(stamp), "x-conveyor-signature": ""}
    fresh["x-conveyor-signature"] = hooks.sign_generic(SECRET, stamp, BODY)
    hooks.verify("generic", SECRET, fresh, BODY, NOW)
    hooks.verify("generic", SECRET, fresh, BODY, NOW + 299)
    with pytest.raises(hooks.Refused, match="more than 300 s"):
        hooks.verify("generic", SECRET, fresh, BODY, NOW + skew)
    # The timestamp is signed: moving it breaks the signature.
    moved = {**fresh, "x-conveyor-timestamp": str(stamp + 1)}
    with pytest.raises(hooks.Refused, match="does not match"):
        hooks.verify("generic", SECRET, moved, BODY, NOW)
    with pytest.raises(hooks.Refused, match="Unix time"):
        hooks.verify("generic", SECRET, {**fresh, "x-conveyor-timestamp": "soon"}, BODY, NOW)


def test_reading_a_push() -> None:
    sha = "a" * 40
    push = hooks.read_push(
        "github",
        {
            "ref": "refs/heads/release/1.2",
            "before": "0" * 40,
            "after": sha,
            "repository": {"full_name": "acme/shop"},
            "commits": [
                {"id": sha, "message": " Fix \n", "author": {"name": "Dana", "email": "d@x"}},
                {"id": "not a sha"},
                "junk",
            ],
        },
    )
    assert push.branch == "release/1.2" and push.before is None and push.after == sha
    assert push.repository == "acme/shop"
    assert push.commits == (
        {"sha": sha, "author": "Dana", "email": "d@x", "message": "Fix", "timestamp": ""},
    )
    tag = hooks.read_push("gitlab", {"ref": "refs/tags/v1", "after": sha})
    assert tag.branch is None
    assert hooks.read_push("generic", {"ref": "main"}).branch == "main"
    with pytest.raises(ValidationFailed, match="ref"):
        hooks.read_push("github", {"after": sha})


def test_delivery_ids_and_watched_branches() -> None:
    assert hooks.delivery_id("gitlab", {"idempotency-key": "k", "x-gitlab-event-uuid": "u"}) == "k"
    with pytest.raises(ValidationFailed, match="X-GitHub-Delivery"):
        hooks.delivery_id("github", {})
    with pytest.raises(ValidationFailed, match="not a delivery id"):
        hooks.delivery_id("generic", {"x-conveyor-delivery": "has space"})
    assert hooks.watched("release/2", ["main", "release/*"])
    assert not hooks.watched("feature/x", ["main", "release/*"])
    assert not hooks.watched(None, ["*"])
    assert hooks.same_repository("", "anything") and hooks.same_repository("Acme/Shop", "acme/shop")
