"""The contract every adapter keeps, as tests an adapter author runs against their own adapter.

Subclass :class:`AdapterContract` in a test module, point it at your spec, and say how many contacts a
request carries::

    from crmsync_core.testing.contract import AdapterContract
    from crmsync_mycrm.plugin import SPEC

    class TestMyCrmContract(AdapterContract):
        spec = SPEC

        def contacts_in_request(self, request: httpx.Request) -> int:
            return len(json.loads(request.content)["inputs"])

The spec must have a ``sandbox`` (or the class overrides :meth:`AdapterContract.make_sandbox`): a
healthy fake of the CRM. The kit wraps its transport to inject 401s, 429s with the CRM's rate-limit
headers, 5xx, timeouts, malformed answers, per-contact rejections and a key refused mid-batch, and treats
every ``SecretStr`` in the sandbox's settings as a secret that must never appear in an outcome, an
exception or a log line. Where a check needs the CRM's own answer, the class gives it through a small
hook: :meth:`AdapterContract.answer_with_item_errors` (some contacts of a request rejected, each with its
reason), :meth:`AdapterContract.rate_limited_answer` and :meth:`AdapterContract.small_requests`.

The kit marks its own coroutine tests for pytest-asyncio: an adapter package needs no pytest
configuration (``asyncio_mode``) to run it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from ..adapter import (
    AdapterContext,
    AdapterSpec,
    ReportedOutcomes,
    Sandbox,
    SandboxOptions,
    collect_outcomes,
)
from ..contacts import (
    Contact,
    Outcome,
    PermanentFailure,
    Skipped,
    Synced,
    TransientFailure,
    invalid_email_reason,
)
from ..errors import FatalError
from ..http import url_secrets
from ..ratelimit import Limiter
from ..retry import RequestRetry
from ..settings import SecretUrl
from .data import contact_rows

#: answers a request in the CRM's place; ``None`` passes it on to the sandbox
Responder = Callable[[httpx.Request], httpx.Response | None]


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` (or answers with ``respond``) and keeps them for inspection."""

    def __init__(self, inner: httpx.AsyncBaseTransport, respond: Responder | None = None) -> None:
        self.inner = inner
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        answer = self.respond(request) if self.respond is not None else None
        if answer is not None:
            return answer
        return await self.inner.handle_async_request(request)


class _AcceptsOnce(httpx.AsyncBaseTransport):
    """The CRM answers until it has accepted one request carrying contacts, then refuses the key."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, contacts_in: Callable[[httpx.Request], int]
    ) -> None:
        self.inner = inner
        self.contacts_in = contacts_in
        self.accepted = False
        #: the bodies of the requests carrying contacts that the CRM accepted
        self.accepted_bodies: list[str] = []
        self.requests_with_contacts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        carries = request.method != "GET" and self.contacts_in(request) > 0
        self.requests_with_contacts += carries
        if self.accepted:
            return httpx.Response(401, content=b'{"code":"unauthorized","message":"Key not found"}')
        response = await self.inner.handle_async_request(request)
        if carries and response.is_success:
            self.accepted = True
            self.accepted_bodies.append(request.content.decode("utf-8", "replace").lower())
        return response


class _Clock:
    """A monotonic clock that the limiter's sleeps move forward at once (no test waits for real)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self.slept += max(0.0, seconds)


def distinct_contacts(count: int) -> list[Contact]:
    """``count`` valid contacts with distinct lower-case e-mails, new on every call."""
    tag = uuid.uuid4().hex[:8]
    return [
        Contact(id=uuid.uuid4(), email=f"kit{i}-{tag}@example.com", name=f"Kit Person{i}")
        for i in range(count)
    ]


