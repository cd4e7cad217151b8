"""The HTTP client every adapter uses: rate limit, inside-request retries, error classes, redaction.

:class:`CrmClient` wraps :class:`httpx.AsyncClient` so that each adapter only speaks its CRM's API:

* every request first waits for the CRM's :class:`~crmsync_core.ratelimit.RateLimiter`;
* a 429 is waited out (``Retry-After``, or the CRM's reset header through ``rate_limit_reset``) without
  using up an attempt, up to :attr:`RequestRetry.max_rate_limit_wait`;
* timeouts, dropped connections, 408, 425 and 5xx are retried with tenacity, then raised as
  :class:`~crmsync_core.errors.TransientError`;
* each exchange has an overall deadline (``AdapterContext.request_deadline``, default three times the
  timeout), all reads included: a server that trickles its answer is a timeout, not a wait forever;
* consecutive connection errors, timeouts and 5xx feed the run's circuit breaker; once it opens, the
  request raises :class:`~crmsync_core.errors.CircuitOpenError` and no other is sent;
* 401 and 403 raise :class:`~crmsync_core.errors.AuthenticationError` with the adapter's hint on what to fix;
* any other answer is returned for the adapter to interpret;
* secrets given to the client never appear in what it raises or logs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as _json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from .adapter import AdapterContext
from .errors import AuthenticationError, MalformedResponseError, TransientError

TRANSIENT_STATUSES = frozenset({408, 425}) | frozenset(range(500, 600))
SNIPPET_LENGTH = 200


class Redactor:
    """Replaces known secrets in text with ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Redact ``secret`` too (e.g. an access token obtained during the run)."""
        # Short values would redact ordinary words; a real secret is never that short.
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def snippet(text: str | bytes, length: int = SNIPPET_LENGTH) -> str:
    """The start of a response body, on one line, for error messages."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


class _RetryableResponse(TransientError):
    def __init__(self, message: str, *, retry_after: float | None, response: httpx.Response | None):
        super().__init__(message, retry_after=retry_after)
        self.response = response


