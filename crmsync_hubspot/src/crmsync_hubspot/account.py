"""Is the HubSpot account ready (``crmsync check``), and making it so (``crmsync hubspot setup``).

* Properties: ``GET /crm/v3/properties/contacts`` lists every contact property with its ``type`` (HubSpot
  reference "Properties API: read all properties"; scope ``crm.schemas.contacts.read``). One request
  proves the token and says whether each property the adapter writes exists: a batch that sets a missing
  one is refused as a whole (400 ``PROPERTY_DOESNT_EXIST``).
* Scopes: a private app's token can be asked for its scopes with
  ``POST /oauth/v2/private-apps/get/access-token-info`` and ``{"tokenKey": <token>}`` (HubSpot "Private
  apps" guide); the sync needs ``crm.objects.contacts.write``, setup ``crm.schemas.contacts.write``. It is
  a read: nothing is written to find out.
* Headroom: the ``X-HubSpot-RateLimit-*`` headers of the answer (``-Remaining`` of ``-Max`` per interval,
  ``-Daily-Remaining`` of ``-Daily``).

Setup creates the missing custom properties in one ``POST /crm/v3/properties/contacts/batch/create``
(``{"inputs": [PropertyCreate, ...]}``, HubSpot reference "batch create properties"); it never changes
or archives a property that exists.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext
from crmsync_core.check import CheckContext, CheckResult, SetupAction
from crmsync_core.errors import (
    AuthenticationError,
    ConfigurationError,
    FatalError,
    RateLimitExhaustedError,
)
from crmsync_core.http import CrmClient
from crmsync_core.ratelimit import Limiter
from crmsync_core.retry import RequestRetry

from .properties import property_definition
from .settings import HubspotSettings

TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"  # noqa: S105 (a path)
WRITE_SCOPE = "crm.objects.contacts.write"
SCHEMA_WRITE_SCOPE = "crm.schemas.contacts.write"
#: HubSpot's own properties the adapter writes (they exist in every account)
STANDARD = ("email", "firstname", "lastname", "phone")
#: the HubSpot types that take what crmsync sends to each custom property
COMPATIBLE = {
    "domain_id": ("string",),
    "page_id": ("string",),
    # a YYYY-MM-DD value: HubSpot's date type, or text
    "sync_date": ("date", "string"),
}
SETUP_HINT = "run `crmsync hubspot setup` to create it"


def _inspect(response: httpx.Response) -> None:
    """Name the scope a 403 ``MISSING_SCOPES`` asks for; stop on the daily limit rather than wait
    for it (it resets at the account's midnight)."""
    from .adapter import _int_header, _policy

    if response.status_code == 403:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("category") == "MISSING_SCOPES":
            scopes = sorted(
                {
                    str(scope)
                    for error in body.get("errors") or []
                    if isinstance(error, dict)
                    for scope in (error.get("context") or {}).get("requiredGranularScopes") or []
                }
            )
            where = f"{response.request.method} {response.request.url.path}"
            raise AuthenticationError(
                f"HubSpot refused {where} (HTTP 403 MISSING_SCOPES): the token lacks "
                f"{', '.join(scopes) or 'a required scope'}; add it to the private app and use "
                "its new token"
            )
    if response.status_code == 429 and (
        _policy(response) == "DAILY"
        or _int_header(response, "x-hubspot-ratelimit-daily-remaining") == 0
    ):
        raise RateLimitExhaustedError(
            "HubSpot's daily API limit is used up; it resets at midnight in the account's time zone",
            resume_after=3600.0,
        )


def _client(settings: HubspotSettings, context: AdapterContext) -> tuple[CrmClient, str]:
    token = settings.api_key.get_secret_value().strip() if settings.api_key else ""
    if not token:
        raise ConfigurationError("HUBSPOT_API_KEY is not set: use a private app's access token")
    client = CrmClient(
        context,
        crm="hubspot",
        base_url=settings.api_base_url,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        secrets=[token],
        auth_hint=(
            "set HUBSPOT_API_KEY to the access token of a private app with the "
            "crm.objects.contacts.write and crm.schemas.contacts.read scopes (and "
            "crm.schemas.contacts.write for `crmsync hubspot setup`)"
        ),
        timeout=settings.timeout_seconds,
        inspect=_inspect,
    )
    return client, token


async def _properties(
    client: CrmClient, settings: HubspotSettings
) -> tuple[dict[str, dict[str, Any]], httpx.Response]:
    path = settings.properties_path
    response = await client.request("GET", path)
    if response.status_code != 200:
        raise FatalError(
            f"HubSpot answered HTTP {response.status_code} on GET {path}: "
            f"{client.body_snippet(response)}"
        )
    body = client.json(response)
    items = body.get("results") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise client.malformed(response, '{"results": [...]}')
    found = {
        item["name"]: item
        for item in items
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    return found, response


def property_results(
    settings: HubspotSettings, existing: dict[str, dict[str, Any]]
) -> list[CheckResult]:
    """One result per property the adapter writes."""
    wanted: list[tuple[str, tuple[str, ...]]] = [(name, ("string",)) for name in STANDARD]
    wanted += [(name, COMPATIBLE[role]) for role, name in settings.custom_properties().items()]
    results = []
    for name, types in wanted:
        label = f"property {name}"
        found = existing.get(name)
        if found is None:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    "missing: HubSpot refuses every batch that sets it",
                    fix=SETUP_HINT
                    if name not in STANDARD
                    else "restore HubSpot's standard property",
                    field=name,
                )
            )
        elif str(found.get("type")) not in types:
            results.append(
                CheckResult(
                    label,
                    "problem",
                    f"has type {found.get('type')}, crmsync needs {' or '.join(types)}",
                    fix="point its HUBSPOT_CUSTOM_PROPERTY_* setting at a property of that type",
                    field=name,
                )
            )
        else:
            results.append(CheckResult(label, "ok", f"exists ({found.get('type')})"))
    return results


