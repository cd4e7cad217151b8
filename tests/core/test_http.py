"""CrmClient: rate limits, inside-request retries, error classes and redaction, faked at the transport."""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from crmsync_core.adapter import AdapterContext
from crmsync_core.errors import AuthenticationError, MalformedResponseError, TransientError
from crmsync_core.http import CrmClient, parse_retry_after, snippet
from crmsync_core.ratelimit import Limiter, LimitHeaders
from crmsync_core.retry import RequestRetry

SECRET = "xkeysib-0123456789abcdef-SECRET"
BASE = "https://crm.example/v3"


class RecordingBucket(Limiter):
    def __init__(self) -> None:
        super().__init__(None, sleep=self._sleep_recorded)
        self.paused: list[float] = []

    async def _sleep_recorded(self, seconds: float) -> None:
        return None

    def pause(self, seconds: float, path: str = "") -> None:
        self.paused.append(seconds)


def client(bucket: Limiter | None = None, attempts: int = 3, **kwargs: object) -> CrmClient:
    context = AdapterContext(
        rate_limiter=bucket or Limiter(None),
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


HEADERS = LimitHeaders(remaining="x-remaining", reset="x-reset")


@respx.mock
async def test_an_exhausted_budget_pauses_the_limiter_once_until_the_reset() -> None:
    bucket = RecordingBucket()
    respx.get(f"{BASE}/x").mock(
        side_effect=[
            httpx.Response(200, headers={"x-remaining": "3", "x-reset": "4"}),
            httpx.Response(200, headers={"x-remaining": "0", "x-reset": "4"}),
        ]
    )
    async with client(bucket, limit_headers=HEADERS) as crm:
        await crm.request("GET", "/x")
        assert bucket.paused == []  # budget left: no pause
        await crm.request("GET", "/x")
    assert bucket.paused == [4.0]


@respx.mock
async def test_a_429_pauses_once_until_the_announced_reset() -> None:
    # Before: a 429 paused the limiter twice (reset, then the wait) and a remaining of 0 a third time.
    bucket = RecordingBucket()
    respx.get(f"{BASE}/x").mock(
        side_effect=[
            httpx.Response(429, headers={"x-remaining": "0", "x-reset": "0.7"}),
            httpx.Response(200, headers={"x-remaining": "9", "x-reset": "1"}),
        ]
    )
    async with client(bucket, attempts=1, limit_headers=HEADERS) as crm:
        response = await crm.request("GET", "/x")
    assert response.status_code == 200
    assert bucket.paused == [0.7]


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
