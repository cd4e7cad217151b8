"""The core's adapter contract, run against the Brevo adapter in both of its modes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx

from crmsync_brevo import SPEC, BrevoSettings, make_sandbox
from crmsync_core.adapter import AdapterSpec, Sandbox, SandboxOptions
from crmsync_core.testing.contract import AdapterContract


class _BrevoContract(AdapterContract):
    def contacts_in_request(self, request: httpx.Request) -> int:
        if request.url.path.endswith("/contacts/import"):
            return len(json.loads(request.content)["jsonBody"])
        return 1 if request.method == "POST" else 0

    credentials_setting = "BREVO_API_KEY"


class TestBrevoContract(_BrevoContract):
    """With a list: batches above the threshold go through ``POST /contacts/import``."""

    spec = SPEC


def _no_list_sandbox(options: SandboxOptions) -> Sandbox[BrevoSettings]:
    sandbox = make_sandbox(options)
    sandbox.settings = sandbox.settings.model_copy(update={"list_id": None})
    return sandbox


# A smaller batch: the kit pushes max_batch_size contacts, which here means as many single requests,
# each validated against Brevo's spec. The mode, not the size, is what this class covers.
NO_LIST_SPEC: AdapterSpec[Any] = dataclasses.replace(
    SPEC, sandbox=_no_list_sandbox, max_batch_size=200
)


class TestBrevoWithoutListContract(_BrevoContract):
    """Without ``BREVO_LIST_ID``: every batch goes contact by contact (``POST /contacts``)."""

    spec = NO_LIST_SPEC
