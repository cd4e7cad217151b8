"""The Mautic adapter against the fake Mautic (and hand-written answers), at the transport only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import httpx
import pytest

from crmsync_core.adapter import AdapterContext
from crmsync_core.contacts import Contact, PermanentFailure, Skipped, Synced, TransientFailure
from crmsync_core.errors import AuthenticationError, ConfigurationError, FatalError
from crmsync_core.ratelimit import RateLimit
from crmsync_mautic import FakeMautic, MauticAdapter, MauticSettings
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]
MakeAdapter = Callable[..., MauticAdapter]  # the conftest fixtures
SettingsFor = Callable[..., MauticSettings]


class Clock(Protocol):
    def __call__(self) -> float: ...
    def advance(self, seconds: float) -> None: ...


def person(email: str | None, name: str | None = "Ada Lovelace", **fields: Any) -> Contact:
    return Contact(id=uuid.uuid4(), email=email, name=name, **fields)


def people(count: int, domain: str = "acme.io") -> list[Contact]:
    return [person(f"person{n}@{domain}", f"Person {n}") for n in range(count)]


def batch_requests(fake: FakeMautic) -> list[httpx.Request]:
    return [r for r in fake.requests if r.url.path.endswith("/batch/new")]


def answering(body: Any, status: int = 201) -> httpx.MockTransport:
    """A Mautic that answers every request with ``body`` (token requests get a token)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/v2/token"):
            return httpx.Response(200, json={"access_token": "tok-" + "x" * 20, "expires_in": 3600})
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def intercept(
    fake: FakeMautic, respond: Callable[[httpx.Request], httpx.Response | None]
) -> Handler:
    """The fake, except where ``respond`` answers instead (it returns ``None`` to pass)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = respond(request)
        if answer is not None:
            fake.requests.append(request)
            return answer
        return await fake.handle(request)

    return handle


# -- syncing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["oauth2", "basic"])
async def test_syncs_a_batch_and_keeps_mautics_contact_ids(
    fake: FakeMautic, make_adapter: MakeAdapter, settings_for: SettingsFor, mode: str
) -> None:
    contacts = people(3)
    outcomes = await make_adapter(settings_for(mode)).push(contacts)
    assert all(isinstance(o, Synced) for o in outcomes), outcomes
    for contact, outcome in zip(contacts, outcomes, strict=True):
        stored = fake.contact(str(contact.email))
        assert stored is not None
        assert outcome == Synced(contact.id, str(stored["id"]))
    assert [len(json.loads(r.content)) for r in batch_requests(fake)] == [3]


@pytest.mark.parametrize("map_style", ["php", "objects"])
async def test_mixed_batch_created_updated_and_rejected(
    make_adapter: MakeAdapter, clock: Clock, map_style: Any
) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, map_style=map_style)
    existing, new, rejected, also_new = (
        person("known@acme.io", "Known Person", phone_number="+1 555 0100"),
        person("new@acme.io", "New Person"),
        person("refused@acme.io", "Refused Person"),
        person("another@acme.io", "Another Person"),
    )
    answers: list[httpx.Response] = []

    async def record(request: httpx.Request) -> httpx.Response:
        answers.append(await fake.handle(request))
        return answers[-1]

    adapter = make_adapter(transport=httpx.MockTransport(record))
    (first,) = await adapter.push([existing])
    assert isinstance(first, Synced)
    fake.reject("refused@acme.io", 422, "email: This address is on the do-not-contact list.")

    outcomes = {o.contact_id: o for o in await adapter.push([existing, rejected, new, also_new])}

    codes = json.loads(answers[-1].content)["statusCodes"]
    assert codes in ([200, 422, 201, 201], {"0": 200, "1": 422, "2": 201, "3": 201})
    assert outcomes[existing.id] == Synced(existing.id, first.remote_id)  # matched by e-mail
    created = [outcomes[new.id], outcomes[also_new.id]]
    assert all(isinstance(o, Synced) for o in created)
    assert len({first.remote_id, *(o.remote_id for o in created if isinstance(o, Synced))}) == 3
    refused = outcomes[rejected.id]
    assert isinstance(refused, PermanentFailure)
    assert "422" in refused.reason
    assert "do-not-contact" in refused.reason


async def test_invalid_emails_are_skipped_without_a_request(
    fake: FakeMautic, make_adapter: MakeAdapter
) -> None:
    contacts = [person(None), person("not-an-email"), person("  ")]
    outcomes = await make_adapter().push(contacts)
    assert all(isinstance(o, Skipped) and o.reason for o in outcomes)
    assert fake.requests == []


async def test_blank_values_never_overwrite_and_tags_are_added(
    fake: FakeMautic, make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    adapter = make_adapter(settings_for(tags=["scrapersky"]))
    await adapter.push([person("ada@acme.io", "Ada Lovelace", phone_number="+44 20 7946 0000")])
    await adapter.push([person("ADA@acme.io", None, phone_number=None)])
    stored = fake.contact("ada@acme.io")
    assert stored is not None
    assert stored["phone"] == "+44 20 7946 0000"
    assert stored["firstname"] == "Ada"
    assert stored["tags"] == ["scrapersky"]
    assert all("overwriteWithBlank" not in json.loads(r.content)[0] for r in batch_requests(fake))


async def test_no_request_carries_more_than_the_batch_limit(
    clock: Clock, make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, batch_limit=3)
    adapter = make_adapter(settings_for(api_batch_max_limit=3), transport=fake.transport())
    outcomes = await adapter.push(people(7))
    assert all(isinstance(o, Synced) for o in outcomes), outcomes
    assert fake.batch_sizes == [3, 3, 1]


async def test_a_batch_over_mautics_limit_stops_the_run_naming_the_setting(
    clock: Clock, make_adapter: MakeAdapter
) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, batch_limit=2)
    with pytest.raises(FatalError, match="MAUTIC_API_BATCH_MAX_LIMIT"):
        await make_adapter(transport=fake.transport()).push(people(3))
    assert fake.contacts == {}


@pytest.mark.parametrize(
    "base_url",
    [
        "https://mautic.example.com",
        "https://mautic.example.com/",
        "https://mautic.example.com/api",
        "https://mautic.example.com/api/",
    ],
)
async def test_base_url_works_with_or_without_api_and_slash(
    fake: FakeMautic, make_adapter: MakeAdapter, settings_for: SettingsFor, base_url: str
) -> None:
    outcomes = await make_adapter(settings_for(base_url=base_url)).push(people(1))
    assert isinstance(outcomes[0], Synced)
    assert [str(r.url) for r in fake.requests] == [
        "https://mautic.example.com/oauth/v2/token",
        "https://mautic.example.com/api/contacts/batch/new",
    ]


async def test_mautic_in_a_sub_folder(make_adapter: MakeAdapter, settings_for: SettingsFor) -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/oauth/v2/token"):
            return httpx.Response(200, json={"access_token": "a" * 30, "expires_in": 3600})
        return httpx.Response(201, json={"contacts": [{"id": 9}], "statusCodes": [201]})

    adapter = make_adapter(
        settings_for(base_url="https://example.com/mautic/api"),
        transport=httpx.MockTransport(handle),
    )
    assert await adapter.push(people(1)) != []
    assert seen == ["/mautic/oauth/v2/token", "/mautic/api/contacts/batch/new"]


# -- answers in either shape ------------------------------------------------------------------------


def _record(contact_id: int, email: str) -> dict[str, Any]:
    return {"id": contact_id, "fields": {"all": {"id": contact_id, "email": email}}}


@pytest.mark.parametrize(
    "shape",
    [
        # keyed by index, as JSON objects
        lambda r: {
            "contacts": {"0": r[0], "2": r[2]},
            "statusCodes": {"0": 201, "1": 422, "2": 200},
            "errors": {"1": {"message": "email: invalid domain", "code": 422, "type": "api"}},
        },
        # lists where PHP's keys were 0..n-1, an object where they were not
        lambda r: {
            "contacts": {"0": r[0], "2": r[2]},
            "statusCodes": [201, 422, 200],
            "errors": {"1": {"message": "email: invalid domain", "code": 422}},
        },
        # a re-numbered list of only the failures and only the successes
        lambda r: {
            "contacts": [r[0], r[2]],
            "statusCodes": [201, 422, 200],
            "errors": [{"message": "email: invalid domain", "code": 422}],
        },
        # no statusCodes at all (older Mautic): the errors say which failed
        lambda r: {
            "contacts": {"0": r[0], "2": r[2]},
            "errors": {"1": {"message": "email: invalid domain", "code": 422}},
        },
    ],
    ids=["objects", "mixed", "renumbered-lists", "no-status-codes"],
)
async def test_per_contact_results_in_every_shape_mautic_sends(
    make_adapter: MakeAdapter, shape: Callable[[list[dict[str, Any]]], dict[str, Any]]
) -> None:
    contacts = [person("a@acme.io"), person("b@acme.io"), person("c@acme.io")]
    records = [_record(11, "a@acme.io"), {}, _record(12, "C@ACME.IO")]
    outcomes = await make_adapter(transport=answering(shape(records))).push(contacts)
    assert outcomes[0] == Synced(contacts[0].id, "11")
    assert isinstance(outcomes[1], PermanentFailure)
    assert "invalid domain" in outcomes[1].reason
    assert outcomes[2] == Synced(contacts[2].id, "12")


async def test_error_at_index_zero_only_arrives_as_a_list(make_adapter: MakeAdapter) -> None:
    contacts = [person("a@acme.io"), person("b@acme.io")]
    body = {
        "contacts": {"1": _record(5, "b@acme.io")},
        "statusCodes": [400, 201],
        "errors": [{"message": "email: A valid email address is required.", "code": 400}],
    }
    outcomes = await make_adapter(transport=answering(body)).push(contacts)
    assert isinstance(outcomes[0], PermanentFailure)
    assert outcomes[1] == Synced(contacts[1].id, "5")


async def test_per_contact_server_errors_are_retried_later(make_adapter: MakeAdapter) -> None:
    contacts = [person("a@acme.io"), person("b@acme.io")]
    body = {
        "contacts": {},
        "statusCodes": {"0": 500, "1": 429},
        "errors": {"0": {"message": "Deadlock found", "code": 500}, "1": {"code": 429}},
    }
    outcomes = await make_adapter(transport=answering(body)).push(contacts)
    assert all(isinstance(o, TransientFailure) for o in outcomes), outcomes


async def test_a_per_contact_403_means_the_api_user_lacks_permission(
    make_adapter: MakeAdapter,
) -> None:
    body = {
        "contacts": {},
        "statusCodes": [403],
        "errors": [
            {"message": "You do not have access to the requested area/action.", "code": 403}
        ],
    }
    with pytest.raises(FatalError, match="permission to create and edit contacts"):
        await make_adapter(transport=answering(body)).push(people(1))


async def test_an_answer_for_another_email_is_never_stored_as_this_contacts_id(
    make_adapter: MakeAdapter,
) -> None:
    body = {"contacts": [_record(7, "someone.else@acme.io")], "statusCodes": [201]}
    (outcome,) = await make_adapter(transport=answering(body)).push([person("a@acme.io")])
    assert isinstance(outcome, TransientFailure)


@pytest.mark.parametrize(
    "body",
    [
        {"contacts": [{"id": 1}]},  # fewer results than contacts: the missing one is retried
        {"statusCodes": [201, 201], "contacts": [{"id": 1}]},
    ],
)
async def test_a_contact_missing_from_the_answer_is_retried_not_lost(
    make_adapter: MakeAdapter, body: dict[str, Any]
) -> None:
    contacts = [person("a@acme.io"), person("b@acme.io")]
    outcomes = await make_adapter(transport=answering(body)).push(contacts)
    assert isinstance(outcomes[0], Synced)
    assert isinstance(outcomes[1], TransientFailure)


@pytest.mark.parametrize(
    "body", [{"unexpected": True}, {"statusCodes": "201", "contacts": []}, [1, 2]]
)
async def test_an_answer_without_results_is_an_error_quoting_it(
    make_adapter: MakeAdapter, body: Any
) -> None:
    outcomes = await make_adapter(transport=answering(body)).push(people(2))
    for outcome in outcomes:
        assert isinstance(outcome, TransientFailure)
        # the answer as it came over the wire (httpx 0.28 writes JSON compactly, 0.27 with spaces)
        assert httpx.Response(201, json=body).text[:10] in outcome.reason


# -- whole-request failures -------------------------------------------------------------------------


async def test_a_rejected_batch_fails_its_contacts_for_good(make_adapter: MakeAdapter) -> None:
    body = {"errors": [{"message": "Request payload must be an array.", "code": 400}]}
    outcomes = await make_adapter(transport=answering(body, status=400)).push(people(2))
    assert all(isinstance(o, PermanentFailure) and "array" in o.reason for o in outcomes)


async def test_wrong_base_url_stops_the_run_naming_it(make_adapter: MakeAdapter) -> None:
    body = {
        "errors": [{"message": "Requested URL not found: /api/contacts/batch/new", "code": 404}]
    }
    with pytest.raises(FatalError, match="MAUTIC_BASE_URL"):
        await make_adapter(transport=answering(body, status=404)).push(people(1))


async def test_a_redirect_stops_the_run_naming_the_base_url(
    make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://mautic.example.com/s/login"})

    adapter = make_adapter(settings_for("basic"), transport=httpx.MockTransport(handle))
    with pytest.raises(FatalError, match=r"redirects to https://mautic\.example\.com/s/login"):
        await adapter.push(people(1))


async def test_rate_limit_answer_retries_the_batch_after_mautics_reset(
    clock: Clock, make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    fake = FakeMautic(
        grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, rate_limit=RateLimit(1, 3600)
    )
    settings = settings_for("basic")
    assert all(
        isinstance(o, Synced)
        for o in await make_adapter(settings, transport=fake.transport()).push(people(1))
    )
    outcomes = await make_adapter(settings, transport=fake.transport()).push(people(2, "b.io"))
    for outcome in outcomes:
        assert isinstance(outcome, TransientFailure)
        assert outcome.retry_after is not None
        assert outcome.retry_after > 3000


# -- auth -------------------------------------------------------------------------------------------


async def test_access_token_is_fetched_once_and_reused(
    fake: FakeMautic, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter()
    await adapter.push(people(1))
    await adapter.push(people(1, "b.io"))
    await asyncio.gather(adapter.push(people(2, "c.io")), adapter.push(people(2, "d.io")))
    assert fake.token_requests == 1
    token_request = fake.requests[0]
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert b"grant_type=client_credentials" in token_request.content
    assert all(r.headers["authorization"].startswith("Bearer ") for r in batch_requests(fake))


async def test_token_is_renewed_before_it_expires(
    fake: FakeMautic, make_adapter: MakeAdapter, clock: Clock
) -> None:
    adapter = make_adapter()
    await adapter.push(people(1))
    clock.advance(3600 - 10)  # within the safety margin of the fake's 3600 s lifetime
    outcomes = await adapter.push(people(1, "b.io"))
    assert isinstance(outcomes[0], Synced)
    assert fake.token_requests == 2
    assert len(batch_requests(fake)) == 2  # no request was refused on the way


async def test_a_token_refused_mid_run_is_replaced_once(
    fake: FakeMautic, make_adapter: MakeAdapter
) -> None:
    adapter = make_adapter()
    await adapter.push(people(1))
    fake.expire_tokens()  # Mautic says "expired" although our clock says it is still good
    outcomes = await adapter.push(people(2, "b.io"))
    assert all(isinstance(o, Synced) for o in outcomes), outcomes
    assert fake.token_requests == 2
    assert len(batch_requests(fake)) == 3


async def test_a_second_401_after_a_new_token_stops_the_run(
    fake: FakeMautic, make_adapter: MakeAdapter
) -> None:
    body = {"errors": [{"message": "The access token provided is invalid.", "code": 401}]}
    refuse = intercept(
        fake,
        lambda r: httpx.Response(401, json=body) if r.url.path.endswith("/batch/new") else None,
    )
    with pytest.raises(AuthenticationError) as raised:
        await make_adapter(transport=httpx.MockTransport(refuse)).push(people(1))
    assert "MAUTIC_CLIENT_ID" in str(raised.value)
    assert fake.token_requests == 2
    assert len(batch_requests(fake)) == 2


async def test_basic_auth_401_is_fatal_without_a_retry(
    clock: Clock, make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    fake = FakeMautic(
        grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, password="another-password"
    )
    with pytest.raises(AuthenticationError, match="MAUTIC_USERNAME and MAUTIC_PASSWORD") as raised:
        await make_adapter(settings_for("basic"), transport=fake.transport()).push(people(1))
    assert len(batch_requests(fake)) == 1
    assert "fake-mautic-password" not in str(raised.value)


async def test_wrong_client_credentials_are_fatal_and_name_the_settings(
    clock: Clock, make_adapter: MakeAdapter
) -> None:
    fake = FakeMautic(
        grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, client_secret="the-real-client-secret"
    )
    with pytest.raises(AuthenticationError) as raised:
        await make_adapter(transport=fake.transport()).push(people(1))
    message = str(raised.value)
    assert "MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET" in message
    assert "invalid_client" in message
    assert "fake-mautic-client-secret" not in message
    assert batch_requests(fake) == []


async def test_a_client_without_the_client_credentials_grant_stops_with_how_to_get_one(
    clock: Clock, make_adapter: MakeAdapter
) -> None:
    fake = FakeMautic(clock=clock)  # Mautic's default client: authorization_code, refresh_token
    with pytest.raises(AuthenticationError) as raised:
        await make_adapter(transport=fake.transport()).push(people(2))
    message = str(raised.value)
    assert "unauthorized_client" in message
    assert "client-credentials grant" in message
    assert "administrator" in message and "API Credentials" in message
    assert "MAUTIC_USERNAME and MAUTIC_PASSWORD" in message  # Basic auth as the alternative
    assert "check MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET" not in message
    assert "fake-mautic-client-secret" not in message
    assert batch_requests(fake) == []


@pytest.mark.parametrize("status", [400, 422])
async def test_form_errors_fail_the_contact_with_mautics_field_details(
    clock: Clock, make_adapter: MakeAdapter, status: Any
) -> None:
    fake = FakeMautic(clock=clock, grant_types=CLIENT_CREDENTIALS_GRANTS, validation_status=status)
    good, bad = person("ada@acme.io"), person("bob@rejected.invalid")
    outcomes = {
        o.contact_id: o for o in await make_adapter(transport=fake.transport()).push([good, bad])
    }
    assert isinstance(outcomes[good.id], Synced)
    refused = outcomes[bad.id]
    assert isinstance(refused, PermanentFailure)
    assert f"HTTP {status}" in refused.reason
    assert (
        "email: bob@rejected.invalid does not seem to have a valid email domain" in refused.reason
    )


async def test_a_form_error_known_only_from_its_details_is_quoted(
    make_adapter: MakeAdapter,
) -> None:
    """``details`` is what names the field when the message does not (returnError keeps both)."""
    body = {
        "contacts": [],
        "statusCodes": [400],
        "errors": [
            {
                "code": 400,
                "message": "Validation failed",
                "details": {"email": ["ada@acme.io is invalid."]},
                "type": None,
            }
        ],
    }
    (outcome,) = await make_adapter(transport=answering(body)).push([person("ada@acme.io")])
    assert isinstance(outcome, PermanentFailure)
    assert "Validation failed email: ada@acme.io is invalid." in outcome.reason


@pytest.mark.parametrize("mode", ["oauth2", "basic"])
async def test_api_disabled_in_mautic_names_the_setting_to_enable(
    clock: Clock, make_adapter: MakeAdapter, settings_for: SettingsFor, mode: str
) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, api_enabled=False)
    with pytest.raises(FatalError) as raised:
        await make_adapter(settings_for(mode), transport=fake.transport()).push(people(1))
    assert '"API enabled?"' in str(raised.value)
    assert "api_enabled" in str(raised.value)
    assert "Configuration > API Settings" in str(raised.value)
    assert len(fake.requests) == 1  # recognised at once: no token refresh, no retries


async def test_basic_auth_disabled_in_mautic_names_the_setting_to_enable(
    clock: Clock, make_adapter: MakeAdapter, settings_for: SettingsFor
) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock, basic_auth_enabled=False)
    with pytest.raises(FatalError) as raised:
        await make_adapter(settings_for("basic"), transport=fake.transport()).push(people(1))
    assert "api_enable_basic_auth" in str(raised.value)
    assert "MAUTIC_CLIENT_ID" in str(raised.value)  # the alternative


async def test_the_access_token_never_appears_in_an_error(
    fake: FakeMautic, make_adapter: MakeAdapter
) -> None:
    def echo_headers(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/batch/new"):
            return httpx.Response(502, text=f"proxy error for {request.headers['authorization']}")
        return None

    outcomes = await make_adapter(
        transport=httpx.MockTransport(intercept(fake, echo_headers))
    ).push(people(1))
    (outcome,) = outcomes
    assert isinstance(outcome, TransientFailure)
    assert "Bearer ***" in outcome.reason
    token = fake.requests[1].headers["authorization"].removeprefix("Bearer ")
    assert token not in outcome.reason


# -- configuration ----------------------------------------------------------------------------------


def _no_http(request: httpx.Request) -> httpx.Response:
    raise AssertionError("the factory must not send requests")


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"client_id": "1_x", "client_secret": "y" * 10}, "MAUTIC_BASE_URL"),
        (
            {"base_url": "mautic.example.com", "username": "u", "password": "pw12"},
            "MAUTIC_BASE_URL",
        ),
        ({"base_url": "https://m.example.com"}, "MAUTIC_CLIENT_ID"),
        ({"base_url": "https://m.example.com", "client_id": "1_x"}, "MAUTIC_CLIENT_SECRET"),
        ({"base_url": "https://m.example.com", "client_secret": "y" * 10}, "MAUTIC_CLIENT_ID"),
        ({"base_url": "https://m.example.com", "username": "u"}, "MAUTIC_PASSWORD"),
        ({"base_url": "https://m.example.com", "password": "pw12"}, "MAUTIC_USERNAME"),
    ],
)
def test_missing_settings_are_named_before_any_request(
    settings: dict[str, Any], names: str
) -> None:
    from crmsync_mautic import SPEC

    context = AdapterContext.for_testing(httpx.MockTransport(_no_http))
    with pytest.raises(ConfigurationError, match=names):
        SPEC.factory(MauticSettings(**settings), context)


def test_repr_holds_no_secret(make_adapter: MakeAdapter, settings_for: SettingsFor) -> None:
    adapter = make_adapter(settings_for("basic"))
    assert "fake-mautic-password" not in repr(adapter)
    assert "basic" in repr(adapter)
