"""The crmsync adapter contract, run against the HubSpot adapter and its fake."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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

    def answer_with_item_errors(
        self, request: httpx.Request, errors: Mapping[str, str]
    ) -> httpx.Response:
        # HubSpot's 207: results for the accepted inputs, and an error per rejected input naming it by
        # the objectWriteTraceId it was sent with ("Multi-status errors" in HubSpot's documentation).
        results: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for index, item in enumerate(json.loads(request.content)["inputs"]):
            email = str(item["id"]).lower()
            if email in errors:
                failures.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": errors[email],
                        "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]},
                    }
                )
            else:
                results.append({"id": str(500 + index), "properties": {"email": email}})
        body = {"status": "COMPLETE", "results": results, "errors": failures}
        return httpx.Response(207 if failures else 200, json=body)

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
    assert SPEC.sandbox_factory() is make_sandbox
