"""The core's adapter contract, run against the Mautic adapter with each of its auth modes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.testing.contract import AdapterContract
from crmsync_mautic import SPEC, MauticSettings


class TestMauticContract(AdapterContract):
    spec = SPEC

    def contacts_in_request(self, request: httpx.Request) -> int:
        if request.url.path.endswith("/oauth/v2/token"):
            return 0
        return len(json.loads(request.content))

    def answer_with_item_errors(
        self, request: httpx.Request, errors: Mapping[str, str]
    ) -> httpx.Response:
        # Mautic's batch answer: 201 for the batch, each contact's own code under statusCodes, keyed
        # by request index (PHP serialises a sparse array as an object).
        codes: dict[str, int] = {}
        records: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for index, item in enumerate(json.loads(request.content)):
            email = str(item["email"]).lower()
            if email in errors:
                codes[str(index)] = 422
                failures[str(index)] = {"code": 422, "message": errors[email], "details": {}}
            else:
                codes[str(index)] = 201
                records[str(index)] = {"id": 900 + index, "fields": {"all": {"email": email}}}
        return httpx.Response(
            201, json={"contacts": records, "statusCodes": codes, "errors": failures}
        )

    def small_requests(self, settings: MauticSettings) -> MauticSettings:
        return settings.model_copy(update={"api_batch_max_limit": 2})

    @pytest.fixture(params=["oauth2", "basic"])
    def sandbox(self, request: pytest.FixtureRequest) -> Sandbox[Any]:
        sandbox = SPEC.make_sandbox(SandboxOptions())
        if request.param == "basic":
            fake = sandbox.fake
            sandbox.settings = MauticSettings(
                base_url="https://mautic.example.com/api/",
                username=fake.username,
                password=SecretStr(fake.password),
            )
        return sandbox

    credentials_setting = "MAUTIC_"
