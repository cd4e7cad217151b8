"""`crmsync check` and `crmsync mautic setup` through the console script, against a FakeMautic served
on a loopback port (OAuth 2 client credentials, as the sandbox uses)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync_mautic import FakeMautic
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

from ..conftest import CliEnvironment

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
ALIASES = "domain_id=scrapersky_domain_id,has_gmail=has_gmail,source_url=source_url"


def crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if " PROBLEM " in line]


@pytest.fixture
def fake() -> FakeMautic:
    mautic = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    mautic.add_field("scrapersky_domain_id", "text")
    mautic.add_field("has_gmail", "boolean")
    mautic.add_field("source_url", "url")
    return mautic


@pytest.fixture
def env(fake: FakeMautic, cli_environment: CliEnvironment) -> Iterator[dict[str, str]]:
    with cli_environment(fake.handle) as (origin, environment):
        environment.update(
            MAUTIC_BASE_URL=origin,
            MAUTIC_CLIENT_ID=fake.client_id,
            MAUTIC_CLIENT_SECRET=fake.client_secret,
            MAUTIC_FIELD_ALIASES=ALIASES,
        )
        yield environment


def test_a_ready_installation_is_all_ok(env: dict[str, str], fake: FakeMautic) -> None:
    result = crmsync("check", "--crm", "mautic", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["mautic"]}
    assert {c["status"] for c in checks.values()} <= {"ok", "info"}
    assert checks["credentials"]["status"] == "ok"
    for alias in ("email", "firstname", "phone", "scrapersky_domain_id", "has_gmail"):
        assert checks[f"field {alias}"]["status"] == "ok"
    assert fake.client_secret not in result.stdout + result.stderr


def test_missing_wrong_and_unpublished_fields_are_problems(
    env: dict[str, str], fake: FakeMautic
) -> None:
    del fake.fields["scrapersky_domain_id"]
    fake.add_field("has_gmail", "text")
    fake.fields["source_url"]["isPublished"] = False
    result = crmsync("check", "--crm", "mautic", env=env)
    assert result.returncode == 1
    missing, wrong, unpublished = problems(result)
    assert "field scrapersky_domain_id: missing" in missing and "crmsync mautic setup" in missing
    assert "field has_gmail: has type text, crmsync needs boolean" in wrong
    assert "field source_url: exists but is unpublished" in unpublished


def test_a_disabled_api_and_a_user_without_permission_are_named(
    env: dict[str, str], fake: FakeMautic
) -> None:
    fake.api_enabled = False
    [disabled] = problems(crmsync("check", "--crm", "mautic", env=env))
    assert "the API is disabled in Mautic" in disabled and "api_enabled" in disabled

    fake.api_enabled = True
    fake.fields_permission = "none"
    [denied] = problems(crmsync("check", "--crm", "mautic", env=env))
    assert "credentials: mautic refused the credentials (HTTP 403" in denied
    assert "You do not have access" in denied


def test_setup_creates_exactly_the_missing_fields_then_check_is_ok(
    env: dict[str, str], fake: FakeMautic
) -> None:
    del fake.fields["scrapersky_domain_id"]
    del fake.fields["has_gmail"]
    planned = crmsync("mautic", "setup", "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr
    assert "/api/fields/contact/new" in planned.stdout
    assert "has_gmail" not in fake.fields

    created = crmsync("mautic", "setup", env=env)
    assert created.returncode == 0, created.stderr
    assert [x.split()[2] for x in created.stdout.splitlines() if x.startswith("created")] == [
        "scrapersky_domain_id:",
        "has_gmail:",
    ]
    assert fake.fields["has_gmail"]["type"] == "boolean"
    assert crmsync("check", "--crm", "mautic", env=env).returncode == 0
    again = crmsync("mautic", "setup", env=env)
    assert again.stdout.rstrip().endswith("0 created, 3 left as they were")
