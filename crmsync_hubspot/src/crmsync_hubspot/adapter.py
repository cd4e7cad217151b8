"""The HubSpot adapter: one batch upsert by e-mail per 100 contacts.

``POST /crm/v3/objects/contacts/batch/upsert`` creates or updates up to 100 contacts, identified by
their e-mail. What comes back decides each contact's outcome:

* 200 / 207: each result is matched to its input by e-mail; each 207 error is matched by what it names
  (see :func:`_error_inputs`: the documented ``context.objectWriteTraceId`` first), and only a failure
  HubSpot does not attribute is narrowed down by bisection;
* 400 (or 409, 413, 422) rejects the whole batch because of some of its inputs: the batch is split in
  halves until the bad inputs are alone, so the good ones sync and each bad one fails with HubSpot's
  message. An unknown property (``PROPERTY_DOESNT_EXIST``) is not the contact's fault: it stops the run;
* bisection spends at most ``HUBSPOT_MAX_BISECTION_REQUESTS`` extra requests per batch; inputs still
  unresolved then are transient failures (retried in a later run), never guessed at;
* 429 ``DAILY`` stops the run until midnight in the account's time zone (the contacts stay queued);
  other 429s are waited out; 401/403 stop the run; 5xx and timeouts are transient (:mod:`crmsync_core.http`).

What each of these relies on, with its source and whether it is confirmed: ``docs/vendors/hubspot.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
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
from crmsync_core.ratelimit import Bucket, LimitHeaders, RateLimit, RateLimits, WindowKind
from crmsync_core.sdk import BatchAdapter, Sent, Unresolved

from .mapping import MAX_INPUTS, UpsertInput, contact_properties, normalise_email
from .settings import HubspotSettings

#: HubSpot's budget on Free and Starter accounts; Professional and Enterprise get 190
#: (``HUBSPOT_SYNC_RATE_LIMIT_REQUESTS=190``, ``HUBSPOT_SYNC_RATE_LIMIT_PERIOD_SECONDS=10``).
DEFAULT_RATE_LIMIT = RateLimit(100, 10.0)
#: HubSpot's headers (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines):
#: ``X-HubSpot-RateLimit-Max`` requests per ``-Interval-Milliseconds`` (a smaller budget than configured is
#: adopted) and ``-Remaining``. HubSpot sends no reset: a remaining of 0 needs no pause, since the limiter
#: already keeps the rolling window, and a 429 (someone else spent the window) waits the request retry's
#: first backoff. The daily limit is handled by ``HubspotAdapter._inspect``.
LIMIT_HEADERS = LimitHeaders(
    remaining="x-hubspot-ratelimit-remaining",
    limit="x-hubspot-ratelimit-max",
    interval_milliseconds="x-hubspot-ratelimit-interval-milliseconds",
    pause_when_exhausted=False,
)


def rate_limits(settings: HubspotSettings) -> RateLimits:
    """HubSpot's burst limit per private app: 100 requests per rolling 10 seconds on Free and Starter,
    190 on Professional and Enterprise, 250 with the limit increase pack (usage guidelines above; the
    429 names the policy ``TEN_SECONDLY_ROLLING``): a sliding window, so a token bucket would let up to
    twice the limit into one window. ``HUBSPOT_SYNC_RATE_LIMIT_*`` sets it. The daily limit (250,000 to
    1,000,000) resets at the account's midnight and stops the run when spent (``_inspect``)."""
    return RateLimits(
        (Bucket("ten_secondly_rolling", 100, 10.0, WindowKind.SLIDING),), LIMIT_HEADERS
    )


