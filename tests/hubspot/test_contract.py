"""The crmsync adapter contract, run against the HubSpot adapter and its fake."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.testing.contract import AdapterContract
from crmsync_hubspot import SPEC, make_sandbox


class TestHubspotContract(AdapterContract):
    spec = SPEC

    def contacts_in_request(self, request: httpx.Request) -> int:
        return len(json.loads(request.content)["inputs"])

    @pytest.fixture
    def sandbox(
        self, validated: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]
    ) -> Sandbox[Any]:
        # The kit's sandbox, with every body the adapter sends checked against HubSpot's SDK.
        sandbox = make_sandbox(SandboxOptions())
        sandbox.transport = validated(sandbox.transport)
        return sandbox

    credentials_setting = "HUBSPOT_API_KEY"


def test_the_spec_builds_the_sandbox() -> None:
    assert SPEC.sandbox is make_sandbox
