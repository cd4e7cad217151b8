"""Is the Mautic installation ready (``crmsync check``), and making it so (``crmsync mautic setup``).

* Fields: ``GET /api/fields/contact`` lists the contact fields (Mautic developer docs "Fields: list
  available fields": ``{"total": n, "fields": [{"alias", "type", "isPublished", ...}]}``, paged with
  ``start`` and ``limit``). It is signed in like the sync, so it also proves the API is enabled, the
  credentials work and the user may read fields.
* Headroom: ``X-RateLimit-Remaining`` of ``X-RateLimit-Limit``, when the administrator enabled Mautic's
  API rate limiter.

Setup creates each missing custom field (``MAUTIC_FIELD_ALIASES``) with ``POST /api/fields/contact/new``
(Mautic developer docs "Fields: create field": ``label``, ``alias``, ``type``, ``object: "lead"``; 201
``{"field": {...}}``). It never changes or deletes a field that exists.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext
from crmsync_core.check import CheckContext, CheckResult, SetupAction
from crmsync_core.errors import FatalError
from crmsync_core.ratelimit import Limiter
from crmsync_core.retry import RequestRetry

from .settings import MauticSettings

FIELDS_PATH = "/api/fields/contact"
PAGE = 200
#: Mautic's own fields the adapter writes, with the types that take what it sends
CORE_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "firstname": ("text",),
    "lastname": ("text",),
    "phone": ("tel", "text"),
}
#: for each contact field a custom alias can hold: the types that take its value (first: created)
CUSTOM_TYPES: dict[str, tuple[str, ...]] = {
    "email_type": ("text", "select"),
    "has_gmail": ("boolean",),
    "source_url": ("url", "text"),
    "domain_id": ("text",),
    "page_id": ("text",),
    "context": ("textarea", "text"),
}
LABELS = {
    "email_type": "Email type",
    "has_gmail": "Has Gmail",
    "source_url": "Source URL",
    "domain_id": "ScraperSky domain ID",
    "page_id": "ScraperSky page ID",
    "context": "Context",
}


def api_root(base_url: str) -> str:
    from .adapter import api_root as root

    return root(base_url)


def _adapter(settings: MauticSettings, context: AdapterContext) -> Any:
    from .adapter import MauticAdapter

    return MauticAdapter(settings, context)


async def _fields(adapter: Any) -> tuple[dict[str, dict[str, Any]], httpx.Response]:
    found: dict[str, dict[str, Any]] = {}
    start = 0
    while True:
        response = await adapter.api("GET", FIELDS_PATH, params={"start": start, "limit": PAGE})
        if response.status_code != 200:
            raise FatalError(
                f"mautic answered HTTP {response.status_code} on GET {FIELDS_PATH}: "
                f"{adapter.client.body_snippet(response)}"
            )
        body = adapter.client.json(response)
        items = body.get("fields") if isinstance(body, dict) else None
        if isinstance(items, dict):  # PHP may serialise the list as an object keyed by id
            items = list(items.values())
        if not isinstance(items, list):
            raise adapter.client.malformed(response, '{"fields": [...]}')
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("alias"), str):
                found[item["alias"]] = item
        total = body.get("total") if isinstance(body, dict) else None
        start += len(items)
        if not items or not isinstance(total, int) or start >= total:
            return found, response


def wanted_fields(settings: MauticSettings) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(alias, contact field or ``None`` for Mautic's core fields, compatible types)."""
    wanted: list[tuple[str, str | None, tuple[str, ...]]] = [
        (alias, None, types) for alias, types in CORE_FIELDS.items()
    ]
    wanted += [
        (alias, field, CUSTOM_TYPES[field]) for field, alias in settings.field_aliases.items()
    ]
    return wanted