async def _scopes(client: CrmClient, token: str) -> list[CheckResult]:
    try:
        response = await client.request("POST", TOKEN_INFO_PATH, json={"tokenKey": token})
    except AuthenticationError:
        response = None
    body = client.json(response) if response is not None and response.status_code == 200 else None
    scopes = body.get("scopes") if isinstance(body, dict) else None
    if not isinstance(scopes, list):
        return [
            CheckResult(
                "scopes",
                "info",
                "HubSpot did not list the token's scopes (not a private app token?): "
                f"make sure it has {WRITE_SCOPE}",
            )
        ]
    results = []
    if WRITE_SCOPE in scopes:
        results.append(CheckResult("scopes", "ok", f"the token has {WRITE_SCOPE}"))
    else:
        results.append(
            CheckResult(
                "scopes",
                "problem",
                f"the token lacks {WRITE_SCOPE}: every sync request would be refused (403)",
                fix=f"add the {WRITE_SCOPE} scope to the private app and use its new token",
            )
        )
    if SCHEMA_WRITE_SCOPE not in scopes:
        results.append(
            CheckResult(
                "setup scope",
                "info",
                f"the token lacks {SCHEMA_WRITE_SCOPE}: `crmsync hubspot setup` cannot create "
                "properties with it (the sync does not need it)",
            )
        )
    return results


