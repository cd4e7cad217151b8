"""`crmsync hubspot create-properties`: the custom properties a first sync needs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import click
import httpx
import pytest
import respx
from click.testing import CliRunner
from pydantic import SecretStr

from crmsync_core.adapter import AdapterContext
from crmsync_core.contacts import Contact, Synced
from crmsync_core.errors import AuthenticationError
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_hubspot import (
    FakeHubspot,
    HubspotAdapter,
    HubspotSettings,
    PropertyStatus,
    create_properties,
    plugin,
)
from crmsync_hubspot.fake import BASE_URL, STANDARD_PROPERTIES

Wrap = Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]


@pytest.fixture
def bare_account() -> FakeHubspot:
    """An account with HubSpot's standard properties only."""
    return FakeHubspot(properties=set(STANDARD_PROPERTIES))


async def test_creates_the_missing_properties_then_the_sync_works(
    bare_account: FakeHubspot, validated: Wrap
) -> None:
    bare_account.properties.add("scrapersky_page_id")
    settings = HubspotSettings(api_key=SecretStr(bare_account.token), api_base_url=BASE_URL)
    transport = validated(bare_account.transport())

    statuses = await create_properties(settings, transport=transport, request_retry=NO_WAIT)

    assert statuses == [
        PropertyStatus("scrapersky_domain_id", "created"),
        PropertyStatus("scrapersky_page_id", "exists"),
        PropertyStatus("scrapersky_sync_date", "created"),
    ]
    created = bare_account.property_definitions
    assert created["scrapersky_sync_date"]["type"] == "date"
    assert created["scrapersky_domain_id"]["groupName"] == "contactinformation"
    assert await create_properties(settings, transport=transport) == [
        PropertyStatus(name, "exists")
        for name in ("scrapersky_domain_id", "scrapersky_page_id", "scrapersky_sync_date")
    ]

    adapter = HubspotAdapter(settings, AdapterContext.for_testing(transport))
    try:
        [outcome] = await adapter.push(
            [Contact(id=1, email="a@example.com", domain_id=uuid.uuid4(), page_id=uuid.uuid4())]
        )
    finally:
        await adapter.aclose()
    assert isinstance(outcome, Synced)


async def test_renamed_properties_are_the_ones_created(
    bare_account: FakeHubspot, validated: Wrap
) -> None:
    settings = HubspotSettings(
        api_key=SecretStr(bare_account.token),
        api_base_url=BASE_URL,
        custom_property_domain_id="acme_domain",
        custom_property_page_id="",
        custom_property_sync_date="acme_synced_on",
    )
    statuses = await create_properties(settings, transport=validated(bare_account.transport()))
    assert [s.name for s in statuses] == ["acme_domain", "acme_synced_on"]
    assert {"acme_domain", "acme_synced_on"} <= bare_account.properties


async def test_a_token_without_the_schema_scope_says_so(bare_account: FakeHubspot) -> None:
    bare_account.fail_next(403, body={"status": "error", "category": "MISSING_SCOPES"})
    settings = HubspotSettings(api_key=SecretStr(bare_account.token), api_base_url=BASE_URL)
    with pytest.raises(AuthenticationError, match=r"crm\.schemas\.contacts\.write"):
        await create_properties(settings, transport=bare_account.transport())


def cli_with_plugin() -> click.Group:
    @click.group()
    def cli() -> None:
        """A stand-in for the crmsync command line."""

    Registry(load_entry_points=False, plugins=[plugin]).hook.register_commands(cli=cli)
    return cli


def test_the_cli_command_creates_the_properties(
    bare_account: FakeHubspot, monkeypatch: pytest.MonkeyPatch, sdk_validator: Any
) -> None:
    monkeypatch.setenv("HUBSPOT_API_KEY", bare_account.token)
    monkeypatch.setenv("HUBSPOT_API_BASE_URL", BASE_URL)
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:

        async def checked(request: httpx.Request) -> httpx.Response:
            sdk_validator.check(request)
            return await bare_account.handle(request)

        router.route().mock(side_effect=checked)
        result = CliRunner().invoke(cli_with_plugin(), ["hubspot", "create-properties"])
    assert result.exit_code == 0, result.output
    created = [
        line.split()[:3] for line in result.output.splitlines() if line.startswith("created")
    ]
    assert created == [
        ["created", "property", "scrapersky_domain_id:"],
        ["created", "property", "scrapersky_page_id:"],
        ["created", "property", "scrapersky_sync_date:"],
    ]
    assert result.output.rstrip().endswith("3 created, 0 left as they were")
    # `create-properties` is now `crmsync hubspot setup`: one batch create
    [batch] = sdk_validator.checked
    assert type(batch).__name__ == "BatchInputPropertyCreate"


def test_the_cli_command_reports_a_missing_token_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HUBSPOT_API_KEY", raising=False)
    result = CliRunner().invoke(cli_with_plugin(), ["hubspot", "create-properties"])
    assert result.exit_code == 1
    assert "HUBSPOT_API_KEY" in result.output
    assert "Traceback" not in result.output