def sample_contacts(count: int, *, seed: int = 7) -> list[Contact]:
    """Valid contacts with realistic data, plus the awkward cases every adapter must survive."""
    contacts = [
        Contact(
            id=row["id"],
            email=row["email"],
            name=row["name"],
            phone_number=row["phone_number"],
            email_type=row["email_type"],
            has_gmail=row["has_gmail"],
            source_url=row["source_url"],
            domain_id=row["domain_id"],
            page_id=row["page_id"],
        )
        for row in contact_rows(count, seed=seed)
    ]
    awkward = [
        Contact(id=uuid.uuid4(), email="not-an-email", name="Broken Address"),
        Contact(id=uuid.uuid4(), email=None, name="No Address"),
        Contact(id=uuid.uuid4(), email="  ", name=None),
    ]
    if contacts:
        first = contacts[0]
        assert first.email is not None
        awkward.append(
            Contact(id=uuid.uuid4(), email=first.email.upper(), name="Same Person Again")
        )
    return (awkward + contacts)[: max(count, 1)]


class AdapterContract:
    """Tests that hold an adapter to the protocol. Set :attr:`spec`; override :meth:`contacts_in_request`
    (and the other hooks where the defaults do not fit the CRM)."""

    spec: ClassVar[AdapterSpec[Any]]
    #: False for fire-and-forget adapters (webhooks) that accept any 2xx body as success
    checks_response_body: ClassVar[bool] = True
    #: the setting a refused credential's message must name, e.g. ``"BREVO_API_KEY"``
    credentials_setting: ClassVar[str] = ""
    #: True for adapters that send every row, even rows sharing an e-mail (a webhook whose workflow
    #: counts rows); the others send one item per e-mail, whose outcome the rows share
    sends_duplicates: ClassVar[bool] = False
    #: False when the CRM's answer covers a whole request (a webhook): a rejection then fails every
    #: contact of its request, and only those
    per_item_outcomes: ClassVar[bool] = True

    def contacts_in_request(self, request: httpx.Request) -> int:
        """How many contacts ``request`` carries (0 for requests that carry none, e.g. a token). The
        batch-limit and de-duplication checks count with it: every adapter class must say."""
        raise NotImplementedError(
            f"{type(self).__name__}: override contacts_in_request(request) to say how many contacts "
            'a request carries (e.g. len(json.loads(request.content)["contacts"]), or 1)'
        )

    def make_sandbox(self) -> Sandbox[Any]:
        """A healthy fake of the CRM. Default: the spec's ``sandbox``."""
        assert self.spec.sandbox is not None, (
            "the contract needs the spec's sandbox (or make_sandbox)"
        )
        return self.spec.make_sandbox(SandboxOptions())

    def answer_with_item_errors(
        self, request: httpx.Request, errors: Mapping[str, str]
    ) -> httpx.Response | None:
        """The CRM's answer to ``request`` when it rejects each contact whose (lower-case) e-mail is a key
        of ``errors`` with that reason and accepts the others; ``None`` lets the sandbox answer.

        Default: a request carrying one contact named in ``errors`` is answered HTTP 422 with the reason
        as ``message``; a batch API must override it with the CRM's partial-success answer."""
        named = [email for email in errors if email in request.content.decode("utf-8", "replace")]
        if not named:
            return None
        if self.contacts_in_request(request) == 1 or not self.per_item_outcomes:
            return httpx.Response(
                422, json={"code": "invalid_parameter", "message": errors[named[0]]}
            )
        raise NotImplementedError(
            f"{type(self).__name__}: override answer_with_item_errors(request, errors) to give the "
            "CRM's answer to a batch in which some contacts are rejected, each with its reason"
        )

    def rate_limited_answer(self, request: httpx.Request, settings: Any) -> httpx.Response:
        """The CRM's 429, with the rate-limit headers it sends (default: those its spec declares, with a
        reset of one second, or ``Retry-After: 1`` when it declares no reset)."""
        # An SDK adapter declares its headers on its class; any other adapter through its spec.
        declared = getattr(self.spec.factory, "limit_headers", None) or (
            self.spec.limits_for(settings).headers
        )
        headers: dict[str, str] = {}
        if declared.remaining:
            headers[declared.remaining] = "0"
        if declared.reset:
            headers[declared.reset] = "1000" if declared.reset_milliseconds else "1"
        else:
            headers["Retry-After"] = "1"
        return httpx.Response(429, headers=headers, json={"message": "Too many requests"})

    def small_requests(self, settings: Any) -> Any:
        """``settings`` with requests as small as the adapter allows (e.g. a batch-size setting of 2),
        so that the mid-batch checks see several requests. Default: unchanged."""
        return settings

    # -- fixtures -----------------------------------------------------------------------------------

    @pytest.fixture
    def sandbox(self) -> Sandbox[Any]:
        sandbox = self.make_sandbox()
        assert sandbox.transport is not None, "the contract drives adapters that speak HTTP"
        return sandbox

    @pytest.fixture
    def secrets(self, sandbox: Sandbox[Any]) -> list[str]:
        values: list[str] = []
        for name in type(sandbox.settings).model_fields:
            value = getattr(sandbox.settings, name)
            if isinstance(value, SecretUrl):
                # The credential part of a URL: its host and path are shown on purpose.
                values += url_secrets(value.get_secret_value())
            elif isinstance(value, SecretStr):
                values.append(value.get_secret_value())
        return [v for v in values if v]

    @pytest.fixture
    def crm_logs(self, caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
        with caplog.at_level(logging.DEBUG):
            yield caplog

    async def push(
        self,
        sandbox: Sandbox[Any],
        contacts: Sequence[Contact],
        respond: Responder | None = None,
        *,
        reported: ReportedOutcomes | None = None,
    ) -> tuple[list[Outcome], RecordingTransport]:
        assert sandbox.transport is not None
        transport = RecordingTransport(sandbox.transport, respond)
        adapter = self.spec.factory(sandbox.settings, AdapterContext.for_testing(transport))
        try:
            outcomes = await collect_outcomes(
                adapter, contacts, crm=self.spec.name, reported=reported
            )
        finally:
            await adapter.aclose()
        return outcomes, transport

    def _carries_contacts(self, request: httpx.Request) -> bool:
        return request.method != "GET" and self.contacts_in_request(request) > 0

    # -- the contract -------------------------------------------------------------------------------

    def test_spec_declares_capabilities(self) -> None:
        manifest = self.spec.capabilities()
        assert manifest["name"] == self.spec.name
        assert self.spec.max_batch_size >= 1
        assert str(manifest["settings_env_prefix"]).endswith("_"), "settings need an env_prefix"

    @pytest.mark.asyncio
    async def test_one_outcome_per_contact(self, sandbox: Sandbox[Any]) -> None:
        contacts = sample_contacts(self.spec.max_batch_size)
        adapter = self.spec.factory(sandbox.settings, AdapterContext.for_testing(sandbox.transport))
        try:
            outcomes = list(await adapter.push(contacts))
        finally:
            await adapter.aclose()
        assert sorted(map(str, (o.contact_id for o in outcomes))) == sorted(
            map(str, (c.id for c in contacts))
        ), "push must return exactly one outcome per contact"

    @pytest.mark.asyncio
    async def test_healthy_sandbox_syncs_valid_and_skips_invalid(
        self, sandbox: Sandbox[Any]
    ) -> None:
        contacts = sample_contacts(min(self.spec.max_batch_size, 20))
        outcomes, _ = await self.push(sandbox, contacts)
        by_id = {o.contact_id: o for o in outcomes}
        for contact in contacts:
            outcome = by_id[contact.id]
            if invalid_email_reason(contact.email) is not None:
                assert isinstance(outcome, Skipped), f"{contact.email!r} must be skipped: {outcome}"
                assert outcome.reason
            else:
                assert isinstance(outcome, Synced), f"{contact.email!r} should sync: {outcome}"

    @pytest.mark.asyncio
    async def test_batch_limit_respected(self, sandbox: Sandbox[Any]) -> None:
        contacts = sample_contacts(self.spec.max_batch_size)
        _, transport = await self.push(sandbox, contacts)
        assert transport.requests, "the adapter sent nothing"
        # contacts_in_request must be declared (the default raises), and count what was sent: every
        # address must be in some request, so a count of 0 or 1 per request cannot pass by accident.
        sizes = [self.contacts_in_request(r) for r in transport.requests]
        assert max(sizes) <= self.spec.max_batch_size
        addresses = {
            str(c.email).strip().lower() for c in contacts if invalid_email_reason(c.email) is None
        }
        if self.sends_duplicates:
            addresses = {str(c.id) for c in contacts if invalid_email_reason(c.email) is None}
        assert sum(sizes) >= len(addresses), (
            f"the requests carried {sum(sizes)} contacts by contacts_in_request, for "
            f"{len(addresses)} addresses: does it count the contacts of a request?"
        )

    @pytest.mark.asyncio
    async def test_a_fatal_answer_mid_batch_keeps_what_was_accepted(
        self, sandbox: Sandbox[Any], secrets: list[str], crm_logs: pytest.LogCaptureFixture
    ) -> None:
        """The CRM accepts the first request carrying contacts, then refuses the key: the accepted
        contacts must have been reported (``context.report``) as synced, so that the engine records them
        Complete instead of sending them again, and no other contact may be reported synced."""
        assert sandbox.transport is not None
        transport = _AcceptsOnce(sandbox.transport, self.contacts_in_request)
        contacts = distinct_contacts(8)
        reported = ReportedOutcomes(contacts)
        settings = self.small_requests(sandbox.settings)
        adapter = self.spec.factory(settings, AdapterContext.for_testing(transport))
        fatal: FatalError | None = None
        try:
            await collect_outcomes(adapter, contacts, crm=self.spec.name, reported=reported)
        except FatalError as exc:
            fatal = exc
        finally:
            await adapter.aclose()
        assert transport.accepted, "the adapter sent no request carrying contacts"
        by_id = {o.contact_id: o for o in reported.outcomes()}
        if fatal is None:
            # One request carried the whole batch: nothing came after it to be refused.
            assert transport.requests_with_contacts == 1, "requests after the refusal must fail"
            assert all(isinstance(by_id.get(c.id), Synced) for c in contacts), by_id
            return
        for contact in contacts:
            assert contact.email is not None
            if any(contact.email in body for body in transport.accepted_bodies):
                assert isinstance(by_id.get(contact.id), Synced), (
                    f"{contact.email} was accepted before the fatal answer: it must stay accepted "
                    f"(reported as it arrives), got {by_id.get(contact.id)}"
                )
            else:
                assert not isinstance(by_id.get(contact.id), Synced), by_id.get(contact.id)
        self.assert_no_secret(secrets, str(fatal), repr(fatal), crm_logs.text)

    @pytest.mark.asyncio
    async def test_duplicates_in_one_batch_share_one_outcome(self, sandbox: Sandbox[Any]) -> None:
        """Rows sharing an e-mail (case and spaces aside) are sent once and share its outcome."""
        people = distinct_contacts(4)
        again = [
            Contact(id=uuid.uuid4(), email=f"  {str(c.email).upper()} ", name="Same Person Again")
            for c in people[:2]
        ]
        contacts = [people[0], again[0], *people[1:], again[1]]
        outcomes, transport = await self.push(sandbox, contacts)
        by_id = {o.contact_id: o for o in outcomes}
        assert all(isinstance(by_id[c.id], Synced) for c in contacts), outcomes
        carried = sum(self.contacts_in_request(r) for r in transport.requests)
        if self.sends_duplicates:
            assert carried == len(contacts), f"every row is sent: {carried} for {len(contacts)}"
            return
        assert carried == len(people), (
            f"contacts sharing an e-mail must be sent once: the requests carried {carried} contacts "
            f"for {len(people)} addresses"
        )
        for original, copy in zip(people, again, strict=False):
            first, second = by_id[original.id], by_id[copy.id]
            assert isinstance(first, Synced)
            assert isinstance(second, Synced)
            assert second.remote_id == first.remote_id, "rows sharing an e-mail share its outcome"

    @pytest.mark.asyncio
    async def test_a_429_is_waited_out_without_using_an_attempt(
        self, sandbox: Sandbox[Any], secrets: list[str], crm_logs: pytest.LogCaptureFixture
    ) -> None:
        """The CRM answers the first request carrying contacts with its 429 and rate-limit headers: the
        adapter waits as they say and sends again, and the 429 does not count as a failed try (each
        request gets one try here, so a counted 429 would fail the contacts)."""
        assert sandbox.transport is not None
        contacts = distinct_contacts(3)
        clock = _Clock()
        limited: list[httpx.Request] = []

        def respond(request: httpx.Request) -> httpx.Response | None:
            if not limited and self._carries_contacts(request):
                limited.append(request)
                return self.rate_limited_answer(request, sandbox.settings)
            return None

        transport = RecordingTransport(sandbox.transport, respond)
        context = AdapterContext(
            rate_limiter=Limiter(
                self.spec.limits_for(sandbox.settings), clock=clock, sleep=clock.sleep
            ),
            request_retry=RequestRetry(
                attempts=1, initial_wait=0.0, max_wait=0.0, max_rate_limit_wait=600.0
            ),
            transport=transport,
        )
        adapter = self.spec.factory(sandbox.settings, context)
        try:
            outcomes = await collect_outcomes(adapter, contacts, crm=self.spec.name)
        finally:
            await adapter.aclose()
        assert limited, "the adapter sent no request carrying contacts"
        assert all(isinstance(o, Synced) for o in outcomes), (
            f"a 429 must be waited out without using up the request's try: {outcomes}"
        )
        assert clock.slept >= 0.5, "the adapter must wait as long as the 429's headers say"
        self.assert_no_secret(secrets, repr(outcomes), crm_logs.text)

    async def _push_with_item_errors(
        self, sandbox: Sandbox[Any], contacts: Sequence[Contact], errors: Mapping[str, str]
    ) -> tuple[dict[Any, Outcome], dict[Any, Outcome], set[str]]:
        """Push ``contacts`` with the CRM rejecting ``errors``; the outcomes returned and reported, and
        the e-mails that went in a request the CRM answered with rejections."""
        answered: set[str] = set()

        def respond(request: httpx.Request) -> httpx.Response | None:
            if not self._carries_contacts(request):
                return None
            answer = self.answer_with_item_errors(request, errors)
            if answer is not None:
                body = request.content.decode("utf-8", "replace").lower()
                answered.update(str(c.email) for c in contacts if str(c.email) in body)
            return answer

        reported = ReportedOutcomes(contacts)
        outcomes, _ = await self.push(sandbox, contacts, respond, reported=reported)
        return (
            {o.contact_id: o for o in outcomes},
            {o.contact_id: o for o in reported.outcomes()},
            answered,
        )

    @pytest.mark.asyncio
    async def test_partial_success_gives_each_contact_its_own_outcome(
        self, sandbox: Sandbox[Any], secrets: list[str], crm_logs: pytest.LogCaptureFixture
    ) -> None:
        """One request, some contacts accepted and some rejected: each gets its own outcome, reported
        as its request is answered."""
        contacts = distinct_contacts(6)
        bad = [str(contacts[1].email), str(contacts[4].email)]
        errors = {email: f"kit: {email} is on the do-not-contact list" for email in bad}
        by_id, reported, answered = await self._push_with_item_errors(sandbox, contacts, errors)
        assert answered, "the CRM's partial answer was never used"
        for contact in contacts:
            email = str(contact.email)
            outcome = by_id[contact.id]
            assert reported.get(contact.id) == outcome, "each request's outcomes must be reported"
            rejected = email in errors if self.per_item_outcomes else email in answered
            if not rejected:
                assert isinstance(outcome, Synced), f"{email} was accepted: {outcome}"
                continue
            assert isinstance(outcome, PermanentFailure), f"{email} was rejected: {outcome}"
            if self.per_item_outcomes:
                assert errors[email] in outcome.reason, f"the CRM's reason: {outcome.reason}"
        self.assert_no_secret(secrets, repr(list(by_id.values())), crm_logs.text)

    @pytest.mark.asyncio
    async def test_per_item_errors_keep_their_own_reasons(self, sandbox: Sandbox[Any]) -> None:
        """Every contact rejected, each for a reason of its own: each outcome quotes its own reason."""
        contacts = distinct_contacts(4)
        errors = {
            str(c.email): f"kit: {c.email} refused for reason {i}" for i, c in enumerate(contacts)
        }
        by_id, _, _ = await self._push_with_item_errors(sandbox, contacts, errors)
        for contact in contacts:
            outcome = by_id[contact.id]
            assert isinstance(outcome, PermanentFailure), outcome
            if self.per_item_outcomes:
                assert errors[str(contact.email)] in outcome.reason, outcome.reason
                others = [r for e, r in errors.items() if e != contact.email]
                assert not any(r in outcome.reason for r in others), outcome.reason
            else:
                assert any(r in outcome.reason for r in errors.values()), outcome.reason

    @pytest.mark.parametrize("status", [400, 404, 422, 500])
    @pytest.mark.asyncio
    async def test_an_answer_quoting_the_request_leaks_no_secret(
        self,
        sandbox: Sandbox[Any],
        secrets: list[str],
        crm_logs: pytest.LogCaptureFixture,
        status: int,
    ) -> None:
        """CRMs quote what they were sent (URL, headers, body) in their errors: none of it may carry a
        secret into an outcome, an exception or a log line."""

        def echo(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                status,
                json={
                    "message": "the request was",
                    "url": str(request.url),
                    "headers": dict(request.headers),
                    "body": request.content.decode("utf-8", "replace"),
                },
            )

        texts: list[str] = []
        try:
            outcomes, _ = await self.push(sandbox, distinct_contacts(2), echo)
            texts.append(repr(outcomes))
        except FatalError as exc:
            texts += [str(exc), repr(exc)]
        self.assert_no_secret(secrets, *texts, crm_logs.text)

    @pytest.mark.asyncio
    async def test_unauthorized_is_fatal_and_names_the_fix(
        self, sandbox: Sandbox[Any], secrets: list[str], crm_logs: pytest.LogCaptureFixture
    ) -> None:
        body = b'{"code":"unauthorized","message":"Key not found"}'
        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        with pytest.raises(FatalError) as raised:
            await self.push(sandbox, contacts, lambda r: httpx.Response(401, content=body))
        message = str(raised.value)
        assert "401" in message, f"the message should give the CRM's answer: {message}"
        assert self.credentials_setting in message, f"the message should say what to fix: {message}"
        self.assert_no_secret(secrets, message, repr(raised.value), crm_logs.text)

    @pytest.mark.parametrize("status", [500, 502, 503])
    @pytest.mark.asyncio
    async def test_server_errors_are_transient(
        self,
        sandbox: Sandbox[Any],
        secrets: list[str],
        crm_logs: pytest.LogCaptureFixture,
        status: int,
    ) -> None:
        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        outcomes, _ = await self.push(
            sandbox, contacts, lambda r: httpx.Response(status, content=b"upstream broke")
        )
        assert all(isinstance(o, TransientFailure) for o in outcomes), outcomes
        self.assert_no_secret(secrets, repr(outcomes), crm_logs.text)

    @pytest.mark.asyncio
    async def test_timeouts_are_transient(self, sandbox: Sandbox[Any]) -> None:
        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        outcomes, _ = await self.push(sandbox, contacts, timeout)
        assert all(isinstance(o, TransientFailure) for o in outcomes), outcomes

    @pytest.mark.asyncio
    async def test_malformed_answer_is_an_error_quoting_it(
        self, sandbox: Sandbox[Any], secrets: list[str], crm_logs: pytest.LogCaptureFixture
    ) -> None:
        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        html = b"<html><body>Gateway maintenance page</body></html>"
        outcomes, _ = await self.push(
            sandbox,
            contacts,
            lambda r: httpx.Response(200, content=html, headers={"content-type": "text/html"}),
        )
        for outcome in outcomes:
            if not self.checks_response_body:
                # A webhook's 2xx is acceptance, whatever the workflow answers.
                assert isinstance(outcome, Synced), outcome
                continue
            assert isinstance(outcome, TransientFailure | PermanentFailure), outcome
            assert "maintenance" in outcome.reason, (
                f"the error must quote the answer: {outcome.reason}"
            )
        self.assert_no_secret(secrets, repr(outcomes), crm_logs.text)

    def test_settings_repr_hides_secrets(self, sandbox: Sandbox[Any], secrets: list[str]) -> None:
        self.assert_no_secret(secrets, repr(sandbox.settings), str(sandbox.settings))

    @staticmethod
    def assert_no_secret(secrets: Sequence[str], *texts: str) -> None:
        for secret in secrets:
            for text in texts:
                assert secret not in text, "a secret leaked into an error, a repr or a log line"
