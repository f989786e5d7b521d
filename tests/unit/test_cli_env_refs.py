"""Which ${env:NAME} the CLI reads from its environment and sends along with a file."""

from __future__ import annotations

from conveyor.cli.main import env_references


def test_only_values_count_not_comments_nor_escaped_references() -> None:
    text = """\
# To set a secret: value: ${env:IN_A_COMMENT}
projects:
  - name: Database
    variables:
      - name: Password
        value: ${env:DB_PASSWORD}
        sensitive: true
      - name: Url
        value: "postgres://${env:DB_USER}:${env:DB_PASSWORD}@db"
      - name: Literal
        value: $${env:NOT_A_REFERENCE}
"""
    assert env_references(text) == ["DB_PASSWORD", "DB_USER"]


def test_a_file_that_does_not_parse_still_names_what_it_may_need() -> None:
    assert env_references("projects: [\n  value: ${env:TOKEN}\n") == ["TOKEN"]