def field_results(
    settings: MauticSettings, existing: dict[str, dict[str, Any]]
) -> list[CheckResult]:
    results = []
    for alias, source, types in wanted_fields(settings):
        label = f"field {alias}"
        found = existing.get(alias)
        if found is None:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    "missing: Mautic ignores the value crmsync sends to it",
                    fix="run `crmsync mautic setup` to create it"
                    if source
                    else "restore Mautic's core field",
                    field=alias,
                )
            )
        elif str(found.get("type")) not in types:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    f"has type {found.get('type')}, crmsync needs {' or '.join(types)}",
                    fix="point MAUTIC_FIELD_ALIASES at a field of that type",
                    field=alias,
                )
            )
        elif found.get("isPublished") is False:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    "exists but is unpublished: Mautic does not save it",
                    fix="publish it in Mautic (Settings > Custom Fields)",
                    field=alias,
                )
            )
        else:
            results.append(CheckResult(label, "ok", f"exists ({found.get('type')})"))
    return results


def _headroom(response: httpx.Response) -> CheckResult:
    remaining = response.headers.get("x-ratelimit-remaining")
    limit = response.headers.get("x-ratelimit-limit")
    if remaining is None or limit is None:
        return CheckResult("rate limit", "info", "not reported: Mautic's API rate limit is off")
    detail = f"{remaining} of {limit} requests left in this window"
    if remaining.strip() == "0":
        return CheckResult(
            "rate limit", "problem", detail, fix="wait for the window to reset, or raise the limit"
        )
    return CheckResult("rate limit", "ok", detail)


async def check(settings: MauticSettings, context: CheckContext) -> list[CheckResult]:
    """The Mautic part of ``crmsync check`` (see the module docstring); reads only."""
    adapter = _adapter(
        settings,
        AdapterContext(
            rate_limiter=context.rate_limiter,
            request_retry=context.request_retry,
            transport=context.transport,
            logger=context.logger,
        ),
    )
    try:
        try:
            existing, response = await _fields(adapter)
        except FatalError as exc:
            return [CheckResult("credentials", "problem", exc.message)]
        if context.scope == "fields":
            return field_results(settings, existing)
        return [
            CheckResult("credentials", "ok", "signed in; the API is enabled and may read fields"),
            *field_results(settings, existing),
            _headroom(response),
        ]
    finally:
        await adapter.aclose()


def field_definition(source: str, alias: str) -> dict[str, Any]:
    """The body of ``POST /api/fields/contact/new`` for the custom field ``alias`` holding ``source``."""
    body: dict[str, Any] = {
        "label": LABELS[source],
        "alias": alias,
        "type": CUSTOM_TYPES[source][0],
        "object": "lead",
        "group": "core",
        "isPublished": True,
    }
    if body["type"] == "boolean":
        # Mautic's boolean fields need the labels of their two values.
        body["properties"] = {"no": "No", "yes": "Yes"}
    return body


async def setup(
    settings: MauticSettings,
    *,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    request_retry: RequestRetry | None = None,
) -> list[SetupAction]:
    """Create the custom fields ``MAUTIC_FIELD_ALIASES`` names where Mautic lacks them."""
    adapter = _adapter(
        settings,
        AdapterContext(
            rate_limiter=Limiter(settings.rate_limit(None)),
            request_retry=request_retry or RequestRetry(),
            transport=transport,
        ),
    )
    actions: list[SetupAction] = []
    try:
        existing, _ = await _fields(adapter)
        for source, alias in settings.field_aliases.items():
            label = f"field {alias}"
            found = existing.get(alias)
            if found is not None:
                have = str(found.get("type"))
                if have in CUSTOM_TYPES[source]:
                    actions.append(SetupAction(label, "exists", have))
                else:
                    wanted = " or ".join(CUSTOM_TYPES[source])
                    actions.append(
                        SetupAction(label, "kept", f"has type {have}, crmsync needs {wanted}")
                    )
                continue
            body = field_definition(source, alias)
            if dry_run:
                request = (
                    f"POST {api_root(settings.base_url or '')}{FIELDS_PATH}/new {json.dumps(body)}"
                )
                actions.append(SetupAction(label, "would create", body["type"], request=request))
                continue
            response = await adapter.api("POST", f"{FIELDS_PATH}/new", body)
            if response.status_code not in (200, 201):
                raise FatalError(
                    f"mautic did not create the field {alias!r} (HTTP {response.status_code}): "
                    f"{adapter.client.body_snippet(response)}"
                )
            actions.append(SetupAction(label, "created", body["type"]))
    finally:
        await adapter.aclose()
    return actions
