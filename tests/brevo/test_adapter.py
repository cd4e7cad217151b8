"""The Brevo adapter against the fake Brevo, at the transport: single upserts, imports, errors, limits."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from crmsync_brevo import BrevoAdapter, BrevoSettings, FakeBrevo, ManualClock, parse_email_report
from crmsync_brevo.adapter import IMPORT_MAX_BYTES
from crmsync_brevo.fake import REPORT_HOST, SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core.adapter import AdapterContext
from crmsync_core.contacts import (
    Contact,
    Outcome,
    PermanentFailure,
    Skipped,
    Synced,
    TransientFailure,
)
from crmsync_core.errors import AuthenticationError, ConfigurationError, FatalError
from crmsync_core.ratelimit import RateLimit
from crmsync_core.retry import RequestRetry

KEY = "xkeysib-test-0123456789abcdef"
FAST = RequestRetry(attempts=3, initial_wait=0.0, max_wait=0.0, max_rate_limit_wait=5.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeBrevo:
    return FakeBrevo(api_key=KEY, clock=clock, import_delay_seconds=3.0)


def settings(**changes: Any) -> BrevoSettings:
    values: dict[str, Any] = {
        "api_key": KEY,
        "list_id": SANDBOX_LIST_ID,
        "api_base_url": SANDBOX_BASE_URL,
        "import_threshold": 5,
        "import_poll_interval_seconds": 1.0,
        "import_timeout_seconds": 60.0,
    }
    values.update(changes)
    return BrevoSettings(**values)


class Run:
    """Builds adapters on the fake, with the manual clock, and closes them after the test."""

    def __init__(self, fake: FakeBrevo, clock: ManualClock) -> None:
        self.fake = fake
        self.clock = clock
        self.sleeps: list[float] = []
        self.adapters: list[BrevoAdapter] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await self.clock.sleep(seconds)

    def adapter(self, *, context: AdapterContext | None = None, **changes: Any) -> BrevoAdapter:
        context = context or AdapterContext.for_testing(self.fake.transport(), request_retry=FAST)
        adapter = BrevoAdapter(settings(**changes), context, clock=self.clock, sleep=self.sleep)
        self.adapters.append(adapter)
        return adapter

    async def push(self, contacts: Sequence[Contact], **changes: Any) -> dict[Any, Outcome]:
        outcomes = await self.adapter(**changes).push(contacts)
        assert sorted(map(str, (o.contact_id for o in outcomes))) == sorted(
            map(str, (c.id for c in contacts))
        )
        return {o.contact_id: o for o in outcomes}


@pytest.fixture
async def run(fake: FakeBrevo, clock: ManualClock) -> AsyncIterator[Run]:
    run = Run(fake, clock)
    yield run
    for adapter in run.adapters:
        await adapter.aclose()


def contact(email: str | None, **fields: Any) -> Contact:
    return Contact(id=uuid.uuid4(), email=email, **fields)


def people(count: int, *, domain: str = "acme.io", **fields: Any) -> list[Contact]:
    return [contact(f"person{n}@{domain}", name=f"Person {n}", **fields) for n in range(count)]


def bodies(fake: FakeBrevo, method: str, path: str) -> list[Any]:
    return [json.loads(r.content) for r in fake.requests_to(method, path)]


# -- single upserts ------------------------------------------------------------------------------


async def test_invalid_emails_are_skipped_before_any_request(run: Run, fake: FakeBrevo) -> None:
    contacts = [contact(None), contact("not-an-email"), contact("a@@acme.io")]
    outcomes = await run.push(contacts)
    assert all(isinstance(o, Skipped) and o.reason for o in outcomes.values())
    assert fake.requests == []


async def test_created_contact_stores_brevos_id_and_an_update_stores_the_email(
    run: Run, fake: FakeBrevo
) -> None:
    first = contact("anna@acme.io", name="Anna Müller", phone_number="+33 6 12 34 56 78")
    created = (await run.push([first]))[first.id]
    stored = fake.contact("anna@acme.io")
    assert stored is not None
    assert created == Synced(first.id, str(stored.id))
    assert stored.attributes["FIRSTNAME"] == "Anna"
    assert stored.attributes["SMS"] == "+33612345678"
    assert stored.list_ids == {SANDBOX_LIST_ID}

    again = contact("anna@acme.io", name="Anna Schmidt")
    updated = (await run.push([again]))[again.id]
    assert updated == Synced(again.id, None, fallback_id="anna@acme.io")  # 204: Brevo returns no id
    assert stored.attributes["LASTNAME"] == "Schmidt"
    assert all(body["updateEnabled"] is True for body in bodies(fake, "POST", "/contacts"))


async def test_no_list_id_sends_no_list(run: Run, fake: FakeBrevo) -> None:
    await run.push([contact("anna@acme.io")], list_id=None)
    (body,) = bodies(fake, "POST", "/contacts")
    assert "listIds" not in body


async def test_contacts_sharing_an_email_are_sent_once(run: Run, fake: FakeBrevo) -> None:
    one, two = contact("Anna@Acme.io"), contact("anna@acme.io ")
    outcomes = await run.push([one, two])
    assert len(fake.requests_to("POST", "/contacts")) == 1
    assert isinstance(outcomes[one.id], Synced)
    assert outcomes[two.id] == Synced(two.id, outcomes[one.id].remote_id)  # type: ignore[union-attr]


async def test_a_contact_brevo_rejects_fails_for_good_with_brevos_reason(run: Run) -> None:
    bad = contact("someone@rejected.invalid")
    good = contact("fine@acme.io")
    outcomes = await run.push([bad, good])
    assert isinstance(outcomes[good.id], Synced)
    failure = outcomes[bad.id]
    assert isinstance(failure, PermanentFailure)
    assert "400" in failure.reason
    assert "invalid_parameter" in failure.reason
    assert "Invalid email address" in failure.reason


async def test_a_phone_number_brevo_refuses_never_costs_the_contact(
    run: Run, fake: FakeBrevo
) -> None:
    owner = contact("owner@acme.io", phone_number="+33 6 12 34 56 78")
    sharer = contact("sharer@acme.io", phone_number="+33612345678")
    await run.push([owner])
    outcomes = await run.push([sharer])
    assert isinstance(outcomes[sharer.id], Synced)
    stored = fake.contact("sharer@acme.io")
    assert stored is not None
    assert "SMS" not in stored.attributes
    first, retry = bodies(fake, "POST", "/contacts")[1:]
    assert first["attributes"]["SMS"] == "+33612345678"
    assert "SMS" not in retry["attributes"]


async def test_a_phone_number_without_country_code_is_not_sent(run: Run, fake: FakeBrevo) -> None:
    local = contact("local@acme.io", phone_number="06 12 34 56 78")
    outcomes = await run.push([local])
    assert isinstance(outcomes[local.id], Synced)
    (body,) = bodies(fake, "POST", "/contacts")
    assert "SMS" not in body["attributes"]


async def test_server_errors_are_retried_within_the_request(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(503, times=2, path="/contacts")
    one = contact("anna@acme.io")
    outcomes = await run.push([one])
    assert isinstance(outcomes[one.id], Synced)
    assert len(fake.requests_to("POST", "/contacts")) == 3


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503])
async def test_lasting_transient_answers_are_transient_failures(
    run: Run, fake: FakeBrevo, status: int
) -> None:
    fake.fail_next(status, times=10, path="/contacts")
    one = contact("anna@acme.io")
    outcome = (await run.push([one]))[one.id]
    assert isinstance(outcome, TransientFailure)
    assert str(status) in outcome.reason


async def test_timeouts_are_retried_then_transient(run: Run, fake: FakeBrevo) -> None:
    fake.drop_next(times=1)
    one, two = contact("anna@acme.io"), contact("bruno@acme.io")
    assert isinstance((await run.push([one]))[one.id], Synced)
    fake.drop_next(times=10)
    outcome = (await run.push([two]))[two.id]
    assert isinstance(outcome, TransientFailure)
    assert "timed out" in outcome.reason


async def test_a_rate_limit_is_waited_out_without_using_attempts(run: Run, fake: FakeBrevo) -> None:
    # More 429s than the request has attempts: waiting for the budget is not a failed attempt.
    fake.fail_next(429, times=5, headers={"x-sib-ratelimit-reset": "0.001"})
    one = contact("anna@acme.io")
    outcome = (await run.push([one]))[one.id]
    assert isinstance(outcome, Synced)
    assert len(fake.requests_to("POST", "/contacts")) == 6


async def test_a_rate_limit_that_outlasts_the_wait_is_transient_with_its_reset(
    run: Run, fake: FakeBrevo
) -> None:
    fake.fail_next(429, times=1, headers={"x-sib-ratelimit-reset": "3600"})
    one = contact("anna@acme.io")
    outcome = (await run.push([one]))[one.id]
    assert isinstance(outcome, TransientFailure)
    assert outcome.retry_after == 3600


async def test_the_ratelimit_headers_pause_the_run() -> None:
    limited = FakeBrevo(api_key=KEY, rate_limit=RateLimit(3, 0.05))
    context = AdapterContext.for_testing(limited.transport(), request_retry=FAST)
    adapter = BrevoAdapter(settings(import_threshold=100), context)
    try:
        outcomes = await adapter.push(people(8))
    finally:
        await adapter.aclose()
    # "remaining: 0" pauses the limiter until the fake's window resets, and a 429 is waited out:
    # every contact gets through.
    assert all(isinstance(o, Synced) for o in outcomes)


async def test_unauthorized_is_fatal_and_says_what_to_fix(fake: FakeBrevo) -> None:
    context = AdapterContext.for_testing(fake.transport(), request_retry=FAST)
    adapter = BrevoAdapter(settings(api_key="xkeysib-wrong-key-000000"), context)
    try:
        with pytest.raises(AuthenticationError) as raised:
            await adapter.push(people(3))
    finally:
        await adapter.aclose()
    assert "BREVO_API_KEY" in str(raised.value)
    assert "xkeysib-wrong-key-000000" not in str(raised.value)


async def test_unknown_list_is_fatal_and_names_brevo_list_id(run: Run) -> None:
    with pytest.raises(FatalError, match="BREVO_LIST_ID") as raised:
        await run.push(people(2), list_id=999)
    assert "999" in str(raised.value)


async def test_unknown_list_wording_as_invalid_parameter_is_fatal_too(
    run: Run, fake: FakeBrevo
) -> None:
    fake.fail_next(
        400, path="/contacts", body={"code": "invalid_parameter", "message": "Invalid listIds"}
    )
    with pytest.raises(FatalError, match="BREVO_LIST_ID"):
        await run.push(people(1))


async def test_blacklisted_is_not_mistaken_for_an_unknown_list(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(
        400,
        path="/contacts",
        body={"code": "invalid_parameter", "message": "Contact is blacklisted"},
    )
    one = contact("anna@acme.io")
    assert isinstance((await run.push([one]))[one.id], PermanentFailure)


async def test_missing_api_key_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="BREVO_API_KEY"):
        BrevoAdapter(BrevoSettings(api_key=None), AdapterContext.for_testing())


async def test_malformed_created_answer_quotes_it(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(201, path="/contacts", body=b"<html>maintenance</html>")
    one = contact("anna@acme.io")
    outcome = (await run.push([one]))[one.id]
    assert isinstance(outcome, TransientFailure)
    assert "maintenance" in outcome.reason


# -- bulk import ---------------------------------------------------------------------------------


async def test_above_the_threshold_contacts_are_imported(run: Run, fake: FakeBrevo) -> None:
    contacts = people(20, phone_number="+1 555 010 0000")
    outcomes = await run.push(contacts)
    assert all(
        o == Synced(c.id, None, fallback_id=c.email)
        for c, o in zip(contacts, outcomes.values(), strict=True)
    )
    assert fake.requests_to("POST", "/contacts") == []
    (body,) = bodies(fake, "POST", "/contacts/import")
    assert len(body["jsonBody"]) == 20
    assert body["listIds"] == [SANDBOX_LIST_ID]
    assert len(fake.contacts) == 20
    assert fake.contact("person7@acme.io").list_ids == {SANDBOX_LIST_ID}  # type: ignore[union-attr]
    assert not any("/contacts/batch" in str(r.url) for r in fake.requests)


async def test_at_the_threshold_contacts_go_one_by_one(run: Run, fake: FakeBrevo) -> None:
    await run.push(people(5))
    assert len(fake.requests_to("POST", "/contacts")) == 5
    assert fake.requests_to("POST", "/contacts/import") == []


async def test_without_a_list_large_batches_go_one_by_one(run: Run, fake: FakeBrevo) -> None:
    outcomes = await run.push(people(12), list_id=None)
    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert len(fake.requests_to("POST", "/contacts")) == 12
    assert fake.requests_to("POST", "/contacts/import") == []


async def test_the_older_in_process_spelling_is_still_running(run: Run, fake: FakeBrevo) -> None:
    fake.running_status, fake.import_delay_seconds = "in_process", 10.0
    outcomes = await run.push(people(10))
    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert [p.status for p in fake.processes.values()] == ["completed"]


async def test_polling_backs_off_until_the_process_completes(run: Run, fake: FakeBrevo) -> None:
    fake.import_delay_seconds = 40.0
    await run.push(people(10))
    # Doubling up to the spacing of Brevo's 100-per-hour bucket (36 s), in which polls count.
    assert run.sleeps[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert max(run.sleeps) <= 36.0
    statuses = [p.status for p in fake.processes.values()]
    assert statuses == ["completed"]


async def test_import_reported_invalid_counts_are_resolved_contact_by_contact(
    run: Run, fake: FakeBrevo
) -> None:
    fake.import_report = "counts"  # the older published spec's form
    contacts = [*people(8), contact("x@rejected.invalid"), contact("y@rejected.invalid")]
    outcomes = await run.push(contacts)
    for c in contacts:
        if c.email.endswith("rejected.invalid"):  # type: ignore[union-attr]
            failure = outcomes[c.id]
            assert isinstance(failure, PermanentFailure)
            assert "Invalid email address" in failure.reason
        else:
            assert isinstance(outcomes[c.id], Synced)
    # The count did not say which: every contact of the import was confirmed by a single upsert.
    assert len(fake.requests_to("POST", "/contacts")) == 10


@pytest.mark.parametrize("layout", ["rows", "email_reason"])
async def test_import_invalid_email_reports_fail_only_the_listed_contacts(
    run: Run, fake: FakeBrevo, layout: Any
) -> None:
    """The documented default: ``info.import.invalid_emails`` is the URL of a CSV report."""
    fake.report_layout = layout
    contacts = [*people(8), contact("x@rejected.invalid")]
    outcomes = await run.push(contacts)
    failure = outcomes[contacts[-1].id]
    assert isinstance(failure, PermanentFailure)
    assert "refused the e-mail address" in failure.reason
    if layout == "email_reason":
        assert "Invalid email address" in failure.reason
    assert all(isinstance(outcomes[c.id], Synced) for c in contacts[:-1])
    assert fake.requests_to("POST", "/contacts") == []
    (download,) = [r for r in fake.requests if r.url.host == REPORT_HOST]
    assert "api-key" not in download.headers  # the file host never sees the key


def completed_import(invalid_emails: object) -> dict[str, Any]:
    return {
        "id": 100,
        "name": "IMPORTUSER",
        "status": "completed",
        "info": {"import": {"invalid_emails": invalid_emails}},
    }


async def test_an_unreadable_report_falls_back_to_single_upserts(run: Run, fake: FakeBrevo) -> None:
    missing = f"https://{REPORT_HOST}/imports/100/gone.csv"  # the file host answers 404
    fake.fail_next(200, path="/processes", body=completed_import(missing))
    contacts = [*people(6), contact("x@rejected.invalid")]
    outcomes = await run.push(contacts)
    assert isinstance(outcomes[contacts[-1].id], PermanentFailure)
    assert all(isinstance(outcomes[c.id], Synced) for c in contacts[:-1])


async def test_a_failed_import_is_transient_not_success(run: Run, fake: FakeBrevo) -> None:
    fake.import_outcome = "failed"
    outcomes = await run.push(people(10))
    for outcome in outcomes.values():
        assert isinstance(outcome, TransientFailure)
        assert "failed" in outcome.reason
        assert "could not be parsed" in outcome.reason
    assert fake.contacts == {}


async def test_an_import_that_never_finishes_times_out_as_transient(
    run: Run, fake: FakeBrevo, clock: ManualClock
) -> None:
    fake.import_outcome = "stalled"
    started = clock()
    outcomes = await run.push(people(10), import_timeout_seconds=120.0)
    assert all(
        isinstance(o, TransientFailure) and "did not finish within 120 s" in o.reason
        for o in outcomes.values()
    )
    assert clock() - started == pytest.approx(120.0)


async def test_import_post_failures_are_transient(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(502, times=10, path="/contacts/import")
    outcomes = await run.push(people(10))
    assert all(isinstance(o, TransientFailure) and "502" in o.reason for o in outcomes.values())


async def test_polling_failures_are_transient(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(500, times=10, path="/processes")
    outcomes = await run.push(people(10))
    assert all(isinstance(o, TransientFailure) for o in outcomes.values())


async def test_a_refused_import_falls_back_to_single_upserts(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(
        400, path="/contacts/import", body={"code": "invalid_parameter", "message": "bad json"}
    )
    outcomes = await run.push(people(7))
    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert len(fake.requests_to("POST", "/contacts")) == 7


async def test_import_into_an_unknown_list_is_fatal(run: Run) -> None:
    with pytest.raises(FatalError, match="BREVO_LIST_ID"):
        await run.push(people(10), list_id=404)


async def test_unauthorized_import_is_fatal(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(401, path="/contacts/import")
    with pytest.raises(AuthenticationError, match="BREVO_API_KEY"):
        await run.push(people(10))


async def test_each_import_request_stays_under_8_mb(run: Run, fake: FakeBrevo) -> None:
    long_url = "https://acme.io/" + "p" * 5000
    contacts = people(2000, source_url=long_url)  # about 10 MB of jsonBody in all
    outcomes = await run.push(contacts)
    assert all(isinstance(o, Synced) for o in outcomes.values())
    imports = fake.requests_to("POST", "/contacts/import")
    assert len(imports) == 2
    assert all(len(r.content) < IMPORT_MAX_BYTES for r in imports)
    assert sum(len(json.loads(r.content)["jsonBody"]) for r in imports) == 2000


# -- the import report parser --------------------------------------------------------------------


def test_report_parser_reads_emails_and_reasons() -> None:
    text = "EMAIL;REASON\nA@x.io;Invalid email address\nb@x.io;\n"
    assert parse_email_report(text) == {
        "a@x.io": "Invalid email address",
        "b@x.io": "listed in Brevo's invalid e-mails report",
    }


def test_report_parser_takes_the_email_column_of_a_records_report() -> None:
    text = 'SOURCE_URL;EMAIL;FIRSTNAME\nhttps://x.io/@team;C@x.io;Cy\n"a;b@c";d@x.io;\n'
    assert set(parse_email_report(text) or {}) == {"c@x.io", "d@x.io"}


def test_report_parser_reads_headerless_comma_files() -> None:
    assert parse_email_report("1,c@x.io\n2,d@x.io\n") is not None
    assert set(parse_email_report("1,c@x.io\n2,d@x.io\n") or {}) == {"c@x.io", "d@x.io"}


@pytest.mark.parametrize("text", ["", "EMAIL;REASON\n", "just some words\nno addresses\n"])
def test_report_parser_says_when_a_report_names_nobody(text: str) -> None:
    assert parse_email_report(text) is None


async def test_reports_on_an_untrusted_scheme_are_not_fetched(run: Run, fake: FakeBrevo) -> None:
    fake.fail_next(200, path="/processes", body=completed_import("file:///etc/passwd"))
    contacts = [*people(6), contact("x@rejected.invalid")]
    outcomes = await run.push(contacts)
    assert isinstance(outcomes[contacts[-1].id], PermanentFailure)
    assert not any(r.url.host == REPORT_HOST for r in fake.requests)


async def test_loopback_server_serves_the_same_api(fake: FakeBrevo, clock: ManualClock) -> None:
    async with fake.serve() as base_url:
        context = AdapterContext.for_testing(httpx.AsyncHTTPTransport(), request_retry=FAST)
        adapter = BrevoAdapter(settings(api_base_url=base_url), context)
        try:
            one = contact("anna@acme.io", name="Anna")
            (outcome,) = await adapter.push([one])
        finally:
            await adapter.aclose()
    stored = fake.contact("anna@acme.io")
    assert stored is not None
    assert outcome == Synced(one.id, str(stored.id))
