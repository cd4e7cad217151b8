"""The HubSpot adapter against the fake HubSpot, at the transport: what a user of crmsync relies on."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from crmsync_core.adapter import AdapterContext, collect_outcomes
from crmsync_core.contacts import (
    Contact,
    Outcome,
    PermanentFailure,
    Skipped,
    Synced,
    TransientFailure,
)
from crmsync_core.errors import (
    AuthenticationError,
    ConfigurationError,
    FatalError,
    RateLimitExhaustedError,
)
from crmsync_core.ratelimit import Limiter, RateLimit
from crmsync_hubspot import SPEC, FakeHubspot, HubspotAdapter, HubspotSettings
from crmsync_hubspot.fake import BASE_URL

NOW = datetime(2026, 11, 5, 15, 30, tzinfo=UTC)
Push = Callable[..., Any]


def people(count: int, domain: str = "example.com") -> list[Contact]:
    return [
        Contact(id=uuid.uuid4(), email=f"person{n}@{domain}", name=f"Person {n}", domain_id=n)
        for n in range(count)
    ]


def by_id(outcomes: Sequence[Outcome]) -> dict[Any, Outcome]:
    return {o.contact_id: o for o in outcomes}


@pytest.fixture
async def push(
    settings: HubspotSettings, transport: httpx.AsyncBaseTransport
) -> AsyncIterator[Push]:
    """Push contacts through a fresh adapter, as the engine does (collect_outcomes)."""
    adapters: list[HubspotAdapter] = []

    async def push(
        contacts: Sequence[Contact], settings: HubspotSettings = settings, **kwargs: Any
    ) -> list[Outcome]:
        adapter = HubspotAdapter(
            settings, AdapterContext.for_testing(transport, **kwargs), now=lambda: NOW
        )
        adapters.append(adapter)
        return await collect_outcomes(adapter, contacts, crm="hubspot")

    yield push
    for adapter in adapters:
        await adapter.aclose()


async def test_one_request_per_100_contacts_with_hubspot_ids(
    push: Push, fake: FakeHubspot, sdk_validator: Any
) -> None:
    contacts = people(250)
    outcomes = await push(contacts)
    assert [len(json.loads(r.content)["inputs"]) for r in fake.upsert_requests] == [100, 100, 50]
    assert all(isinstance(o, Synced) for o in outcomes)
    outcome_of = by_id(outcomes)
    for contact in contacts:
        outcome = outcome_of[contact.id]
        assert isinstance(outcome, Synced)
        stored = fake.contact(contact.email or "")
        assert stored is not None and outcome.remote_id == stored.id
    assert len(sdk_validator.checked) == 3  # every body went through HubSpot's SDK models


async def test_the_token_is_a_bearer_token_and_the_path_is_the_upsert(
    push: Push, fake: FakeHubspot
) -> None:
    await push(people(1))
    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {fake.token}"
    assert request.method == "POST"
    assert request.url.path == "/crm/v3/objects/contacts/batch/upsert"


async def test_syncing_again_updates_the_same_contacts(push: Push, fake: FakeHubspot) -> None:
    contacts = people(3)
    first = by_id(await push(contacts))
    again = by_id(await push([Contact(id=c.id, email=c.email, name="Renamed") for c in contacts]))
    assert first == again
    assert len(fake.contacts) == 3
    assert {c.properties["firstname"] for c in fake.contacts.values()} == {"Renamed"}


async def test_contacts_sharing_an_email_are_sent_once_and_share_the_outcome(
    push: Push, fake: FakeHubspot
) -> None:
    twins = [
        Contact(id=uuid.uuid4(), email="Twin@Example.com"),
        Contact(id=uuid.uuid4(), email="twin@example.com"),
    ]
    outcomes = await push(twins)
    assert [len(json.loads(r.content)["inputs"]) for r in fake.upsert_requests] == [1]
    remote_ids = {o.remote_id for o in outcomes if isinstance(o, Synced)}
    assert len(outcomes) == 2 and remote_ids == {fake.contacts["twin@example.com"].id}


async def test_invalid_emails_are_skipped_before_any_request(push: Push, fake: FakeHubspot) -> None:
    contacts = [Contact(id=1, email=None), Contact(id=2, email="nobody@"), Contact(id=3, email="x")]
    outcomes = await push(contacts)
    assert all(isinstance(o, Skipped) for o in outcomes)
    assert fake.requests == []


async def test_invalid_contacts_fail_alone_from_the_207_without_bisection(
    push: Push, fake: FakeHubspot
) -> None:
    """The fake's default is HubSpot's documented multi-status mode: one request for the batch."""
    good = people(98)
    bad = [
        Contact(id="bad-1", email="one@rejected.invalid"),
        Contact(id="bad-2", email="two@rejected.invalid"),
    ]
    outcomes = by_id(await push(good[:40] + bad[:1] + good[40:] + bad[1:]))
    assert len(fake.upsert_requests) == 1
    assert all(isinstance(outcomes[c.id], Synced) for c in good)
    for contact in bad:
        failure = outcomes[contact.id]
        assert isinstance(failure, PermanentFailure)
        assert f"Email address {contact.email} is invalid" in failure.reason


async def test_a_poisoned_batch_is_bisected_until_only_the_bad_contacts_fail(
    push: Push, fake: FakeHubspot, settings: HubspotSettings
) -> None:
    fake.rejection = "batch"  # HubSpot's whole-batch 400, as without multi-status mode
    settings = settings.model_copy(update={"max_bisection_requests": 40})
    good = people(98)
    bad = [
        Contact(id="bad-1", email="one@rejected.invalid"),
        Contact(id="bad-2", email="two@rejected.invalid"),
    ]
    contacts = good[:40] + bad[:1] + good[40:] + bad[1:]
    outcomes = by_id(await push(contacts, settings))
    assert all(isinstance(outcomes[c.id], Synced) for c in good)
    for contact in bad:
        failure = outcomes[contact.id]
        assert isinstance(failure, PermanentFailure)
        assert contact.email in failure.reason
        assert "is invalid" in failure.reason  # HubSpot's own message
    assert len(fake.contacts) == 98
    # 1 rejected request, then halves: far fewer than one request per contact
    assert len(fake.upsert_requests) <= 2 * 2 * 7 + 1


async def test_bisection_stops_at_its_cap_and_leaves_the_rest_queued(
    push: Push, fake: FakeHubspot, settings: HubspotSettings
) -> None:
    fake.rejection = "batch"
    settings = settings.model_copy(update={"max_bisection_requests": 4})
    contacts = [*people(63), Contact(id="bad", email="bad@rejected.invalid")]
    outcomes = by_id(await push(contacts, settings))
    assert len(fake.upsert_requests) == 1 + 4
    transient = [o for o in outcomes.values() if isinstance(o, TransientFailure)]
    assert transient and isinstance(outcomes["bad"], TransientFailure)
    assert "HUBSPOT_MAX_BISECTION_REQUESTS" in transient[0].reason
    assert not any(isinstance(o, PermanentFailure) for o in outcomes.values())
    # the halves that came back clean are synced: the cap costs only the unresolved contacts
    assert sum(isinstance(o, Synced) for o in outcomes.values()) == 64 - len(transient)


async def test_a_zero_cap_never_bisects(
    push: Push, fake: FakeHubspot, settings: HubspotSettings
) -> None:
    fake.rejection = "batch"
    settings = settings.model_copy(update={"max_bisection_requests": 0})
    outcomes = await push([*people(9), Contact(id="bad", email="bad@rejected.invalid")], settings)
    assert len(fake.upsert_requests) == 1
    assert all(isinstance(o, TransientFailure) for o in outcomes)


async def test_the_documented_trace_id_wins_over_other_context(
    push: Push, fake: FakeHubspot, settings: HubspotSettings
) -> None:
    contacts = [*people(3), Contact(id="bad", email="bad@rejected.invalid")]
    error = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid",
        "context": {
            "objectWriteTraceId": ["bad@rejected.invalid"],
            "ids": ["person0@example.com"],  # a vaguer field pointing elsewhere is not followed
        },
        "errors": [],
        "links": {},
    }
    fake.fail_next(
        207,
        body={
            "status": "COMPLETE",
            "results": [
                {"id": str(n), "new": True, "properties": {"email": f"person{n}@example.com"}}
                for n in range(3)
            ],
            "numErrors": 1,
            "errors": [error],
            "startedAt": "2026-11-05T15:30:00.000Z",
            "completedAt": "2026-11-05T15:30:00.000Z",
        },
    )
    outcomes = by_id(await push(contacts))
    assert len(fake.upsert_requests) == 1
    assert isinstance(outcomes["bad"], PermanentFailure)
    assert sum(isinstance(o, Synced) for o in outcomes.values()) == 3


@pytest.mark.parametrize("error_context", ["ids", "trace"])
async def test_207_errors_map_back_to_their_contacts(
    push: Push, fake: FakeHubspot, error_context: Any
) -> None:
    fake.rejection, fake.error_context = "partial", error_context
    contacts = [*people(5), Contact(id="bad", email="bad@rejected.invalid")]
    outcomes = by_id(await push(contacts))
    assert len(fake.upsert_requests) == 1
    assert isinstance(outcomes["bad"], PermanentFailure)
    assert "Email address bad@rejected.invalid is invalid" in outcomes["bad"].reason
    assert sum(isinstance(o, Synced) for o in outcomes.values()) == 5


async def test_207_errors_that_name_no_input_are_narrowed_down_by_bisection(
    push: Push, fake: FakeHubspot
) -> None:
    fake.rejection, fake.error_context = "partial", "none"
    contacts = [*people(7), Contact(id="bad", email="bad@rejected.invalid")]
    outcomes = by_id(await push(contacts))
    assert isinstance(outcomes["bad"], PermanentFailure)
    assert "is invalid" in outcomes["bad"].reason
    assert sum(isinstance(o, Synced) for o in outcomes.values()) == 7
    # the one input without a result is the one the anonymous error is about: no bisection needed
    assert len(fake.upsert_requests) == 1


async def test_anonymous_207_errors_with_several_unresolved_inputs_are_bisected(
    push: Push, fake: FakeHubspot
) -> None:
    fake.rejection, fake.error_context = "partial", "none"
    bad = [Contact(id=f"bad-{n}", email=f"bad{n}@rejected.invalid") for n in range(2)]
    outcomes = by_id(await push([*people(6), *bad]))
    assert all(isinstance(outcomes[c.id], PermanentFailure) for c in bad)
    assert sum(isinstance(o, Synced) for o in outcomes.values()) == 6
    assert 1 < len(fake.upsert_requests) <= 1 + 2


async def test_a_missing_custom_property_stops_the_run_and_names_it(
    push: Push, fake: FakeHubspot
) -> None:
    fake.properties.discard("scrapersky_domain_id")
    with pytest.raises(FatalError) as raised:
        await push(people(10))
    message = str(raised.value)
    assert "'scrapersky_domain_id'" in message
    assert "crmsync hubspot setup" in message
    assert "HUBSPOT_CUSTOM_PROPERTY_DOMAIN_ID" in message
    assert len(fake.upsert_requests) == 1  # no bisection: it is not the contacts' fault


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_stop_the_run(
    push: Push, fake: FakeHubspot, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(
        status, body={"status": "error", "message": "nope", "category": "MISSING_SCOPES"}
    )
    with pytest.raises(AuthenticationError) as raised:
        await push(people(2))
    assert "HUBSPOT_API_KEY" in str(raised.value)
    assert fake.token not in str(raised.value) + caplog.text


def test_a_missing_token_is_a_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="HUBSPOT_API_KEY"):
        HubspotAdapter(HubspotSettings(api_key=None), AdapterContext.for_testing())


async def test_server_errors_are_retried_within_the_request(push: Push, fake: FakeHubspot) -> None:
    fake.fail_next(503, body={"status": "error", "message": "Service Unavailable"})
    outcomes = await push(people(3))
    assert all(isinstance(o, Synced) for o in outcomes)
    assert len(fake.upsert_requests) == 2


async def test_persistent_server_errors_and_timeouts_are_transient(
    push: Push, fake: FakeHubspot
) -> None:
    fake.fail_next(502, body="<html>Bad gateway</html>", times=3)
    fake.fail_next(None, times=3)
    first = await push(people(2))
    second = await push(people(2))
    assert all(isinstance(o, TransientFailure) and "502" in o.reason for o in first)
    assert all(isinstance(o, TransientFailure) and "timed out" in o.reason for o in second)


async def test_a_ten_second_429_is_waited_out(push: Push, fake: FakeHubspot) -> None:
    fake.fail_next(
        429,
        body={"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
        headers={
            "X-HubSpot-RateLimit-Interval-Milliseconds": "50",
            "X-HubSpot-RateLimit-Max": "100",
        },
    )
    outcomes = await push(people(3))
    assert all(isinstance(o, Synced) for o in outcomes)


async def test_the_daily_limit_stops_the_run_until_midnight_in_the_account_time_zone(
    push: Push, fake: FakeHubspot, settings: HubspotSettings
) -> None:
    fake.use_up_daily_limit()
    new_york = settings.model_copy(update={"account_timezone": "America/New_York"})
    with pytest.raises(RateLimitExhaustedError) as raised:
        await push(people(3), settings=new_york)
    # 15:30 UTC is 10:30 in New York: the budget comes back in 13.5 hours
    midnight = datetime(2026, 11, 6, tzinfo=ZoneInfo("America/New_York"))
    assert raised.value.resume_after == (midnight - NOW).total_seconds() == 13.5 * 3600
    assert "daily" in str(raised.value) and "HUBSPOT_ACCOUNT_TIMEZONE" in str(raised.value)
    assert len(fake.requests) == 1


async def test_base_url_and_dated_path_are_settings(push: Push, fake: FakeHubspot) -> None:
    dated = HubspotSettings(
        api_key=SecretStr(fake.token),
        api_base_url=BASE_URL,
        upsert_path="/crm/objects/2026-03/contacts/batch/upsert",
    )
    outcomes = await push(people(2), settings=dated)
    assert all(isinstance(o, Synced) for o in outcomes)
    assert fake.requests[0].url.path == "/crm/objects/2026-03/contacts/batch/upsert"


async def test_a_wrong_path_stops_the_run_naming_the_settings(
    push: Push, fake: FakeHubspot
) -> None:
    wrong = HubspotSettings(
        api_key=SecretStr(fake.token), api_base_url=BASE_URL, upsert_path="/crm/v9/upsert"
    )
    with pytest.raises(FatalError, match="HUBSPOT_UPSERT_PATH"):
        await push(people(2), settings=wrong)


async def test_an_answer_without_results_is_transient_and_quoted(
    push: Push, fake: FakeHubspot
) -> None:
    fake.fail_next(200, body={"status": "COMPLETE", "unexpected": True})
    outcomes = await push(people(2))
    assert all(isinstance(o, TransientFailure) and "unexpected" in o.reason for o in outcomes)


async def test_the_window_adopts_a_smaller_budget_announced_by_hubspot(
    settings: HubspotSettings, fake: FakeHubspot, transport: httpx.AsyncBaseTransport
) -> None:
    fake.rate_limit = RateLimit(50, 10.0)
    context = AdapterContext.for_testing(transport, rate_limit=RateLimit(100, 10.0))
    adapter = HubspotAdapter(settings, context)
    try:
        await adapter.push(people(1))
    finally:
        await adapter.aclose()
    bucket = context.rate_limiter.bucket("/crm/v3/objects/contacts/batch/upsert")  # type: ignore[attr-defined]
    assert bucket is not None and bucket.limit == RateLimit(50, 10.0)


async def test_the_rolling_window_never_sends_more_than_the_budget_in_any_period() -> None:
    now = [0.0]
    sent: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    # A token bucket would allow 3 at once and 3 more within the period.
    settings = HubspotSettings(
        api_key="pat-x", sync_rate_limit_requests=3, sync_rate_limit_period_seconds=10
    )
    limiter = Limiter(SPEC.limits_for(settings), clock=lambda: now[0], sleep=sleep)
    for _ in range(9):
        await limiter.acquire("/crm/v3/objects/contacts/batch/upsert")
        sent.append(now[0])
        now[0] += 0.5
    for start in sent:
        assert sum(start <= t < start + 10.0 for t in sent) <= 3
    # 10 s after the end of the first slot (which lasted 1 s: the window was empty) plus the margin
    assert sent[3] == pytest.approx(11.05)


def test_spec_manifest() -> None:
    manifest = SPEC.capabilities()
    assert manifest["max_batch_size"] == 100
    assert manifest["rate_limit"] == {"requests": 100, "period_seconds": 10.0}
    assert manifest["partial_success"] is True
    assert manifest["remote_id_column"] == "hubspot_contact_id"
    assert manifest["settings_env_prefix"] == "HUBSPOT_"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_API_KEY", "pat-na1-secret-value")
    monkeypatch.setenv("HUBSPOT_API_BASE_URL", "https://eu1.api.hubapi.com")
    monkeypatch.setenv("HUBSPOT_SYNC_RATE_LIMIT_REQUESTS", "190")
    monkeypatch.setenv("HUBSPOT_SYNC_RATE_LIMIT_PERIOD_SECONDS", "10")
    monkeypatch.setenv("HUBSPOT_SYNC_MAX_RETRIES", "5")
    monkeypatch.setenv("HUBSPOT_ACCOUNT_TIMEZONE", "Europe/Paris")
    settings = HubspotSettings()
    assert settings.api_base_url == "https://eu1.api.hubapi.com"
    assert settings.rate_limit(SPEC.rate_limit) == RateLimit(190, 10.0)
    assert settings.sync_max_retries == 5
    assert settings.timezone == ZoneInfo("Europe/Paris")
    assert "pat-na1-secret-value" not in repr(settings)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        HubspotSettings(account_timezone="Mars/Olympus")