def _headroom(response: httpx.Response) -> CheckResult:
    headers = response.headers
    parts = []
    spent = False
    for label, remaining_name, total_name in (
        ("per interval", "x-hubspot-ratelimit-remaining", "x-hubspot-ratelimit-max"),
        ("today", "x-hubspot-ratelimit-daily-remaining", "x-hubspot-ratelimit-daily"),
    ):
        remaining, total = headers.get(remaining_name), headers.get(total_name)
        if remaining is None or total is None:
            continue
        parts.append(f"{remaining} of {total} requests left {label}")
        spent = spent or remaining.strip() == "0"
    if not parts:
        return CheckResult("rate limit", "info", "HubSpot did not report it on this answer")
    if spent:
        return CheckResult(
            "rate limit",
            "problem",
            "; ".join(parts),
            fix="the private app's budget is used up: wait for it to reset (the daily one at the "
            "account's midnight)",
        )
    return CheckResult("rate limit", "ok", "; ".join(parts))


async def check(settings: HubspotSettings, context: CheckContext) -> list[CheckResult]:
    """The HubSpot part of ``crmsync check`` (see the module docstring); reads only."""
    adapter_context = AdapterContext(
        rate_limiter=context.rate_limiter,
        request_retry=context.request_retry,
        transport=context.transport,
        logger=context.logger,
    )
    client, token = _client(settings, adapter_context)
    async with client:
        try:
            existing, response = await _properties(client, settings)
        except AuthenticationError as exc:
            return [CheckResult("credentials", "problem", exc.message)]
        except RateLimitExhaustedError as exc:
            return [CheckResult("rate limit", "problem", exc.message, fix="wait until it resets")]
        if context.scope == "fields":
            return property_results(settings, existing)
        return [
            CheckResult("credentials", "ok", "the token may read contact properties"),
            *await _scopes(client, token),
            *property_results(settings, existing),
            _headroom(response),
        ]


async def setup(
    settings: HubspotSettings,
    *,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    request_retry: RequestRetry | None = None,
) -> list[SetupAction]:
    """Create the custom properties the account lacks in one batch; never change existing ones."""
    context = AdapterContext(
        rate_limiter=Limiter(settings.rate_limit(None)),
        request_retry=request_retry or RequestRetry(),
        transport=transport,
    )
    client, _ = _client(settings, context)
    actions: list[SetupAction] = []
    inputs: list[dict[str, Any]] = []
    async with client:
        try:
            existing, _ = await _properties(client, settings)
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"{exc.message} (setup needs the crm.schemas.contacts.read and "
                "crm.schemas.contacts.write scopes)"
            ) from None
        for role, name in settings.custom_properties().items():
            label = f"property {name}"
            found = existing.get(name)
            if found is None:
                inputs.append(property_definition(role, name, settings.property_group))
            elif str(found.get("type")) in COMPATIBLE[role]:
                actions.append(SetupAction(label, "exists", str(found.get("type"))))
            else:
                wanted = " or ".join(COMPATIBLE[role])
                actions.append(
                    SetupAction(
                        label, "kept", f"has type {found.get('type')}, crmsync needs {wanted}"
                    )
                )
        if not inputs:
            return actions
        path = f"{settings.properties_path}/batch/create"
        body = {"inputs": inputs}
        if dry_run:
            request = f"POST {settings.api_base_url}{path} {json.dumps(body)}"
            actions += [
                SetupAction(f"property {i['name']}", "would create", i["type"]) for i in inputs
            ]
            actions[-1] = SetupAction(
                actions[-1].name, "would create", actions[-1].detail, request=request
            )
            return actions
        response = await client.request("POST", path, json=body)
        if response.status_code not in (200, 201, 207):
            raise FatalError(
                f"HubSpot did not create the contact properties (HTTP {response.status_code} on "
                f"POST {path}): {client.body_snippet(response)}"
            )
        answer = client.json(response)
        created = {
            r.get("name")
            for r in (answer.get("results") if isinstance(answer, dict) else None) or []
            if isinstance(r, dict)
        }
        for item in inputs:
            label = f"property {item['name']}"
            if item["name"] in created:
                actions.append(SetupAction(label, "created", item["type"]))
            else:
                raise FatalError(
                    f"HubSpot did not create the contact property {item['name']!r}: "
                    f"{client.body_snippet(response)}"
                )
    return actions
