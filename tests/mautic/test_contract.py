"""The core's adapter contract, run against the Mautic adapter with each of its auth modes."""

from __future__ import annotations

import json
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

    @pytest.fixture(params=["oauth2", "basic"])
    def sandbox(self, request: pytest.FixtureRequest) -> Sandbox[Any]:
        sandbox = SPEC.sandbox(SandboxOptions()) if SPEC.sandbox else None
        assert sandbox is not None
        if request.param == "basic":
            fake = sandbox.fake
            sandbox.settings = MauticSettings(
                base_url="https://mautic.example.com/api/",
                username=fake.username,
                password=SecretStr(fake.password),
            )
        return sandbox

    credentials_setting = "MAUTIC_"
