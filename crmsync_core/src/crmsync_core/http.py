"""The HTTP client every adapter uses: rate limit, inside-request retries, error classes, redaction.

:class:`CrmClient` wraps :class:`httpx.AsyncClient` so that each adapter only speaks its CRM's API:

* every request first waits for its bucket of the CRM's :class:`~crmsync_core.ratelimit.RateLimiter`;
* the CRM's rate-limit headers are read the way the adapter's
  :class:`~crmsync_core.ratelimit.LimitHeaders` says: a 429, or an answer saying nothing is left, pauses
  the bucket once until the announced reset (never longer, never twice), and a 429 is waited out without
  using up an attempt, up to :attr:`RequestRetry.max_rate_limit_wait`;
* timeouts, dropped connections, 408, 425 and 5xx are retried (:class:`~crmsync_core.retry.RequestRetry`),
  then raised as :class:`~crmsync_core.errors.TransientError`;
* each exchange has an overall deadline (``AdapterContext.request_deadline``, default three times the
  timeout), all reads included: a server that trickles its answer is a timeout, not a wait forever;
* consecutive connection errors, timeouts and 5xx feed the run's circuit breaker; once it opens, the
  request raises :class:`~crmsync_core.errors.CircuitOpenError` and no other is sent;
* 401 and 403 raise :class:`~crmsync_core.errors.AuthenticationError` with the adapter's hint on what to fix;
* any other answer is returned for the adapter to interpret, its body read as a stream and capped at
  :attr:`AdapterContext.max_response_bytes` (a larger answer is a
  :class:`~crmsync_core.errors.MalformedResponseError` quoting its start);
* secrets given to the client never appear in what it raises or logs, nor in what httpx and httpcore
  log while the client sends (their loggers get a filter that redacts the secrets of the client whose
  request is being sent; see :func:`url_secrets` for credentials carried in a URL).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import json as _json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from typing import Any
from urllib.parse import unquote

import httpx

from .adapter import AdapterContext
from .errors import AuthenticationError, MalformedResponseError, TransientError
from .lanes import LaneTransport
from .ratelimit import LimitHeaders, read_headers

TRANSIENT_STATUSES = frozenset({408, 425}) | frozenset(range(500, 600))
SNIPPET_LENGTH = 200
#: how much of a body is looked at for a snippet (redacted whole, then cut)
_SNIPPET_WINDOW = 65_536


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


def url_secrets(url: str | httpx.URL) -> list[str]:
    """What in ``url`` may be a credential, to hand to :class:`Redactor`: the query string, each query
    value (as sent and decoded), and the password of ``user:password@``."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except httpx.InvalidURL:
        return [str(url)]
    found: list[str] = []
    query = parsed.query.decode("ascii", errors="replace")
    if query:
        found.append(query)
        for pair in query.split("&"):
            _, _, value = pair.partition("=")
            found += [value, unquote(value.replace("+", " "))]
    if parsed.password:
        found += [parsed.password, parsed.userinfo.decode("ascii", errors="replace")]
    return [value for value in found if value]


