"""The HubSpot adapter: one batch upsert by e-mail per 100 contacts.

``POST /crm/v3/objects/contacts/batch/upsert`` creates or updates up to 100 contacts, identified by
their e-mail. What comes back decides each contact's outcome:

* 200 / 207: each result is matched to its input by e-mail; each 207 error is matched by what it names
  (see :func:`_error_names`), and a failure HubSpot does not attribute is narrowed down by bisection;
* 400 (or 409, 413, 422) rejects the whole batch because of some of its inputs: the batch is split in
  halves until the bad inputs are alone, so the good ones sync and each bad one fails with HubSpot's
  message. An unknown property (``PROPERTY_DOESNT_EXIST``) is not the contact's fault: it stops the run;
* 429 ``DAILY`` stops the run until midnight in the account's time zone (the contacts stay queued);
  other 429s are waited out; 401/403 stop the run; 5xx and timeouts are transient (:mod:`crmsync_core.http`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.contacts import Contact, Outcome, PermanentFailure, Synced, TransientFailure
from crmsync_core.errors import (
    ConfigurationError,
    FatalError,
    RateLimitExhaustedError,
    TransientError,
)
from crmsync_core.http import CrmClient
from crmsync_core.ratelimit import RateLimit

from .fake import make_sandbox
from .mapping import MAX_INPUTS, UpsertInput, build_inputs, request_body
from .ratelimit import RollingWindow
from .settings import HubspotSettings

#: HubSpot's budget on Free and Starter accounts; Professional and Enterprise get 190
#: (``HUBSPOT_SYNC_RATE_LIMIT_REQUESTS=190``, ``HUBSPOT_SYNC_RATE_LIMIT_PERIOD_SECONDS=10``).
DEFAULT_RATE_LIMIT = RateLimit(100, 10.0)
#: statuses with which HubSpot rejects a whole batch because of what some inputs hold
_BATCH_REJECTED = frozenset({400, 409, 413, 422})
_TRANSIENT_CATEGORIES = ("RATE_LIMIT", "TIMEOUT", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE")
_MISSING_PROPERTY = re.compile(r"Property \\?\"([^\"\\]+)\\?\" does not exist")
_AUTH_HINT = (
    "set HUBSPOT_API_KEY to the access token of a HubSpot private app that has the "
    "crm.objects.contacts.write scope"
)


class HubspotAdapter:
    """Pushes contacts to one HubSpot account; see the module docstring."""

    def __init__(
        self,
        settings: HubspotSettings,
        context: AdapterContext,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        token = settings.api_key.get_secret_value().strip() if settings.api_key else ""
        if not token:
            raise ConfigurationError(
                "HUBSPOT_API_KEY is not set: create a private app in HubSpot (Settings > Integrations "
                "> Private Apps) with the crm.objects.contacts.write scope and use its access token"
            )
        if not settings.api_base_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                "HUBSPOT_API_BASE_URL must be an http(s) URL such as https://api.hubapi.com"
            )
        self.settings = settings
        self._now = now
        # The window keeps the budget of the engine's limiter (none in AdapterContext.for_testing).
        budget = getattr(context.rate_limiter, "limit", settings.rate_limit(DEFAULT_RATE_LIMIT))
        self.window = RollingWindow(
            context.rate_limiter, budget if isinstance(budget, RateLimit) else None
        )
        self.client = CrmClient(
            replace(context, rate_limiter=self.window),
            crm="hubspot",
            base_url=settings.api_base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            secrets=[token],
            auth_hint=_AUTH_HINT,
            timeout=settings.timeout_seconds,
            rate_limit_reset=self._rate_limit_reset,
            inspect=self._inspect,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def push(self, contacts: Sequence[Contact]) -> list[Outcome]:
        today = self._now().astimezone(UTC).date()
        inputs, skipped = build_inputs(contacts, self.settings, today)
        outcomes: list[Outcome] = list(skipped)
        for start in range(0, len(inputs), MAX_INPUTS):
            answered = await self._upsert(inputs[start : start + MAX_INPUTS])
            self.client.context.report(answered)
            outcomes.extend(answered)
        return outcomes

    # -- one request, and what to make of its answer ------------------------------------------------

    async def _upsert(self, inputs: Sequence[UpsertInput]) -> list[Outcome]:
        try:
            response = await self.client.request(
                "POST", self.settings.upsert_path, json=request_body(inputs)
            )
            status = response.status_code
            if status in (200, 201, 207):
                return await self._read_results(response, inputs)
            if status in _BATCH_REJECTED:
                return await self._rejected(response, inputs)
            if status in (404, 405):
                raise FatalError(
                    f"HubSpot answered HTTP {status} on POST {self.settings.upsert_path}: check "
                    f"HUBSPOT_API_BASE_URL ({self.settings.api_base_url}) and HUBSPOT_UPSERT_PATH. "
                    f"HubSpot said: {self.client.body_snippet(response)}"
                )
            raise TransientError(
                f"hubspot: unexpected HTTP {status} on POST {self.settings.upsert_path}: "
                f"{self.client.body_snippet(response)}"
            )
        except FatalError:
            raise
        except TransientError as exc:
            return [
                TransientFailure(contact.id, exc.message, exc.retry_after)
                for item in inputs
                for contact in item.contacts
            ]

    async def _rejected(
        self, response: httpx.Response, inputs: Sequence[UpsertInput]
    ) -> list[Outcome]:
        """The whole batch was refused: stop on a missing property, else bisect to the bad inputs."""
        body = _json_or_none(response)
        message = _message(body) or self.client.body_snippet(response)
        missing = _missing_properties(body, message)
        if missing:
            raise self._missing_property_error(missing)
        if len(inputs) == 1:
            return _failed(inputs, f"HubSpot rejected {inputs[0].email}: {message}")
        return await self._bisect(inputs)

    async def _bisect(self, inputs: Sequence[UpsertInput]) -> list[Outcome]:
        middle = len(inputs) // 2
        return await self._upsert(inputs[:middle]) + await self._upsert(inputs[middle:])

    async def _read_results(
        self, response: httpx.Response, inputs: Sequence[UpsertInput]
    ) -> list[Outcome]:
        body = self.client.json(response)
        results = body.get("results") if isinstance(body, dict) else None
        errors = body.get("errors", []) if isinstance(body, dict) else None
        if not isinstance(results, list) or not isinstance(errors, list):
            raise self.client.malformed(response, 'an object with a "results" list')
        by_email = {item.email: item for item in inputs}
        outcomes: list[Outcome] = []
        done: set[str] = set()
        for result in results:
            remote_id = _result_id(result)
            if remote_id is None:
                raise self.client.malformed(response, 'results with an "id"')
            email = next((e for e in _result_emails(result) if e in by_email), None)
            if email is not None and email not in done:
                done.add(email)
                outcomes += [Synced(c.id, remote_id) for c in by_email[email].contacts]

        unattributed: list[str] = []
        for error in errors:
            if not isinstance(error, dict):
                raise self.client.malformed(response, "errors that are objects")
            missing = _missing_properties(error, _message(error))
            if missing:
                raise self._missing_property_error(missing)
            named = [e for e in _error_names(error) if e in by_email and e not in done]
            if not named:
                unattributed.append(_message(error) or json.dumps(error)[:200])
            for email in named:
                done.add(email)
                outcomes += self._error_outcomes(by_email[email], error)

        left = [item for item in inputs if item.email not in done]
        if left and unattributed:
            if len(left) == 1:
                return outcomes + _failed(
                    left, f"HubSpot rejected {left[0].email}: {'; '.join(unattributed)}"
                )
            # HubSpot did not say which inputs failed: ask again in halves until it must.
            return outcomes + await self._bisect(left)
        outcomes += [
            TransientFailure(c.id, "hubspot: the batch answer has no result for this contact")
            for item in left
            for c in item.contacts
        ]
        return outcomes

    def _error_outcomes(self, item: UpsertInput, error: dict[str, Any]) -> list[Outcome]:
        reason = f"HubSpot rejected {item.email}: {_message(error) or 'no message'}"
        category = str(error.get("category", "")).upper()
        if any(word in category for word in _TRANSIENT_CATEGORIES):
            return [TransientFailure(c.id, reason) for c in item.contacts]
        return [PermanentFailure(c.id, reason) for c in item.contacts]

    def _missing_property_error(self, names: Sequence[str]) -> FatalError:
        listed = ", ".join(repr(n) for n in names)
        settings = {
            self.settings.custom_property_domain_id: "HUBSPOT_CUSTOM_PROPERTY_DOMAIN_ID",
            self.settings.custom_property_page_id: "HUBSPOT_CUSTOM_PROPERTY_PAGE_ID",
            self.settings.custom_property_sync_date: "HUBSPOT_CUSTOM_PROPERTY_SYNC_DATE",
        }
        rename = sorted({settings[n] for n in names if n in settings})
        alternative = f", or set {' / '.join(rename)} to an existing property" if rename else ""
        return FatalError(
            f"HubSpot has no contact property {listed}: create it with `crmsync hubspot "
            f"create-properties` (or in HubSpot: Settings > Properties > Contact properties){alternative}"
        )

    # -- rate limits --------------------------------------------------------------------------------

    def _rate_limit_reset(self, response: httpx.Response) -> float | None:
        """Seconds to hold requests back after a 429, and the budget HubSpot announces.

        ``X-HubSpot-RateLimit-Max`` / ``-Interval-Milliseconds`` lower the rolling window when the account
        allows less than configured. ``-Remaining`` is not acted on: the window already keeps this run
        within the budget, and pausing whenever it reads 0 would idle a run that is exactly on budget.
        """
        limit = _int_header(response, "x-hubspot-ratelimit-max")
        interval = _int_header(response, "x-hubspot-ratelimit-interval-milliseconds")
        if limit and interval:
            self.window.observe(limit, interval / 1000)
        if response.status_code != 429 or _policy(response) == "DAILY":
            return None
        # Someone else (another worker or app on the account) spent the window. It frees as old
        # requests age out, and HubSpot does not say when: wait a tenth of it (1 s of 10 s) per 429.
        return (interval or 10_000) / 1000 / 10

    def _inspect(self, response: httpx.Response) -> None:
        if response.status_code != 429:
            return
        daily = _policy(response) == "DAILY" or (
            _policy(response) is None
            and _int_header(response, "x-hubspot-ratelimit-daily-remaining") == 0
        )
        if not daily:
            return
        now = self._now()
        zone = self.settings.timezone
        reset = next_midnight(now, zone)
        seconds = max(60.0, (reset - now).total_seconds())
        allowance = response.headers.get("x-hubspot-ratelimit-daily")
        raise RateLimitExhaustedError(
            f"HubSpot's daily API limit{f' of {allowance} requests' if allowance else ''} is used up; "
            f"the contacts stay queued until it resets at midnight {self.settings.account_timezone} "
            f"({reset.isoformat()}, in {seconds / 3600:.1f} h). If the account's time zone is not "
            f"{self.settings.account_timezone}, set HUBSPOT_ACCOUNT_TIMEZONE.",
            resume_after=seconds,
        )


def next_midnight(moment: datetime, zone: ZoneInfo) -> datetime:
    """The first midnight after ``moment`` in ``zone``: when HubSpot resets an account's daily limit."""
    local = moment.astimezone(zone)
    tomorrow: date = local.date() + timedelta(days=1)
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)


