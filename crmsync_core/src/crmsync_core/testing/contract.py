"""The contract every adapter keeps, as tests an adapter author runs against their own adapter.

Subclass :class:`AdapterContract` in a test module, point it at your spec, and say how many contacts a
request carries::

    from crmsync_core.testing.contract import AdapterContract
    from crmsync_mycrm.plugin import SPEC

    class TestMyCrmContract(AdapterContract):
        spec = SPEC

        def contacts_in_request(self, request: httpx.Request) -> int:
            return len(json.loads(request.content)["inputs"])

The spec must have a ``sandbox``: a healthy fake of the CRM. The kit wraps its transport to inject
401s, 5xx, timeouts and malformed answers, and treats every ``SecretStr`` in the sandbox's settings as a
secret that must never appear in an outcome, an exception or a log line.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
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
from ..settings import SecretUrl
from .data import contact_rows

Responder = Callable[[httpx.Request], httpx.Response]


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` (or answers with ``respond``) and keeps them for inspection."""

    def __init__(self, inner: httpx.AsyncBaseTransport, respond: Responder | None = None) -> None:
        self.inner = inner
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self.respond is not None:
            return self.respond(request)
        return await self.inner.handle_async_request(request)


class _AcceptsOnce(httpx.AsyncBaseTransport):
    """The CRM answers until it has accepted one request carrying contacts, then refuses the key."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, contacts_in: Callable[[httpx.Request], int]
    ) -> None:
        self.inner = inner
        self.contacts_in = contacts_in
        self.accepted = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if self.accepted:
            return httpx.Response(401, content=b'{"code":"unauthorized","message":"Key not found"}')
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" and response.is_success and self.contacts_in(request) > 0:
            self.accepted = True
        return response


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
    """Tests that hold an adapter to the protocol. Set :attr:`spec`; override :meth:`contacts_in_request`."""

    spec: ClassVar[AdapterSpec[Any]]
    #: False for fire-and-forget adapters (webhooks) that accept any 2xx body as success
    checks_response_body: ClassVar[bool] = True
    #: the setting a refused credential's message must name, e.g. ``"BREVO_API_KEY"``
    credentials_setting: ClassVar[str] = ""

    def contacts_in_request(self, request: httpx.Request) -> int:
        """How many contacts ``request`` carries (to check the batch limit). Default: one."""
        return 1

    # -- fixtures -----------------------------------------------------------------------------------

    @pytest.fixture
    def sandbox(self) -> Sandbox[Any]:
        assert self.spec.sandbox is not None, "the contract needs the spec's sandbox"
        sandbox = self.spec.sandbox(SandboxOptions())
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
        self, sandbox: Sandbox[Any], contacts: Sequence[Contact], respond: Responder | None = None
    ) -> tuple[list[Outcome], RecordingTransport]:
        assert sandbox.transport is not None
        transport = RecordingTransport(sandbox.transport, respond)
        adapter = self.spec.factory(sandbox.settings, AdapterContext.for_testing(transport))
        try:
            outcomes = await collect_outcomes(adapter, contacts, crm=self.spec.name)
        finally:
            await adapter.aclose()
        return outcomes, transport

    # -- the contract -------------------------------------------------------------------------------

    def test_spec_declares_capabilities(self) -> None:
        manifest = self.spec.capabilities()
        assert manifest["name"] == self.spec.name
        assert self.spec.max_batch_size >= 1
        assert str(manifest["settings_env_prefix"]).endswith("_"), "settings need an env_prefix"

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

    async def test_batch_limit_respected(self, sandbox: Sandbox[Any]) -> None:
        contacts = sample_contacts(self.spec.max_batch_size)
        _, transport = await self.push(sandbox, contacts)
        assert transport.requests, "the adapter sent nothing"
        sizes = [self.contacts_in_request(r) for r in transport.requests]
        assert max(sizes) <= self.spec.max_batch_size

    async def test_answers_before_a_fatal_one_are_reported(self, sandbox: Sandbox[Any]) -> None:
        """The CRM accepts the first request carrying contacts, then refuses the key: the accepted
        contacts must have been reported (``context.report``), so that the engine records them Complete
        instead of sending them again."""
        assert sandbox.transport is not None
        transport = _AcceptsOnce(sandbox.transport, self.contacts_in_request)
        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        reported = ReportedOutcomes(contacts)
        adapter = self.spec.factory(sandbox.settings, AdapterContext.for_testing(transport))
        try:
            await collect_outcomes(adapter, contacts, crm=self.spec.name, reported=reported)
        except FatalError:
            assert transport.accepted, "the CRM accepted a request before refusing the key"
            assert any(isinstance(o, Synced) for o in reported.outcomes()), (
                "what the CRM accepted before a fatal answer must be reported as it arrives"
            )
        finally:
            await adapter.aclose()

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

    async def test_timeouts_are_transient(self, sandbox: Sandbox[Any]) -> None:
        def timeout(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        contacts = [c for c in sample_contacts(8) if invalid_email_reason(c.email) is None]
        outcomes, _ = await self.push(sandbox, contacts, timeout)
        assert all(isinstance(o, TransientFailure) for o in outcomes), outcomes

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
