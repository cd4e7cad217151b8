"""`crmsync check` for n8n through the console script: the OPTIONS probe tells an active production
webhook from an unregistered one without running the workflow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync_n8n import FakeN8n

from ..conftest import CliEnvironment

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
SECRET = "n8n-check-secret-0123"


def crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def fake() -> FakeN8n:
    return FakeN8n.with_bearer(SECRET)


@pytest.fixture
def env(fake: FakeN8n, cli_environment: CliEnvironment) -> Iterator[dict[str, str]]:
    with cli_environment(fake.handle) as (origin, environment):
        environment.update(
            N8N_WEBHOOK_URL=f"{origin}/webhook/{fake.path}", N8N_WEBHOOK_SECRET=SECRET
        )
        yield environment


def test_an_active_workflow_is_ok_and_never_runs(env: dict[str, str], fake: FakeN8n) -> None:
    result = crmsync("check", "--crm", "n8n", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "n8n  ok       webhook: registered for POST: the workflow is active" in result.stdout
    assert "credentials: not checkable without running the workflow" in result.stdout
    assert fake.received == [] and fake.contacts == {}
    assert SECRET not in result.stdout + result.stderr


def test_an_inactive_workflow_is_a_problem(env: dict[str, str], fake: FakeN8n) -> None:
    fake.active = False
    result = crmsync("check", "--crm", "n8n", env=env)
    assert result.returncode == 1
    [problem] = [line for line in result.stdout.splitlines() if " PROBLEM " in line]
    assert "webhook: no active workflow listens for POST at this URL" in problem
    assert "activate the workflow" in problem
    assert fake.received == []


def test_a_test_url_is_a_problem(env: dict[str, str], fake: FakeN8n) -> None:
    env["N8N_WEBHOOK_URL"] = env["N8N_WEBHOOK_URL"].replace("/webhook/", "/webhook-test/")
    result = crmsync("check", "--crm", "n8n", env=env)
    assert result.returncode == 1
    assert "N8N_WEBHOOK_URL is a test URL" in result.stdout
