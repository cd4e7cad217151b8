"""CrmClient: rate limits, inside-request retries, error classes and redaction, faked at the transport."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from crmsync_core.adapter import AdapterContext
from crmsync_core.errors import AuthenticationError, MalformedResponseError, TransientError
from crmsync_core.http import CrmClient, parse_retry_after, snippet, url_secrets
from crmsync_core.ratelimit import TokenBucket
from crmsync_core.retry import RequestRetry
from crmsync_core.testing import SandboxSettings

SECRET = "xkeysib-0123456789abcdef-SECRET"
BASE = "https://crm.example/v3"


class RecordingBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(None, sleep=self._sleep_recorded)
        self.paused: list[float] = []

    async def _sleep_recorded(self, seconds: float) -> None:
        return None

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def client(bucket: TokenBucket | None = None, attempts: int = 3, **kwargs: object) -> CrmClient:
    context = AdapterContext(
        rate_limiter=bucket or TokenBucket(None),
        request_retry=RequestRetry(
            attempts=attempts, initial_wait=0, max_wait=0, max_rate_limit_wait=60
        ),
    )
    return CrmClient(
        context,
        crm="demo",
        base_url=BASE,
        headers={"api-key": SECRET},
        secrets=[SECRET],
        auth_hint="set DEMO_API_KEY to a valid key",
        **kwargs,  # type: ignore[arg-type]
    )


@respx.mock
async def test_rate_limit_is_waited_out_without_using_an_attempt() -> None:
    bucket = RecordingBucket()
    route = respx.post(f"{BASE}/contacts").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "2"})] * 5 + [httpx.Response(201)]
    )
    async with client(bucket, attempts=1) as crm:
        response = await crm.request("POST", "/contacts", json={})
    assert response.status_code == 201
    assert route.call_count == 6  # five 429s and one success, with a single attempt allowed
    assert bucket.paused == [2.0] * 5


@respx.mock
async def test_rate_limit_beyond_the_wait_budget_is_transient_with_retry_after() -> None:
    respx.post(f"{BASE}/contacts").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    async with client(RecordingBucket()) as crm:
        with pytest.raises(TransientError) as raised:
            await crm.request("POST", "/contacts", json={})
    assert raised.value.retry_after == 3600


@respx.mock
async def test_reset_header_pauses_the_limiter() -> None:
    bucket = RecordingBucket()
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(200, headers={"x-reset": "4"}))

    def reset(response: httpx.Response) -> float | None:
        return float(response.headers["x-reset"])

    async with client(bucket, rate_limit_reset=reset) as crm:
        await crm.request("GET", "/x")
    assert bucket.paused == [4.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425])
@respx.mock
async def test_server_errors_are_retried_then_transient(status: int) -> None:
    route = respx.post(f"{BASE}/contacts").mock(return_value=httpx.Response(status, text="busy"))
    async with client(attempts=3) as crm:
        with pytest.raises(TransientError, match=f"HTTP {status}.*busy.*after 3 tries"):
            await crm.request("POST", "/contacts", json={})
    assert route.call_count == 3


@respx.mock
async def test_a_retry_that_succeeds_returns_the_answer() -> None:
    respx.post(f"{BASE}/contacts").mock(side_effect=[httpx.Response(503), httpx.Response(201)])
    async with client() as crm:
        assert (await crm.request("POST", "/contacts", json={})).status_code == 201


@respx.mock
async def test_timeouts_and_dropped_connections_are_transient() -> None:
    respx.post(f"{BASE}/a").mock(side_effect=httpx.ReadTimeout("slow"))
    respx.post(f"{BASE}/b").mock(side_effect=httpx.ConnectError("refused"))
    async with client() as crm:
        with pytest.raises(TransientError, match="timed out"):
            await crm.request("POST", "/a")
        with pytest.raises(TransientError, match="ConnectError"):
            await crm.request("POST", "/b")


@pytest.mark.parametrize("status", [401, 403])
@respx.mock
async def test_refused_credentials_are_fatal_name_the_fix_and_hide_the_key(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = f'{{"code":"unauthorized","message":"Key {SECRET} not found"}}'
    respx.post(f"{BASE}/contacts").mock(return_value=httpx.Response(status, text=body))
    with caplog.at_level(logging.DEBUG):
        async with client() as crm:
            with pytest.raises(AuthenticationError) as raised:
                await crm.request("POST", "/contacts")
    message = str(raised.value)
    assert "set DEMO_API_KEY" in message and str(status) in message
    assert SECRET not in message and SECRET not in repr(raised.value) and SECRET not in caplog.text
    assert "***" in message


@respx.mock
async def test_malformed_json_quotes_a_snippet() -> None:
    respx.get(f"{BASE}/contacts").mock(
        return_value=httpx.Response(200, text="<html>Bad gateway</html>")
    )
    async with client() as crm:
        response = await crm.request("GET", "/contacts")
        with pytest.raises(MalformedResponseError, match="<html>Bad gateway</html>"):
            crm.json(response)


def test_client_repr_hides_secrets() -> None:
    crm = client()
    assert SECRET not in repr(crm)


def test_snippet_is_short_and_one_line() -> None:
    text = snippet("a\n b  " + "x" * 500)
    assert "\n" not in text and len(text) == 200 and text.endswith("…")


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(
        "Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60
    ) == pytest.approx(60)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- response bodies are read as a stream, up to a cap ---------------------------------------------


class Endless(httpx.AsyncByteStream):
    """A 30 MB answer in 64 KB chunks that records how much of it was read."""

    def __init__(self, total: int = 30_000_000, chunk: int = 65_536) -> None:
        self.total, self.chunk, self.sent = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b"<html>proxy page " + b"x" * (self.chunk - 17)


def capped_client(transport: httpx.AsyncBaseTransport, max_response_bytes: int) -> CrmClient:
    context = AdapterContext(
        rate_limiter=TokenBucket(None),
        request_retry=RequestRetry(attempts=3, initial_wait=0, max_wait=0),
        transport=transport,
        max_response_bytes=max_response_bytes,
    )
    return CrmClient(context, crm="demo", base_url=BASE, secrets=[SECRET], auth_hint="fix it")


@pytest.mark.parametrize("declared", [False, True])
async def test_a_body_over_the_cap_fails_quoting_its_start_without_reading_it_all(
    declared: bool,
) -> None:
    body = Endless()
    headers = {"Content-Length": str(body.total)} if declared else {}
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, headers=headers, stream=body)

    async with capped_client(httpx.MockTransport(answer), 1_000_000) as crm:
        with pytest.raises(MalformedResponseError) as raised:
            await crm.request("POST", "/contacts", json={})

    message = str(raised.value)
    assert "larger than 1,000,000 bytes" in message
    assert "DEMO_SYNC_MAX_RESPONSE_BYTES" in message
    assert "<html>proxy page" in message and len(message) < 500
    assert body.sent <= 1_000_000 + body.chunk, "reading stopped at the cap"
    if declared:
        assert body.sent == body.chunk, "a declared size over the cap stops at the first chunk"
    assert len(calls) == 1, "a body too large is not asked for again"


async def test_a_body_within_the_cap_is_read_whole() -> None:
    payload = b'{"id": 1, "pad": "' + b"y" * 4_000 + b'"}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=payload))
    async with capped_client(transport, len(payload)) as crm:
        response = await crm.request("GET", "/contacts/1")
        assert response.content == payload
        assert crm.json(response)["id"] == 1


def test_the_cap_is_a_setting_per_crm(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SandboxSettings().sync_max_response_bytes == 1_000_000
    monkeypatch.setenv("SANDBOX_SYNC_MAX_RESPONSE_BYTES", "5000000")
    assert SandboxSettings().sync_max_response_bytes == 5_000_000


# -- log lines of httpx and httpcore while crmsync sends ----------------------------------------------


async def test_httpx_request_lines_are_redacted_while_crmsync_sends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token, password = "query-token-0123456789", "url-password-0123456789"
    url = f"https://crm-user:{password}@hooks.example/webhook/x?token={token}&v=2"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    context = AdapterContext(rate_limiter=TokenBucket(None), transport=transport)
    caplog.set_level(logging.DEBUG)  # what a host's logging.basicConfig(level=DEBUG) lets through

    async with CrmClient(
        context, crm="demo", base_url="", secrets=url_secrets(url), auth_hint="fix it"
    ) as crm:
        await crm.request("POST", url, json={})
    # The host's own use of httpx is left as it is.
    async with httpx.AsyncClient(transport=transport) as host_client:
        await host_client.get("https://host.example/health?check=host-query-value")

    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(lines) == 2
    assert "hooks.example/webhook/x" in lines[0] and "200 OK" in lines[0]
    assert token not in caplog.text and password not in caplog.text
    assert "host-query-value" in lines[1]


def test_url_secrets_are_the_query_and_the_password() -> None:
    found = url_secrets(
        "https://me:pa%24%24word@n8n.example/webhook/x?token=a%2Fb&sig=zz-signature"
    )
    assert "token=a%2Fb&sig=zz-signature" in found
    assert {"a%2Fb", "a/b", "zz-signature", "pa$$word"} <= set(found)
    assert not any("n8n.example" in value or "/webhook/x" in value for value in found)
    assert url_secrets("https://n8n.example/webhook/x") == []


@pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError), (503, TransientError)])
async def test_a_huge_error_page_keeps_the_meaning_of_its_status(
    status: int, error: type[Exception]
) -> None:
    body = Endless()
    transport = httpx.MockTransport(lambda request: httpx.Response(status, stream=body))
    async with capped_client(transport, 100_000) as crm:
        with pytest.raises(error, match="proxy page") as raised:
            await crm.request("POST", "/contacts", json={})
    assert not isinstance(raised.value, MalformedResponseError)
    assert body.sent <= 3 * (100_000 + body.chunk), "each try stopped reading at the cap"