class CrmClient:
    """HTTP for one CRM during one run. Use as ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        context: AdapterContext,
        *,
        crm: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str | None] = (),
        auth_hint: str,
        timeout: float = 30.0,
        rate_limit_reset: Callable[[httpx.Response], float | None] | None = None,
        inspect: Callable[[httpx.Response], None] | None = None,
    ) -> None:
        """
        ``auth_hint`` says what to fix when the CRM answers 401 or 403 (e.g. "set BREVO_API_KEY to a v3
        API key"). ``rate_limit_reset(response)`` returns the seconds until the CRM's budget refills when the
        response says it is spent, else ``None``. ``inspect(response)`` runs on every response before the
        generic handling and may raise (e.g. HubSpot's daily limit is fatal, not a 429 to wait out).
        """
        self.crm = crm
        self.context = context
        self.redact = Redactor(secrets)
        self._auth_hint = auth_hint
        self._rate_limit_reset = rate_limit_reset
        self._inspect = inspect
        self._deadline = context.request_deadline or 3 * timeout
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            auth=auth,
            timeout=timeout,
            transport=context.transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> CrmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"CrmClient(crm={self.crm!r}, base_url={self.redact(str(self._http.base_url))!r})"

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - an HTTP timeout, passed to httpx
    ) -> httpx.Response:
        """Send one request through the rate limiter and the retry policy; see the module docstring."""
        policy = self.context.request_retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=self._backoff,
            retry=retry_if_exception_type(_RetryableResponse),
            reraise=True,
        )
        request = self._http.build_request(
            method,
            url,
            json=json,
            content=content,
            params=params,
            data=data,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_within_rate_limit(request)
        except _RetryableResponse as exc:
            tries = policy.attempts
            raise TransientError(
                f"{exc.message} (after {tries} {'try' if tries == 1 else 'tries'})",
                retry_after=exc.retry_after,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, state: RetryCallState) -> float:
        wait = self.context.request_retry.backoff(state.attempt_number)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableResponse) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.context.request_retry.max_wait))
        return wait

    def _where(self, request: httpx.Request) -> str:
        return f"{request.method} {request.url.path}"

    async def _send_within_rate_limit(self, request: httpx.Request) -> httpx.Response:
        limiter = self.context.rate_limiter
        circuit = self.context.circuit
        rate_limited_for = 0.0
        while True:
            self.context.check()
            # A database error here (a shared budget) propagates as StoreError: infrastructure, never
            # the contact's failure; the engine hands unsent contacts back without an attempt.
            await limiter.acquire()
            self.context.check()
            started = time.perf_counter()
            try:
                with self.context.in_flight():
                    async with asyncio.timeout(self._deadline):
                        response = await self._http.send(request)
            except (httpx.TimeoutException, TimeoutError):
                self._failed(f"{self.crm}: {self._where(request)} timed out")
                raise _RetryableResponse(
                    f"{self.crm}: {self._where(request)} timed out", retry_after=None, response=None
                ) from None
            except httpx.TransportError as exc:
                reason = (
                    f"{self.crm}: {self._where(request)} failed: {self.redact(type(exc).__name__)}"
                    f" {self.redact(str(exc))}"
                )
                self._failed(reason)
                raise _RetryableResponse(reason, retry_after=None, response=None) from None
            if response.status_code >= 500:
                self._failed(f"{self.crm}: HTTP {response.status_code} on {self._where(request)}")
            else:
                circuit.success()
            self.context.logger.debug(
                "%s %s -> %s (%.0f ms)",
                self.crm,
                self._where(request),
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            reset = self._rate_limit_reset(response) if self._rate_limit_reset else None
            if reset is not None and reset > 0:
                limiter.pause(reset)
            if self._inspect is not None:
                self._inspect(response)
            status = response.status_code
            if status == 429:
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is None:
                    wait = reset if reset is not None else self.context.request_retry.backoff(1)
                if rate_limited_for + wait <= self.context.request_retry.max_rate_limit_wait:
                    # A rate limit is waited out here and never counted as a failed attempt.
                    rate_limited_for += wait
                    limiter.pause(wait)
                    continue
                raise TransientError(
                    f"{self.crm}: rate limited on {self._where(request)} for more than "
                    f"{self.context.request_retry.max_rate_limit_wait:.0f} s",
                    retry_after=wait,
                )
            if status in (401, 403):
                # Not halted here: an adapter may renew a token and try again (Mautic's OAuth). The
                # engine halts the run when the error leaves the adapter.
                raise AuthenticationError(
                    f"{self.crm} refused the credentials (HTTP {status} on {self._where(request)}): "
                    f"{self._auth_hint}. The CRM said: {self.body_snippet(response)}"
                )
            if status in TRANSIENT_STATUSES:
                raise _RetryableResponse(
                    f"{self.crm}: HTTP {status} on {self._where(request)}: {self.body_snippet(response)}",
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                    response=response,
                )
            return response

    def _failed(self, reason: str) -> None:
        """Count a connection error, timeout or 5xx; raise once the circuit opens (the CRM is paused)."""
        self.context.circuit.failure(reason)
        self.context.circuit.check()

    def body_snippet(self, response: httpx.Response) -> str:
        """The start of the response body, redacted, for messages."""
        return self.redact(snippet(response.content)) if response.content else "(empty body)"

    def json(self, response: httpx.Response) -> Any:
        """The parsed JSON body, or :class:`MalformedResponseError` quoting the start of the body."""
        try:
            return _json.loads(response.content)
        except ValueError:
            raise MalformedResponseError(
                f"{self.crm}: HTTP {response.status_code} on {self._where(response.request)} is not JSON: "
                f"{self.body_snippet(response)}"
            ) from None

    def malformed(self, response: httpx.Response, what: str) -> MalformedResponseError:
        """An error for a JSON answer that lacks what the API documents (``what`` says what was expected)."""
        return MalformedResponseError(
            f"{self.crm}: unexpected answer to {self._where(response.request)} (expected {what}): "
            f"{self.body_snippet(response)}"
        )
