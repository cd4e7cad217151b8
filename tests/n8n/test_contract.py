"""The core's adapter contract, in both payload modes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx

from crmsync_core.adapter import AdapterSpec, Sandbox, SandboxOptions
from crmsync_core.testing.contract import AdapterContract
from crmsync_n8n import SPEC, N8nSettings, make_sandbox


class _N8nContract(AdapterContract):
    # A webhook's 2xx is acceptance: n8n answers before (or whatever) the workflow does.
    checks_response_body = False

    credentials_setting = "N8N_WEBHOOK_SECRET"
    # Every row is its own delivery: the workflow decides what a repeated e-mail means.
    sends_duplicates = True

    def contacts_in_request(self, request: httpx.Request) -> int:
        return 1


class TestN8nContract(_N8nContract):
    """One JSON object per contact, as ScraperSky sends it."""

    spec = SPEC


def _batch_sandbox(options: SandboxOptions) -> Sandbox[N8nSettings]:
    sandbox = make_sandbox(options)
    sandbox.settings = sandbox.settings.model_copy(update={"array_batch_size": 20})
    return sandbox


BATCH_SPEC: AdapterSpec[Any] = dataclasses.replace(SPEC, sandbox=_batch_sandbox)


class TestN8nBatchModeContract(_N8nContract):
    """The opt-in batch mode: JSON arrays of up to ``N8N_ARRAY_BATCH_SIZE`` contacts."""

    spec = BATCH_SPEC
    # The webhook answers for the whole array.
    per_item_outcomes = False

    def contacts_in_request(self, request: httpx.Request) -> int:
        body = json.loads(request.content)
        assert isinstance(body, list), "batch mode posts arrays"
        return len(body)
