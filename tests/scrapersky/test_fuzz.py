"""The router's OpenAPI schema, fuzzed with schemathesis: no input, valid or not, makes it fail (no
500), and every answer matches the schema; on ScraperSky's table through both drivers."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from crmsync_core import Registry

pytestmark = pytest.mark.postgres

TOKEN = "fuzz-token"
OPERATIONS = [
    ("POST", "/api/v3/contacts/{crm}/sync/batch"),
    ("POST", "/api/v3/contacts/{crm}/sync/filtered"),
    ("GET", "/api/v3/contacts/{crm}/status/summary"),
    ("PUT", "/api/v3/contacts/crm/select"),
    ("POST", "/api/v3/contacts/{crm}/sync/confirm"),
]


@pytest.fixture
def api_schema(
    scrapersky_url: str, registry: Registry, example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> Any:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    # The sandbox adapters read SANDBOX_*: confirmed delivery on, so the callback is fuzzed past its
    # secret (the same token).
    monkeypatch.setenv("SANDBOX_SYNC_CONFIRM", "true")
    monkeypatch.setenv("SANDBOX_SYNC_CALLBACK_SECRET", TOKEN)
    app = example.create_app(scrapersky_url, registry=registry)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_schema_lists_every_endpoint(api_schema: Any) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}

    # GET .../{crm}/check asks the CRM itself (no network here): tests/core/test_check.py covers it.
    assert listed == {*OPERATIONS, ("GET", "/api/v3/contacts/{crm}/check")}


# (schemathesis.pytest.from_fixture does not run under pytest 9: the strategies are driven directly.)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_makes_the_api_fail(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

    call()
