"""Values substituted into scripts cannot inject commands (issue 10, item 3), end to end: a real
`conveyor server` (SQLite and PostgreSQL) driven by the real `conveyor` CLI, real bash scripts.

Release notes are free text anyone with ReleaseCreate writes; a script that pastes them raw into
bash runs whatever they say. The documented safe form, ``#{Name | shell}``, passes them as one
literal word. The raw form is deployed too, as a control: it shows the payload is live, so the
safe form's clean log means something.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import Server, e2e_database, server

__all__ = ["e2e_database", "server"]  # the e2e fixtures this module's tests use

NOTES = '"; echo INJECTED; " and $(touch pwned)'
# A sensitive value full of shell syntax: quotes, a command separator, substitutions.
PASSWORD = "p'a\"ss; echo LEAKED $(echo RAN) `echo RAN`"

SAFE = """\
printf 'notes: %s\\n' #{Conveyor.Release.Notes | shell}
notes=#{Conveyor.Release.Notes | shell}
[ "$notes" = "$CONVEYOR_RELEASE_NOTES" ] && echo "notes arrived intact"
password=#{DbPassword | shell}
[ "$password" = "$DBPASSWORD" ] && echo "password arrived intact"
if [ -e pwned ]; then echo "pwned exists"; else echo "no pwned file"; fi
"""
RAW = 'echo "notes: #{Conveyor.Release.Notes}"\n'


def config() -> dict[str, Any]:
    def project(name: str, script: str) -> dict[str, Any]:
        return {
            "name": name,
            "group": "Apps",
            "lifecycle": "Anywhere",
            "variables": [{"name": "DbPassword", "value": PASSWORD, "sensitive": True}],
            "process": {"steps": [{"name": "Show notes", "type": "script", "script": script}]},
        }

    return {
        "environments": [{"name": "Dev"}],
        "lifecycles": [{"name": "Anywhere", "phases": [{"name": "All", "environments": ["Dev"]}]}],
        "project_groups": [{"name": "Apps"}],
        "projects": [project("Safe Notes", SAFE), project("Raw Notes", RAW)],
    }


def deploy_with_notes(server: Server, project: str) -> tuple[int, list[str]]:
    """Create a release with the hostile notes, deploy it and wait; the exit code and log."""
    server.ok("release", "create", "--project", project, "--version", "1.0.0", "--notes", NOTES)
    deployed = server.cli(
        "release", "deploy", "--project", project, "--version", "1.0.0", "--to", "Dev",
        "--wait", "--output", "json",
    )  # fmt: skip
    task = json.loads(deployed.stdout)["task"]
    log = server.ok("task", "log", task)
    return deployed.returncode, log.stdout.splitlines()


def test_release_notes_and_secrets_pass_into_a_script_as_data_never_as_commands(
    server: Server, tmp_path: Path
) -> None:
    file = tmp_path / "conveyor.yaml"
    file.write_text(yaml.safe_dump(config(), sort_keys=False))
    server.ok("apply", "-f", str(file))

    code, log = deploy_with_notes(server, "Safe Notes")
    text = "\n".join(log)
    assert code == 0, text
    # The notes are printed literally, whole, and ran nothing: no INJECTED line, no file.
    assert any(line.endswith(f"notes: {NOTES}") for line in log), text
    assert "notes arrived intact" in text
    assert not any(line.endswith("INJECTED") for line in log), text
    assert "no pwned file" in text and "pwned exists" not in text
    # The secret reaches the script intact, runs nothing, and the log never shows it.
    assert "password arrived intact" in text
    assert "LEAKED" not in text and "RAN" not in text

    # The control: the same notes pasted raw into bash are commands (echo INJECTED runs, then
    # bash tries to run " and " and the step fails).
    code, log = deploy_with_notes(server, "Raw Notes")
    text = "\n".join(log)
    assert code != 0, text
    assert any(line.endswith("INJECTED") for line in log), text
    assert "command not found" in text, text