#: the redactor of the CrmClient whose request the current task is sending, for the log filter
_sending: contextvars.ContextVar[Redactor | None] = contextvars.ContextVar(
    "crmsync_http_sending", default=None
)
#: the loggers httpx and httpcore write to while sending (a logger's filters see only its own records)
HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _RedactSending(logging.Filter):
    """Redacts, in a record of httpx or httpcore, the secrets of the CrmClient that is sending.

    httpx logs every request's full URL at INFO (``HTTP Request: POST https://...?token=...``), and a
    host app that logs at INFO or DEBUG would keep it. Records written outside a CrmClient's request
    are left alone: the host's own HTTP is none of our business.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact = _sending.get()
        if redact is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactSending()


def _install_log_filter() -> None:
    for name in HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        if _FILTER not in http_logger.filters:
            http_logger.addFilter(_FILTER)


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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # What httpx builds for every client by default (its CA bundle): built once per process, since
    # loading the CA bundle costs tens of milliseconds, more than hundreds of requests on loopback.
    return httpx.create_ssl_context()


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
        limit_headers: LimitHeaders | None = None,
        inspect: Callable[[httpx.Response], None] | None = None,
        lanes: int = 1,
    ) -> None:
        """
        ``auth_hint`` says what to fix when the CRM answers 401 or 403 (e.g. "set BREVO_API_KEY to a v3
        API key"). ``limit_headers`` names the headers in which the CRM announces its budget.
        ``inspect(response)`` runs on every response before the generic handling and may raise (e.g.
        HubSpot's daily limit is fatal, not a 429 to wait out). ``lanes`` is how many requests the
        adapter sends side by side: each lane keeps a connection of its own
        (:class:`~crmsync_core.lanes.LaneTransport`).
        """
        self.crm = crm
        self.context = context
        self.redact = Redactor(secrets)
        self._auth_hint = auth_hint
        self._limit_headers = limit_headers or LimitHeaders()
        self._base_path = httpx.URL(base_url).path.rstrip("/")
        self._inspect = inspect
        self._deadline = context.request_deadline or 3 * timeout
        self._paths: dict[str, str] = {}
        _install_log_filter()
        transport = context.transport
        if transport is None and lanes > 1:
            transport = LaneTransport(lanes, verify=_tls_context())
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            auth=auth,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            verify=_tls_context() if transport is None else True,
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
        content: bytes | Callable[[], bytes] | None = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - an HTTP timeout, passed to httpx
    ) -> httpx.Response:
        """Send one request through the rate limiter and the retry policy; see the module docstring.

        ``content`` may be a function that makes the body: it is called each time the request is
        actually sent (after the rate limiter, on every retry), for bodies that say when they were sent.
        """
        policy = self.context.request_retry

        def build() -> httpx.Request:
            return self._http.build_request(
                method,
                url,
                json=json,
                content=content() if callable(content) else content,
                params=params,
                data=data,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )

        path = self._path(url)
        sending = _sending.set(self.redact)
        try:
            attempt = 1
            while True:
                try:
                    return await self._send_within_rate_limit(build, path)
                except _RetryableResponse as exc:
                    if attempt >= policy.attempts:
                        tries = policy.attempts
                        raise TransientError(
                            f"{exc.message} (after {tries} {'try' if tries == 1 else 'tries'})",
                            retry_after=exc.retry_after,
                        ) from None
                    await asyncio.sleep(self._backoff(attempt, exc))
                    attempt += 1
        finally:
            _sending.reset(sending)

    def _backoff(self, attempt: int, exc: _RetryableResponse) -> float:
        """Seconds to wait after the ``attempt``-th failed try: the policy's, or the CRM's
        ``Retry-After`` when longer (up to the policy's longest wait)."""
        policy = self.context.request_retry
        wait = policy.backoff(attempt)
        if exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, policy.max_wait))
        return wait

    def _where(self, request: httpx.Request) -> str:
        return f"{request.method} {request.url.path}"

    def _path(self, url: str) -> str:
        """The request's path relative to the base URL: what buckets' prefixes match."""
        path = self._paths.get(url)
        if path is None:
            if len(self._paths) > 1024:  # URLs with ids in them: keep the cache small
                self._paths.clear()
            path = self._paths[url] = self._parse_path(url)
        return path

    def _parse_path(self, url: str) -> str:
        parsed = httpx.URL(url)
        path = parsed.path
        if parsed.is_absolute_url and self._base_path and path.startswith(self._base_path):
            path = path[len(self._base_path) :]
        return path if path.startswith("/") else "/" + path

    async def _send_within_rate_limit(
        self, build: Callable[[], httpx.Request], path: str
    ) -> httpx.Response:
        limiter = self.context.rate_limiter
        circuit = self.context.circuit
        rate_limited_for = 0.0
        while True:
            self.context.check()
            # A database error here (a shared budget) propagates as StoreError: infrastructure, never
            # the contact's failure; the engine hands unsent contacts back without an attempt.
            ticket = await limiter.acquire(path)
            self.context.check()
            request = build()
            started = time.perf_counter()
            try:
                with self.context.in_flight():
                    async with asyncio.timeout(self._deadline):
                        response = await self._http.send(request, stream=True)
                        # The CRM counted the request by the time its answer started.
                        limiter.answered(ticket, rate_limited=response.status_code == 429)
                        ticket = None
                        whole = await self._read_body(response)
            except (httpx.TimeoutException, TimeoutError):
                limiter.answered(ticket)  # counted by now, if at all
                self._answered(None, started)
                self._failed(f"{self.crm}: {self._where(request)} timed out")
                raise _RetryableResponse(
                    f"{self.crm}: {self._where(request)} timed out", retry_after=None, response=None
                ) from None
            except httpx.TransportError as exc:
                limiter.answered(ticket)
                self._answered(None, started)
                reason = (
                    f"{self.crm}: {self._where(request)} failed: {self.redact(type(exc).__name__)}"
                    f" {self.redact(str(exc))}"
                )
                self._failed(reason)
                raise _RetryableResponse(reason, retry_after=None, response=None) from None
            self._answered(response.status_code, started)
            if response.status_code >= 500:
                self._failed(f"{self.crm}: HTTP {response.status_code} on {self._where(request)}")
            else:
                circuit.success()
            if self.context.logger.isEnabledFor(logging.DEBUG):
                self.context.logger.debug(
                    "%s %s -> %s (%.0f ms)",
                    self.crm,
                    self._where(request),
                    response.status_code,
                    (time.perf_counter() - started) * 1000,
                )
            if self._inspect is not None:
                self._inspect(response)
            status = response.status_code
            said = read_headers(self._limit_headers, response.headers)
            if said.limit is not None:
                limiter.announce(said.limit, path)
            if status == 429:
                wait = parse_retry_after(response.headers.get("retry-after"))
                if wait is None:
                    wait = said.reset
                if wait is None:
                    # The CRM did not say when: its window frees as old requests age out.
                    wait = self.context.request_retry.backoff(1)
                if rate_limited_for + wait <= self.context.request_retry.max_rate_limit_wait:
                    # One pause per answer, shared with the fleet; waited out in acquire() and never
                    # counted as a failed attempt.
                    rate_limited_for += wait
                    limiter.pause(wait, path)
                    continue
                limiter.pause(wait, path)
                raise TransientError(
                    f"{self.crm}: rate limited on {self._where(request)} for more than "
                    f"{self.context.request_retry.max_rate_limit_wait:.0f} s",
                    retry_after=wait,
                )
            if said.exhausted and said.reset and self._limit_headers.pause_when_exhausted:
                # The reset counts from when the CRM answered, about when the request left: counted
                # from now, the pause would outlast the window by this process's own delays.
                limiter.pause(said.reset - (time.perf_counter() - started), path)
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
            if not whole:
                # Only now: a 401 or a 503 with a huge error page is still what its status says.
                cap = self.context.max_response_bytes
                raise MalformedResponseError(
                    f"{self.crm}: the answer to {self._where(request)} (HTTP {status}) is larger "
                    f"than {cap:,} bytes, the most crmsync reads "
                    f"({self.crm.upper()}_SYNC_MAX_RESPONSE_BYTES); it starts: "
                    f"{self.body_snippet(response)}"
                )
            return response

    def _answered(self, status: int | None, started: float) -> None:
        report = self.context.on_response
        if report is not None:
            report(status, time.perf_counter() - started)

    def _failed(self, reason: str) -> None:
        """Count a connection error, timeout or 5xx; raise once the circuit opens (the CRM is paused)."""
        self.context.circuit.failure(reason)
        self.context.circuit.check()

    async def _read_body(self, response: httpx.Response) -> bool:
        """Read the body of ``response``, at most ``max_response_bytes`` of it (after decoding), and
        say whether it was read whole.

        A larger answer (a proxy's error page, a misrouted download) is never held whole in memory:
        reading stops at the cap (at the first chunk when ``Content-Length`` announces more) and only
        its start is kept, for the error message.
        """
        cap = self.context.max_response_bytes
        declared = response.headers.get("content-length", "")
        whole = not (declared.isdigit() and int(declared) > cap)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if not whole or size > cap:
                    whole = False
                    break
        finally:
            await response.aclose()
        # What Response.aread() would have stored: the adapters read response.content as usual.
        response._content = b"".join(chunks)
        return whole

    def snippet(self, text: str | bytes, length: int = SNIPPET_LENGTH) -> str:
        """:func:`snippet` of ``text`` with the secrets redacted first: cutting first could leave the
        start of a secret that no longer matches whole."""
        if isinstance(text, bytes):
            text = text[:_SNIPPET_WINDOW].decode("utf-8", errors="replace")
        return snippet(self.redact(text[:_SNIPPET_WINDOW]), length)

    def body_snippet(self, response: httpx.Response) -> str:
        """The start of the response body, redacted, for messages."""
        return self.snippet(response.content) if response.content else "(empty body)"

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