def _failed(inputs: Sequence[UpsertInput], reason: str) -> list[Outcome]:
    return [PermanentFailure(c.id, reason[:1000]) for item in inputs for c in item.contacts]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _message(body: Any) -> str:
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def _policy(response: httpx.Response) -> str | None:
    body = _json_or_none(response)
    policy = body.get("policyName") if isinstance(body, dict) else None
    return str(policy).upper() if policy else None


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _result_emails(result: Any) -> list[str]:
    """What a result says about its input: the e-mail property, and the trace id we sent."""
    properties = result.get("properties")
    candidates = [
        properties.get("email") if isinstance(properties, dict) else None,
        result.get("objectWriteTraceId"),
    ]
    return [str(c).strip().lower() for c in candidates if c]


def _result_id(result: Any) -> str | None:
    remote_id = result.get("id") if isinstance(result, dict) else None
    return str(remote_id) if remote_id not in (None, "") else None


def _error_names(error: dict[str, Any]) -> set[str]:
    """Every string a 207 error uses to point at inputs, lower-cased.

    UNCONFIRMED: HubSpot does not document how a batch-upsert error names its input. Batch errors carry
    ``context`` (e.g. ``{"ids": ["a@b.com"]}``), and HubSpot's multi-status handling echoes the input's
    ``objectWriteTraceId``. Each input's id and trace id are both its e-mail (see mapping.py), so this
    collects ``id``, ``objectWriteTraceId`` and every string in ``context`` under any key: whichever form
    HubSpot uses, it names the e-mail. An error that names nothing is resolved by bisection.
    """
    names: set[str] = set()

    def add(value: Any) -> None:
        if isinstance(value, str):
            names.add(value.strip().lower())
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)

    add(error.get("id"))
    add(error.get("objectWriteTraceId"))
    context = error.get("context")
    if isinstance(context, dict):
        for value in context.values():
            add(value)
    return names