#: statuses with which HubSpot rejects a whole batch because of what some inputs hold
_BATCH_REJECTED = frozenset({400, 409, 413, 422})
#: 207 error categories retried in a later run. Only ``RATE_LIMIT`` is a documented category; the others
#: are ASSUMED (HubSpot does not list batch error categories) and kept defensively: a server-side
#: failure of one input is not the contact's fault.
_TRANSIENT_CATEGORIES = ("RATE_LIMIT", "TIMEOUT", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE")
_MISSING_PROPERTY = re.compile(r"Property \\?\"([^\"\\]+)\\?\" does not exist")
_AUTH_HINT = (
    "set HUBSPOT_API_KEY to the access token of a HubSpot private app that has the "
    "crm.objects.contacts.write scope"
)


class HubspotAdapter(BatchAdapter[HubspotSettings]):
    """Pushes contacts to one HubSpot account; see the module docstring."""

    crm = "hubspot"
    batch_size = MAX_INPUTS
    base_url_setting = "HUBSPOT_API_BASE_URL"
    base_url_example = "https://api.hubapi.com"
    api_key_setting = "HUBSPOT_API_KEY"
    limit_headers = LIMIT_HEADERS
    batch_rejections = _BATCH_REJECTED
    bisect_rejections = True
    bisection_setting = "HUBSPOT_MAX_BISECTION_REQUESTS"

    def __init__(
        self,
        settings: HubspotSettings,
        context: AdapterContext,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._now = now
        super().__init__(settings, context)

    # -- what the SDK asks --------------------------------------------------------------------------

    def api_key(self) -> str:
        token = self.settings.api_key.get_secret_value().strip() if self.settings.api_key else ""
        if not token:
            raise ConfigurationError(
                "HUBSPOT_API_KEY is not set: create a private app in HubSpot (Settings > Integrations "
                "> Private Apps) with the crm.objects.contacts.write scope and use its access token"
            )
        return token

    def auth_hint(self) -> str:
        return _AUTH_HINT

    def request_path(self) -> str:
        return self.settings.upsert_path

    def bisection_budget(self) -> int:
        return self.settings.max_bisection_requests

    def representative(self, members: Sequence[Contact]) -> Contact:
        return members[-1]  # the last row sharing an e-mail provides its properties (mapping.py)

    def item(self, contact: Contact) -> dict[str, Any]:
        today = self._now().astimezone(UTC).date()
        email = normalise_email(str(contact.email))
        return UpsertInput(
            email, contact_properties(contact, self.settings, today), (contact,)
        ).to_json()

    def body(self, items: Sequence[Any]) -> dict[str, Any]:
        return {"inputs": list(items)}

    def not_found(self, response: httpx.Response) -> FatalError:
        return FatalError(
            f"HubSpot answered HTTP {response.status_code} on POST {self.settings.upsert_path}: check "
            f"HUBSPOT_API_BASE_URL ({self.settings.api_base_url}) and HUBSPOT_UPSERT_PATH. "
            f"HubSpot said: {self.client.body_snippet(response)}"
        )

    def rejected(self, response: httpx.Response, sent: Sequence[Sent]) -> str:
        """The whole batch was refused: stop on a missing property, else the SDK bisects."""
        body = _json_or_none(response)
        message = _message(body) or self.client.body_snippet(response)
        missing = _missing_properties(body, message)
        if missing:
            raise self._missing_property_error(missing)
        return message

    def item_rejected(self, item: Sent, reason: str) -> Outcome:
        return PermanentFailure(item.contact.id, f"HubSpot rejected {item.email}: {reason}"[:1000])

    def outcomes(
        self, response: httpx.Response, sent: Sequence[Sent]
    ) -> list[Outcome | Unresolved]:
        status = response.status_code
        if status not in (200, 201, 207):
            raise TransientError(
                f"hubspot: unexpected HTTP {status} on POST {self.settings.upsert_path}: "
                f"{self.client.body_snippet(response)}"
            )
        body = self.client.json(response)
        results = body.get("results") if isinstance(body, dict) else None
        errors = body.get("errors", []) if isinstance(body, dict) else None
        if not isinstance(results, list) or not isinstance(errors, list):
            raise self.client.malformed(response, 'an object with a "results" list')
        by_email = self.by_email(sent)
        outcomes: list[Outcome | Unresolved] = []
        done: set[str] = set()
        for result in results:
            remote_id = _result_id(result)
            if remote_id is None:
                raise self.client.malformed(response, 'results with an "id"')
            email = next((e for e in _result_emails(result) if e in by_email), None)
            if email is not None and email not in done:
                done.add(email)
                outcomes.append(Synced(by_email[email].contact.id, remote_id))

        unattributed: list[str] = []
        for error in errors:
            if not isinstance(error, dict):
                raise self.client.malformed(response, "errors that are objects")
            missing = _missing_properties(error, _message(error))
            if missing:
                raise self._missing_property_error(missing)
            named = [e for e in _error_inputs(error, by_email) if e not in done]
            if not named:
                unattributed.append(_message(error) or json.dumps(error)[:200])
            for email in named:
                done.add(email)
                outcomes.append(self._error_outcome(by_email[email], error))

        left = [item for item in sent if item.email not in done]
        if unattributed:
            # HubSpot did not say which inputs failed: the SDK asks again in halves until it must.
            said = "; ".join(unattributed)
            return outcomes + [Unresolved(item.contact.id, said) for item in left]
        return outcomes + [
            TransientFailure(
                item.contact.id, "hubspot: the batch answer has no result for this contact"
            )
            for item in left
        ]

    def _error_outcome(self, item: Sent, error: dict[str, Any]) -> Outcome:
        reason = f"HubSpot rejected {item.email}: {_message(error) or 'no message'}"
        category = str(error.get("category", "")).upper()
        if any(word in category for word in _TRANSIENT_CATEGORIES):
            return TransientFailure(item.contact.id, reason)
        return PermanentFailure(item.contact.id, reason)

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
            f"setup` (or in HubSpot: Settings > Properties > Contact properties){alternative}"
        )

    # -- rate limits --------------------------------------------------------------------------------

    def inspect(self, response: httpx.Response) -> None:
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


def _error_inputs(error: dict[str, Any], inputs: Mapping[str, object]) -> list[str]:
    """The inputs (lower-cased e-mails) a 207 error names, from the best-documented field down.

    1. ``context.objectWriteTraceId`` (CONFIRMED: HubSpot's "Multi-status errors" documentation; each
       input's trace id is its e-mail, see mapping.py);
    2. the error's own ``id`` (the SDK's ``StandardError.id``; ASSUMED to hold the input's id);
    3. any other ``context`` value naming an input, e.g. ``context.ids`` (ASSUMED);
    4. the message, when it quotes exactly one input's e-mail (ASSUMED, e.g. "Email address x is
       invalid").

    The first source that names an input wins, so a vaguer one never overrides a documented one. An
    error that names nothing is resolved by bisection.
    """
    context = error.get("context")
    context = context if isinstance(context, dict) else {}
    sources: list[Any] = [
        context.get("objectWriteTraceId"),
        error.get("id"),
        [v for k, v in context.items() if k != "objectWriteTraceId"],
    ]
    for source in sources:
        named = [e for e in dict.fromkeys(_strings(source)) if e in inputs]
        if named:
            return named
    message = _message(error).lower()
    quoted = [email for email in inputs if email in message]
    return quoted if len(quoted) == 1 else []


def _strings(value: Any) -> list[str]:
    """Every string in ``value`` (nested lists included), stripped and lower-cased."""
    if isinstance(value, str):
        return [value.strip().lower()]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


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
    rate_limits=rate_limits,
    partial_success=True,
    sandbox="crmsync_hubspot.fake:make_sandbox",
    check="crmsync_hubspot.account:check",
    description="HubSpot contacts: batch upsert by e-mail, 100 per request",
)
