"""`crmsync check` and `crmsync brevo setup` as a user runs them: the console script in a subprocess,
against a FakeBrevo served on a loopback port, with a real SQLite table. Every request the commands
sent is checked against Brevo's OpenAPI spec afterwards (the fake keeps them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync_brevo import FakeBrevo
from crmsync_brevo.fake import SCRAPERSKY_ATTRIBUTES, STANDARD_ATTRIBUTES
from crmsync_core.ratelimit import RateLimit

from ..conftest import CliEnvironment
from .conftest import spec_violation

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


def crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def lines_of(result: subprocess.CompletedProcess[str], status: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.split()[1:2] == [status]]


@pytest.fixture
def fake() -> FakeBrevo:
    return FakeBrevo(rate_limit=RateLimit(10, 1.0))


@pytest.fixture
def env(fake: FakeBrevo, cli_environment: CliEnvironment) -> Iterator[dict[str, str]]:
    with cli_environment(fake.handle) as (origin, environment):
        environment.update(
            BREVO_API_KEY=fake.api_key, BREVO_API_BASE_URL=f"{origin}/v3", BREVO_LIST_ID="2"
        )
        yield environment
    violations = [v for r in fake.requests if (v := spec_violation(r)) is not None]
    assert not violations, violations


def test_a_ready_account_is_all_ok(env: dict[str, str], fake: FakeBrevo) -> None:
    result = crmsync("check", env=env)  # no --crm: BREVO_* is what is configured
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lines_of(result, "PROBLEM")
    names = [line.split(maxsplit=2)[2].split(":")[0] for line in lines_of(result, "ok")]
    assert names[:3] == ["settings", "table", "credentials"]
    assert {f"attribute {a}" for a in {**STANDARD_ATTRIBUTES, **SCRAPERSKY_ATTRIBUTES}} <= set(
        names
    )
    assert {"list", "rate limit"} <= set(names)
    assert result.stdout.rstrip().endswith("everything is ready")
    assert fake.api_key not in result.stdout + result.stderr
    # It read, and changed nothing.
    assert {r.method for r in fake.requests} == {"GET"}


def test_each_problem_has_its_line_and_a_non_zero_exit(
    env: dict[str, str], fake: FakeBrevo
) -> None:
    del fake.attributes["PAGE_ID"]
    fake.attributes["HAS_GMAIL"] = "text"
    env["BREVO_LIST_ID"] = "77"
    result = crmsync("check", "--crm", "brevo", env=env)
    assert result.returncode == 1
    problems = lines_of(result, "PROBLEM")
    assert len(problems) == 3, result.stdout
    assert "attribute PAGE_ID: missing" in problems[0]
    assert "crmsync brevo setup" in problems[0]
    assert "attribute HAS_GMAIL: has type text, crmsync sends boolean" in problems[1]
    assert "list: list 77 does not exist" in problems[2]
    assert result.stdout.rstrip().endswith("3 problems found")


def test_a_refused_key_is_one_line_without_the_key(env: dict[str, str]) -> None:
    env["BREVO_API_KEY"] = "xkeysib-wrong-key-0000"
    result = crmsync("check", "--crm", "brevo", env=env)
    assert result.returncode == 1
    [problem] = lines_of(result, "PROBLEM")
    assert "credentials: brevo refused the credentials (HTTP 401" in problem
    assert "xkeysib-wrong-key-0000" not in result.stdout + result.stderr


def test_a_table_without_the_columns_is_a_problem(env: dict[str, str], tmp_path: Path) -> None:
    env["CRMSYNC_DATABASE_URL"] = f"sqlite:///{tmp_path / 'absent.sqlite3'}"
    result = crmsync("check", "--crm", "brevo", env=env)
    assert result.returncode == 1
    [problem] = lines_of(result, "PROBLEM")
    assert "table: the database file" in problem and "crmsync schema --apply" in problem
    assert not (tmp_path / "absent.sqlite3").exists()  # a check creates nothing


def test_setup_creates_exactly_the_missing_attributes_then_check_is_ok(
    env: dict[str, str], fake: FakeBrevo
) -> None:
    for name in ("DOMAIN_ID", "PAGE_ID", "HAS_GMAIL"):
        del fake.attributes[name]
    before = dict(fake.attributes)

    planned = crmsync("brevo", "setup", "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr
    assert (
        "POST " in planned.stdout and "/v3/contacts/attributes/normal/DOMAIN_ID" in planned.stdout
    )
    assert '{"type": "boolean"}' in planned.stdout
    assert fake.attributes == before  # a dry run changes nothing

    created = crmsync("brevo", "setup", env=env)
    assert created.returncode == 0, created.stderr
    assert [
        line.split()[-2] for line in created.stdout.splitlines() if line.startswith("created")
    ] == [
        "DOMAIN_ID:",
        "PAGE_ID:",
        "HAS_GMAIL:",
    ]
    assert fake.attributes == {
        **before,
        "DOMAIN_ID": "text",
        "PAGE_ID": "text",
        "HAS_GMAIL": "boolean",
    }
    assert created.stdout.rstrip().endswith("3 created, 5 left as they were")

    assert crmsync("check", "--crm", "brevo", env=env).returncode == 0

    posts = len([r for r in fake.requests if r.method == "POST"])
    again = crmsync("brevo", "setup", env=env)
    assert again.returncode == 0
    assert "created " not in again.stdout
    assert again.stdout.rstrip().endswith("0 created, 8 left as they were")
    assert len([r for r in fake.requests if r.method == "POST"]) == posts


def test_setup_never_changes_an_attribute_of_another_type(
    env: dict[str, str], fake: FakeBrevo
) -> None:
    fake.attributes["DOMAIN_ID"] = "float"
    result = crmsync("brevo", "setup", env=env)
    assert result.returncode == 0
    assert "kept         attribute DOMAIN_ID: has type float, crmsync sends text" in result.stdout
    assert fake.attributes["DOMAIN_ID"] == "float"
    assert not [r for r in fake.requests if r.method == "POST"]