def _missing_properties(body: Any, message: str) -> list[str]:
    """Names of properties HubSpot says do not exist (``PROPERTY_DOESNT_EXIST``), in any of its forms."""
    names: list[str] = []
    if "PROPERTY_DOESNT_EXIST" not in json.dumps(body) + message:
        return names
    # "Property values were not valid: [{...,"error":"PROPERTY_DOESNT_EXIST","name":"x"}]"
    _, _, listed = message.partition(":")
    try:
        details = json.loads(listed)
    except ValueError:
        details = []
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("error") == "PROPERTY_DOESNT_EXIST":
            names.append(str(detail.get("name")))
    # {"errors": [{"code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": ["x"]}}]}
    for detail in body.get("errors", []) if isinstance(body, dict) else []:
        if isinstance(detail, dict) and detail.get("code") == "PROPERTY_DOESNT_EXIST":
            context = detail.get("context")
            if isinstance(context, dict):
                for value in context.values():
                    names += [str(v) for v in (value if isinstance(value, list) else [value])]
    names += _MISSING_PROPERTY.findall(message)
    return list(dict.fromkeys(names)) or ["(unnamed)"]


SPEC: AdapterSpec[HubspotSettings] = AdapterSpec(
    name="hubspot",
    settings_model=HubspotSettings,
    factory=HubspotAdapter,
    max_batch_size=MAX_INPUTS,
    rate_limit=DEFAULT_RATE_LIMIT,
    partial_success=True,
    sandbox=make_sandbox,
    description="HubSpot contacts: batch upsert by e-mail, 100 per request",
)
