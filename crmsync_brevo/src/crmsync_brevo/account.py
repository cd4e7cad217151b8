"""Is the Brevo account ready (``crmsync check``), and making it so (``crmsync brevo setup``).

Brevo creates a contact *without* the attributes the account does not have, silently (reported by
Brevo's SDK users, getbrevo/brevo-php issue 37), so a mapped attribute that is missing loses data
without any error. The check reads ``GET /contacts/attributes`` (Brevo reference "List all
attributes": ``{"attributes": [{"name", "category", "type", ...}]}``), which also proves that the API key
works and may read contacts: one request, counted in the ``/v3/contacts/*`` budget like the sync's own.
``BREVO_LIST_ID`` is read with ``GET /contacts/lists/{listId}`` (404 "List ID not found" when it does not
exist). The ``x-sib-ratelimit-*`` headers of the answer give the headroom left.

Setup creates each missing attribute with ``POST /contacts/attributes/normal/{attributeName}`` and
``{"type": "text"}`` (or ``"boolean"``), Brevo reference "Create contact attribute" (201, no body). It
never changes or deletes an attribute that exists, whatever its type.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext
from crmsync_core.check import CheckContext, CheckResult, SetupAction
from crmsync_core.errors import AuthenticationError, FatalError
from crmsync_core.http import CrmClient
from crmsync_core.ratelimit import Limiter
from crmsync_core.retry import RequestRetry

from .settings import BrevoSettings

#: the Brevo type each mapped field needs: crmsync sends text, and ``true``/``false`` for HAS_GMAIL
EXPECTED_TYPES = {
    "firstname": "text",
    "lastname": "text",
    "sms": "text",
    "domain_id": "text",
    "page_id": "text",
    "email_type": "text",
    "source_url": "text",
    "has_gmail": "boolean",
}
#: ``SMS`` is one of Brevo's contact identifiers rather than an ordinary attribute. UNCONFIRMED whether
#: every account lists it in ``GET /contacts/attributes``: when it is not listed, the check says so
#: without calling it a problem, and setup never tries to create it.
BUILT_IN = frozenset({"SMS"})
SETUP_HINT = "run `crmsync brevo setup` to create it"


def mapped_attributes(settings: BrevoSettings) -> dict[str, str]:
    """Attribute name -> the Brevo type it needs, for each field the settings map (empty names left out)."""
    names = {
        "firstname": settings.attribute_firstname,
        "lastname": settings.attribute_lastname,
        "sms": settings.attribute_sms,
        "domain_id": settings.attribute_domain_id,
        "page_id": settings.attribute_page_id,
        "email_type": settings.attribute_email_type,
        "source_url": settings.attribute_source_url,
        "has_gmail": settings.attribute_has_gmail,
    }
    return {name: EXPECTED_TYPES[role] for role, name in names.items() if name}


def _client(settings: BrevoSettings, context: AdapterContext) -> CrmClient:
    """The client a sync would use: same key, base URL, limits and messages."""
    from .adapter import BrevoAdapter

    return BrevoAdapter(settings, context).client


async def _attributes(client: CrmClient) -> tuple[dict[str, dict[str, Any]], httpx.Response]:
    response = await client.request("GET", "/contacts/attributes")
    if response.status_code != 200:
        raise FatalError(
            f"Brevo answered HTTP {response.status_code} on GET /contacts/attributes: "
            f"{client.body_snippet(response)}"
        )
    body = client.json(response)
    items = body.get("attributes") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise client.malformed(response, '{"attributes": [...]}')
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            found[item["name"].upper()] = item
    return found, response


def attribute_results(
    settings: BrevoSettings, existing: dict[str, dict[str, Any]]
) -> list[CheckResult]:
    """One result per mapped attribute: it exists with a type crmsync can write, or what to do."""
    results = []
    for name, wanted in mapped_attributes(settings).items():
        found = existing.get(name)
        label = f"attribute {name}"
        if found is None:
            if name in BUILT_IN:
                results.append(
                    CheckResult(label, "info", "not listed: Brevo's built-in phone identifier")
                )
                continue
            results.append(
                CheckResult(
                    label,
                    "problem",
                    "missing: Brevo drops it silently from every contact",
                    fix=f"{SETUP_HINT}, or set its BREVO_ATTRIBUTE_* name to '' to stop sending it",
                    field=name,
                )
            )
            continue
        kind = str(found.get("type") or found.get("category") or "?")
        if kind != wanted:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    f"has type {kind}, crmsync sends {wanted}",
                    fix=f"change or rename the attribute in Brevo (Contacts > Settings), or point "
                    f"its BREVO_ATTRIBUTE_* setting at a {wanted} attribute",
                    field=name,
                )
            )
        else:
            results.append(CheckResult(label, "ok", f"exists ({kind})"))
    return results


def _headroom(response: httpx.Response) -> CheckResult:
    limit = response.headers.get("x-sib-ratelimit-limit")
    remaining = response.headers.get("x-sib-ratelimit-remaining")
    reset = response.headers.get("x-sib-ratelimit-reset")
    if limit is None or remaining is None:
        return CheckResult("rate limit", "info", "Brevo did not report it on this answer")
    detail = f"{remaining} of {limit} requests left, window resets in {reset or '?'} s"
    try:
        spent = int(remaining) <= 0
    except ValueError:
        spent = False
    if spent:
        return CheckResult(
            "rate limit",
            "problem",
            detail,
            fix="another process is using the whole budget: wait, or lower its request rate",
        )
    return CheckResult("rate limit", "ok", detail)


async def check(settings: BrevoSettings, context: CheckContext) -> list[CheckResult]:
    """The Brevo part of ``crmsync check`` (see the module docstring); reads only."""
    adapter_context = AdapterContext(
        rate_limiter=context.rate_limiter,
        request_retry=context.request_retry,
        transport=context.transport,
        logger=context.logger,
    )
    async with _client(settings, adapter_context) as client:
        try:
            existing, response = await _attributes(client)
        except AuthenticationError as exc:
            return [CheckResult("credentials", "problem", exc.message)]
        if context.scope == "fields":
            return attribute_results(settings, existing)
        return [
            CheckResult("credentials", "ok", "the API key may read contacts"),
            *attribute_results(settings, existing),
            await _list_result(client, settings),
            _headroom(response),
        ]


async def _list_result(client: CrmClient, settings: BrevoSettings) -> CheckResult:
    list_id = settings.list_id
    if list_id is None:
        return CheckResult("list", "info", "BREVO_LIST_ID is empty: contacts join no list")
    response = await client.request("GET", f"/contacts/lists/{list_id}")
    if response.status_code == 200:
        body = client.json(response)
        name = body.get("name") if isinstance(body, dict) else None
        return CheckResult("list", "ok", f"list {list_id} exists ({name or 'unnamed'})")
    if response.status_code in (400, 404):
        return CheckResult(
            "list",
            "problem",
            f"list {list_id} does not exist (HTTP {response.status_code})",
            fix="set BREVO_LIST_ID to the id of an existing list (Brevo: Contacts > Lists), or "
            "leave it empty",
        )
    return CheckResult(
        "list",
        "problem",
        f"HTTP {response.status_code} on GET /contacts/lists/{list_id}: "
        f"{client.body_snippet(response)}",
    )


def create_request(name: str, kind: str) -> tuple[str, dict[str, Any]]:
    """The path (under the API base) and body that create the normal attribute ``name``."""
    return f"/contacts/attributes/normal/{name}", {"type": kind}


async def setup(
    settings: BrevoSettings,
    *,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    request_retry: RequestRetry | None = None,
) -> list[SetupAction]:
    """Create the mapped attributes the account lacks; never change or delete one that exists.

    With ``dry_run`` nothing is created: the actions say which requests would be sent.
    """
    context = AdapterContext(
        rate_limiter=Limiter(settings.rate_limit(None)),
        request_retry=request_retry or RequestRetry(),
        transport=transport,
    )
    actions: list[SetupAction] = []
    async with _client(settings, context) as client:
        existing, _ = await _attributes(client)
        for name, kind in mapped_attributes(settings).items():
            label = f"attribute {name}"
            found = existing.get(name)
            if found is not None:
                have = str(found.get("type") or found.get("category") or "?")
                if have == kind:
                    actions.append(SetupAction(label, "exists", have))
                else:
                    actions.append(
                        SetupAction(label, "kept", f"has type {have}, crmsync sends {kind}")
                    )
                continue
            if name in BUILT_IN:
                actions.append(SetupAction(label, "exists", "Brevo's built-in phone identifier"))
                continue
            path, body = create_request(name, kind)
            shown = f"POST {settings.api_base_url}{path} {json.dumps(body)}"
            if dry_run:
                actions.append(SetupAction(label, "would create", kind, request=shown))
                continue
            response = await client.request("POST", path, json=body)
            if response.status_code in (200, 201, 204):
                actions.append(SetupAction(label, "created", kind))
            elif response.status_code == 400 and "exist" in response.text.lower():
                # UNCONFIRMED: Brevo's answer when the attribute was created meanwhile.
                actions.append(SetupAction(label, "exists", "created meanwhile"))
            else:
                raise FatalError(
                    f"Brevo did not create the attribute {name} (HTTP {response.status_code}): "
                    f"{client.body_snippet(response)}"
                )
    return actions
