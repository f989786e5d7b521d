import itertools

import pytest

from conveyor.domain.errors import ValidationFailed
from conveyor.domain.versions import (
    Version,
    highest,
    is_valid_version,
    next_version,
    parse_version,
)

# Each list is in strictly ascending precedence.
ASCENDING = [
    # semver.org, rule 11
    [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ],
    ["1.0.0", "2.0.0", "2.1.0", "2.1.1"],
    ["1.0.9", "1.0.10", "1.0.100"],
    # 4-part versions share the order with 3-part ones
    ["1.2.3", "1.2.3.1", "1.2.3.10", "1.2.4", "1.2.4.1"],
    ["1.2.3.4-beta", "1.2.3.4", "1.2.3.5-alpha", "1.2.3.5"],
    # short forms are padded with zeros
    ["1", "1.0.0.1", "1.1", "1.1.1", "2"],
    # numeric identifiers sort below alphanumeric ones, and are compared as numbers
    ["1.0.0-2", "1.0.0-10", "1.0.0-1a", "1.0.0-a"],
    ["1.0.0-rc", "1.0.0-rc.1.1"],
]


@pytest.mark.parametrize("ordered", ASCENDING, ids=lambda o: " < ".join(o))
def test_ordering(ordered: list[str]) -> None:
    versions = [parse_version(v) for v in ordered]
    for lower, higher in itertools.pairwise(versions):
        assert lower < higher
        assert lower <= higher
        assert higher > lower
        assert higher >= lower
        assert lower != higher
    assert sorted(reversed(versions)) == versions
    assert [str(v) for v in sorted(reversed(versions))] == ordered


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.2.3", "1.2.3.0"),
        ("1", "1.0.0"),
        ("1.2", "1.2.0.0"),
        ("1.0.0+abc", "1.0.0"),
        ("1.0.0-beta+exp.sha.5114f85", "1.0.0-beta"),
        ("1.0.0-beta.1", "1.0.0.0-beta.1"),
    ],
)
def test_equal_precedence(a: str, b: str) -> None:
    va, vb = parse_version(a), parse_version(b)
    assert va == vb
    assert hash(va) == hash(vb)
    assert va <= vb
    assert va >= vb
    assert not va < vb
    assert len({va, vb}) == 1


def test_keeps_original_text() -> None:
    version = parse_version("1.2.3-beta.1+build.7")
    assert str(version) == "1.2.3-beta.1+build.7"
    assert version.text == "1.2.3-beta.1+build.7"
    assert version.release == (1, 2, 3)
    assert version.prerelease == ("beta", "1")
    assert version.build == "build.7"
    assert version.is_prerelease
    assert not parse_version("1.2.3").is_prerelease


def test_version_is_not_equal_to_a_string() -> None:
    assert parse_version("1.0.0") != "1.0.0"


@pytest.mark.parametrize(
    "text",
    [
        "0.0.1",
        "1",
        "1.2",
        "1.2.3.4",
        "10.20.30",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-x-y-z.--",
        "1.0.0-alpha+001",
        "1.0.0+20130313144700",
        "1.0.0-rc-01",
        "2022.12.1.1234",
    ],
)
def test_valid(text: str) -> None:
    assert is_valid_version(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.x",
        "v1.2.3",
        " 1.2.3",
        "1.2.3\n",
        "1.2.3.4.5",
        "1.",
        ".1",
        "1..2",
        "0.0.01",
        "01.0.0",
        "1.0.0-alpha.01",
        "1.0.0-",
        "1.0.0-alpha..1",
        "1.0.0+",
        "1.0.0-beta_1",
        "-1.0.0",
        "\u0661.\u0662.\u0663",  # Arabic-Indic digits: only ASCII digits count
    ],
)
def test_invalid(text: str) -> None:
    assert not is_valid_version(text)
    with pytest.raises(ValidationFailed) as caught:
        parse_version(text)
    message = caught.value.message
    assert f'version "{text}" is not valid' in message
    assert "use one to four numbers, like 1.2.3, 1.2, 1.2.3.4 or 1.2.3-beta.1" in message


def test_invalid_message_is_exact() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_version("1.x")
    assert caught.value.message == (
        'version "1.x" is not valid: '
        "use one to four numbers, like 1.2.3, 1.2, 1.2.3.4 or 1.2.3-beta.1"
    )


def test_leading_zero_is_explained() -> None:
    # SemVer-equal texts would make "the highest version" ambiguous (Octopus #5886).
    with pytest.raises(ValidationFailed, match="01 has a leading zero"):
        parse_version("0.0.01")


def test_constructing_version_directly_validates() -> None:
    with pytest.raises(ValidationFailed):
        Version("nope")


def test_highest_is_by_precedence_not_position() -> None:
    assert highest(["1.0.10", "1.0.9", "1.0.2"]) == "1.0.10"
    assert highest(["1.0.2", "1.0.9", "1.0.10"]) == "1.0.10"
    assert highest(["1.0.0", "1.0.0-rc.1", "0.9.9.9"]) == "1.0.0"
    assert highest(["1.2.3.4", "1.2.3"]) == "1.2.3.4"
    assert highest(iter(["2.0.0-beta.11", "2.0.0-beta.2"])) == "2.0.0-beta.11"


def test_highest_of_equals_is_the_first() -> None:
    assert highest(["1.2.3", "1.2.3.0", "1.2.3+b"]) == "1.2.3"


def test_highest_of_nothing_is_none() -> None:
    assert highest([]) is None


def test_highest_refuses_invalid_versions() -> None:
    with pytest.raises(ValidationFailed):
        highest(["1.0.0", "bad"])


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        (None, "0.0.1"),
        ("1.0.0", "1.0.1"),
        ("1.0.9", "1.0.10"),
        ("1.2.3.4", "1.2.3.5"),
        ("1", "2"),
        ("1.2", "1.3"),
        ("1.0.0-beta.1", "1.0.0"),
        ("1.2.3.4-rc.2", "1.2.3.4"),
        ("1.0.0+build.5", "1.0.1"),
    ],
)
def test_next_version(latest: str | None, expected: str) -> None:
    assert next_version(latest) == expected
    if latest is not None:
        assert parse_version(expected) > parse_version(latest)


def test_next_version_refuses_invalid_latest() -> None:
    with pytest.raises(ValidationFailed):
        next_version("latest")
