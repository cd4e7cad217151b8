"""``crmsync history``: the runs and a contact's attempts after a demo, read-only, bad input in one line."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from .test_cli import (  # noqa: F401  (fixtures)
    CRMS,
    _user_environment,
    assert_one_line_error,
    ids,
    run,
    url,
)


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_history_lists_the_demo_s_runs_and_a_contact_s_attempts(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    db = f"sqlite:///{path}"
    assert (
        run("--database-url", db, "demo", "--contacts", "40", "--failure-rate", "0").exit_code == 0
    )

    result = run("--database-url", db, "history")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(CRMS), result.stdout
    for line in lines:
        assert re.fullmatch(
            r"#\d+ (brevo|hubspot|mautic|n8n) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC [\d.]+ s: "
            r"synced \d+, skipped \d+, retrying 0, failed 0, released 0; [\d,.]+/s, "
            r"rate-limited [\d.]+ s; worker .+",
            line,
        ), line
    assert {line.split()[1] for line in lines} == set(CRMS)
    synced = {line.split()[1]: int(line.split("synced ")[1].split(",")[0]) for line in lines}
    assert all(count > 30 for count in synced.values()), synced

    one = run("--database-url", db, "history", "--crm", "hubspot", "--limit", "1")
    assert one.exit_code == 0, one.output
    assert [line.split()[1] for line in one.stdout.splitlines()] == ["hubspot"]

    with sqlite3.connect(path) as conn:
        (raw,) = conn.execute(
            "SELECT id FROM contacts WHERE email IS NOT NULL AND brevo_sync_status = 'Complete' "
            "LIMIT 1"
        ).fetchone()
    contact = str(uuid.UUID(str(raw)))
    result = run("--database-url", db, "history", "--contact", contact.upper())
    assert result.exit_code == 0, result.output
    attempts = result.stdout.splitlines()
    assert {line.split()[3] for line in attempts} == set(CRMS), result.stdout
    for line in attempts:
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \w+ synced \((HTTP \d+|HTTP -), run #\d+\)", line
        ), line

    only = run("--database-url", db, "history", "--contact", contact, "--crm", "n8n", "--json")
    assert only.exit_code == 0, only.output
    (attempt,) = json.loads(only.stdout)
    assert (attempt["contact_id"], attempt["crm"], attempt["outcome"]) == (contact, "n8n", "synced")


def test_history_of_a_database_without_runs_writes_nothing(url: str, ids: list[str]) -> None:  # noqa: F811
    before = table_names(Path(url.split(":///", 1)[1])) if url.startswith("sqlite") else None
    result = run("--database-url", url, "history")
    assert result.exit_code == 0, result.output
    assert result.stdout == "no runs kept yet\n"
    contact = run("--database-url", url, "history", "--contact", ids[0])
    assert contact.stdout == f"no attempts kept for contact {ids[0]}\n"
    if before is not None:
        assert table_names(Path(url.split(":///", 1)[1])) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--contact", "not-a-uuid"], 1, "contact id 'not-a-uuid' is not a valid UUID"),
        (["--limit", "0"], 2, "Invalid value for '--limit': 0 is not in the range 1<=x<=10000."),
        (["--crm", "hubspott"], 1, "hubspot"),
    ],
    ids=["bad-contact-id", "zero-limit", "unknown-crm"],
)
def test_bad_history_input_is_one_line(
    url: str,  # noqa: F811
    ids: list[str],  # noqa: F811
    args: list[str],
    code: int,
    message: str,
) -> None:
    result = run("--database-url", url, "history", *args)
    assert_one_line_error(result, code, message)
