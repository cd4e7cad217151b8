"""`crmsync check` and `crmsync hubspot setup` through the console script, against a FakeHubspot served
on a loopback port. Request bodies the commands sent are checked against HubSpot's SDK models."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync_core.ratelimit import RateLimit
from crmsync_hubspot import FakeHubspot
from crmsync_hubspot.fake import SCRAPERSKY_PROPERTIES, STANDARD_PROPERTIES

from ..conftest import CliEnvironment
from .conftest import SdkValidator

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


def crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if " PROBLEM " in line]


@pytest.fixture
def fake() -> FakeHubspot:
    return FakeHubspot(rate_limit=RateLimit(190, 10.0), daily_limit=625_000)


@pytest.fixture
def env(
    fake: FakeHubspot, cli_environment: CliEnvironment, sdk_validator: SdkValidator
) -> Iterator[dict[str, str]]:
    with cli_environment(fake.handle) as (origin, environment):
        environment.update(HUBSPOT_API_KEY=fake.token, HUBSPOT_API_BASE_URL=origin)
        yield environment
    for request in fake.requests:
        sdk_validator.check(request)


def test_a_ready_account_is_all_ok(env: dict[str, str], fake: FakeHubspot) -> None:
    result = crmsync("check", "--crm", "hubspot", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not problems(result)
    assert "hubspot  ok       scopes: the token has crm.objects.contacts.write" in result.stdout
    for name in ("email", "phone", *SCRAPERSKY_PROPERTIES):
        assert f"ok       property {name}: exists" in result.stdout
    assert "rate limit: " in result.stdout and "of 625000 requests left today" in result.stdout
    assert fake.token not in result.stdout + result.stderr
    assert {r.method for r in fake.requests if r.url.path.startswith("/crm/")} == {"GET"}


def test_missing_property_and_missing_scope_are_problems(
    env: dict[str, str], fake: FakeHubspot
) -> None:
    fake.properties.discard("scrapersky_page_id")
    fake.scopes.discard("crm.objects.contacts.write")
    result = crmsync("check", "--crm", "hubspot", env=env)
    assert result.returncode == 1
    first, second = problems(result)
    assert "scopes: the token lacks crm.objects.contacts.write" in first
    assert "property scrapersky_page_id: missing" in second
    assert "crmsync hubspot setup" in second


def test_a_token_that_may_not_read_properties_says_which_scope(
    env: dict[str, str], fake: FakeHubspot
) -> None:
    fake.scopes.discard("crm.schemas.contacts.read")
    result = crmsync("check", "--crm", "hubspot", env=env)
    assert result.returncode == 1
    [problem] = problems(result)
    assert "credentials: HubSpot refused GET /crm/v3/properties/contacts (HTTP 403" in problem
    assert "MISSING_SCOPES" in problem and "the token lacks crm.schemas.contacts.read" in problem


def test_setup_creates_exactly_the_missing_properties_then_check_is_ok(
    env: dict[str, str], fake: FakeHubspot, sdk_validator: SdkValidator
) -> None:
    fake.properties = set(STANDARD_PROPERTIES) | {"scrapersky_page_id"}
    planned = crmsync("hubspot", "setup", "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr
    assert "/crm/v3/properties/contacts/batch/create" in planned.stdout
    assert fake.properties == set(STANDARD_PROPERTIES) | {"scrapersky_page_id"}

    created = crmsync("hubspot", "setup", env=env)
    assert created.returncode == 0, created.stderr
    assert sorted(
        line.split()[2].rstrip(":")
        for line in created.stdout.splitlines()
        if line.startswith("created")
    ) == ["scrapersky_domain_id", "scrapersky_sync_date"]
    assert fake.property_definitions["scrapersky_sync_date"]["type"] == "date"
    assert crmsync("check", "--crm", "hubspot", env=env).returncode == 0

    again = crmsync("hubspot", "create-properties", env=env)  # the old name still works
    assert again.returncode == 0
    assert again.stdout.rstrip().endswith("0 created, 3 left as they were")
    batch = [r for r in fake.requests if r.url.path.endswith("/batch/create")]
    assert len(batch) == 1
    sdk_validator.check(batch[0])
    assert type(sdk_validator.checked[-1]).__name__ == "BatchInputPropertyCreate"
