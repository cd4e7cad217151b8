"""A base for fake CRMs: what every fake does alike, so that a fake states only the vendor's answers.

A fake CRM subclasses :class:`FakeCrm` and writes :meth:`FakeCrm.answer` (its routes, its checks and its
bodies, in the vendor's order). The base gives it:

* a request log (:attr:`FakeCrm.log`: every request that reached the fake, in order);
* failure injection by script: :meth:`FakeCrm.script` queues canned answers (a status, a body, headers,
  or a timeout or dropped connection) for the next requests, optionally only those of one method or
  path; the fake takes them with :meth:`FakeCrm.take_scripted` where the vendor would have answered;
* failure injection by rate: :meth:`FakeCrm.injected_failure` says, from a seeded generator, whether to
  fail this request (``failure_rate``); the fake picks the vendor's failure;
* the vendor's rate windows in the limiter's own model: the fake lists the
  :class:`~crmsync_core.ratelimit.Bucket` a request counts against (:meth:`FakeCrm.rate_buckets`) and
  :class:`RateWindows` counts it the way the bucket's :class:`~crmsync_core.ratelimit.WindowKind` says
  (sliding, fixed or token bucket); the fake turns the :class:`Budget` into the vendor's 429 and headers;
* serving: :meth:`FakeCrm.transport` (an ``httpx.MockTransport``) and :meth:`FakeCrm.serve`, a loopback
  HTTP server through :func:`crmsync_core.testing.server.serve_handler`.

This module is test code: production never imports it (``tests/core/test_import_weight.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ..ratelimit import Bucket, RateLimit, WindowKind

__all__ = ["Budget", "FakeCrm", "RateWindows", "Scripted", "respond"]


def respond(
    status: int, body: Any = None, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """An answer: ``body`` as JSON, or as is when it is bytes or text, or no body for ``None``."""
    if body is None:
        return httpx.Response(status, headers=headers)
    if isinstance(body, bytes | str):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


# -- the rate windows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    """What one bucket holds after a request was counted against it (or refused)."""

    bucket: Bucket
    #: whether the request fitted (a refused request is counted against no bucket)
    allowed: bool
    #: requests counted in the current window (for a token bucket: tokens spent and not yet refilled)
    used: int
    #: when the current window started, on the fake's clock
    window_start: float
    #: seconds until the window holds one more request (or, while it has room, until it refills)
    reset: float

    @property
    def limit(self) -> RateLimit:
        return self.bucket.limit

    @property
    def remaining(self) -> int:
        return max(0, self.bucket.requests - self.used)


@dataclass(slots=True)
class _Window:
    #: sliding: the times of the requests counted in the last period
    counted: deque[float] = field(default_factory=deque)
    #: fixed: when the window started and how many it counted; token bucket: when it last refilled
    start: float | None = None
    count: int = 0
    tokens: float = 0.0


class RateWindows:
    """The vendor's request windows, one per bucket name, counted on the server side.

    Each bucket is counted the way its kind says: ``SLIDING`` holds at most ``requests`` in any span of
    ``period_seconds``; ``FIXED`` starts a window at the first request after the last one ended (or, with
    a ``calendar`` function for the bucket, at the calendar boundary it gives, e.g. midnight in the
    account's time zone) and counts up to ``requests`` in it; ``TOKEN_BUCKET`` holds a burst of
    ``requests`` refilled over ``period_seconds``. Buckets are given with each request, so a fake may
    change its limits between requests; what was counted stays with the bucket's name.
    """

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        #: the arrival times of the requests each bucket was asked about, refused ones included
        self.arrivals: dict[str, list[float]] = {}
        #: bucket name -> the start of the fixed window holding a time (calendar-aligned windows)
        self.calendar: dict[str, Callable[[float], float]] = {}

    def take(self, buckets: Iterable[Bucket], now: float) -> list[Budget]:
        """Count one request against every bucket of ``buckets``, or against none when one is full.

        Returns one :class:`Budget` per bucket, in order; ``allowed`` is false on every bucket that
        refused it."""
        buckets = list(buckets)
        for bucket in buckets:
            self.arrivals.setdefault(bucket.name, []).append(now)
            self._roll(bucket, now)
        refused = {b.name for b in buckets if self._used(b, now) >= b.requests}
        if not refused:
            for bucket in buckets:
                self._count(bucket, now)
        return [self._budget(b, now, allowed=b.name not in refused) for b in buckets]

    def peek(self, bucket: Bucket, now: float) -> Budget:
        """What ``bucket`` holds now, counting nothing."""
        self._roll(bucket, now)
        return self._budget(bucket, now, allowed=self._used(bucket, now) < bucket.requests)

    def started(self, name: str) -> bool:
        """Whether a request has been counted against the bucket ``name`` (its window exists)."""
        window = self._windows.get(name)
        return window is not None and (bool(window.counted) or window.start is not None)

    def exhaust(self, bucket: Bucket, now: float) -> None:
        """Spend what is left of ``bucket``'s current window (a vendor budget used up elsewhere)."""
        self._roll(bucket, now)
        while self._used(bucket, now) < bucket.requests:
            self._count(bucket, now)

    # -- one bucket, by kind ------------------------------------------------------------------------

    def _window(self, bucket: Bucket) -> _Window:
        return self._windows.setdefault(bucket.name, _Window())

    def _roll(self, bucket: Bucket, now: float) -> None:
        window, period = self._window(bucket), bucket.period_seconds
        if bucket.kind is WindowKind.SLIDING:
            while window.counted and window.counted[0] <= now - period:
                window.counted.popleft()
        elif bucket.kind is WindowKind.FIXED:
            align = self.calendar.get(bucket.name)
            if align is not None:
                start = align(now)
                if start != window.start:
                    window.start, window.count = start, 0
            elif window.start is None or now >= window.start + period:
                window.start, window.count = now, 0
        else:
            if window.start is None:
                window.start, window.tokens = now, float(bucket.requests)
            refill = (now - window.start) * bucket.requests / period
            window.tokens = min(float(bucket.requests), window.tokens + refill)
            window.start = now

    def _used(self, bucket: Bucket, now: float) -> int:
        window = self._window(bucket)
        if bucket.kind is WindowKind.SLIDING:
            return len(window.counted)
        if bucket.kind is WindowKind.FIXED:
            return window.count
        return bucket.requests - math.floor(window.tokens)

    def _count(self, bucket: Bucket, now: float) -> None:
        window = self._window(bucket)
        if bucket.kind is WindowKind.SLIDING:
            window.counted.append(now)
        elif bucket.kind is WindowKind.FIXED:
            window.count += 1
        else:
            window.tokens -= 1

    def _budget(self, bucket: Bucket, now: float, *, allowed: bool) -> Budget:
        window, period = self._window(bucket), bucket.period_seconds
        if bucket.kind is WindowKind.SLIDING:
            start = window.counted[0] if window.counted else now
            reset = start + period - now
        elif bucket.kind is WindowKind.FIXED:
            start = window.start if window.start is not None else now
            reset = start + period - now
        else:
            start = now
            missing = (1.0 if window.tokens < 1 else float(bucket.requests)) - window.tokens
            reset = max(0.0, missing) * period / bucket.requests
        return Budget(bucket, allowed, self._used(bucket, now), start, max(0.0, reset))


# -- failure injection ------------------------------------------------------------------------------


@dataclass(slots=True)
class Scripted:
    """A canned answer for the next ``times`` requests that match ``method`` and ``path``."""

    #: the status to answer (``None`` with a ``fault``: no answer at all)
    status: int | None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    #: only requests with this method (``None``: any)
    method: str | None = None
    #: only requests to this path or below it (``None``: any)
    path: str | None = None
    #: instead of answering, let the request time out or drop the connection
    fault: Literal["timeout", "disconnect"] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path == self.path or path.startswith(self.path.rstrip("/") + "/")
        )

    def response(self, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """The canned answer as is: a JSON body, raw bytes or text, or none; ``headers`` under the
        canned ones."""
        return respond(self.status or 200, self.body, {**(headers or {}), **self.headers})


# -- the base ---------------------------------------------------------------------------------------


class FakeCrm:
    """The shared part of a fake CRM; a subclass writes :meth:`answer` in the vendor's terms."""

    #: the path the loopback server's URL ends with (e.g. Brevo's ``/v3``)
    base_path: str = ""
    #: how long the fake takes to answer each request
    latency_seconds: float = 0.0
    #: share of requests :meth:`injected_failure` fails, drawn from ``seed``
    failure_rate: float
    seed: int

    def __init__(self, *, failure_rate: float = 0.0, seed: int = 0) -> None:
        self.failure_rate = failure_rate
        self.seed = seed
        self.rng = random.Random(seed)
        #: every request that reached the fake, in order
        self.log: list[httpx.Request] = []
        #: how many requests a rate window refused
        self.rate_limited = 0
        self.windows = RateWindows()
        self._script: deque[Scripted] = deque()

    # -- what a subclass says -----------------------------------------------------------------------

    async def answer(self, request: httpx.Request) -> httpx.Response:
        """The vendor's answer to ``request`` (its body already read, the request logged)."""
        raise NotImplementedError

    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        """The buckets ``request`` counts against (default: none, no limit)."""
        return ()

    def now(self) -> float:
        """The clock the rate windows count on (default: ``time.monotonic``)."""
        return time.monotonic()

    # -- serving ------------------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Read and log ``request``, then :meth:`answer` it (the ``httpx.MockTransport`` handler)."""
        await request.aread()
        self.log.append(request)
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        return await self.answer(request)

    def transport(self) -> httpx.MockTransport:
        """An in-process transport: ``httpx.AsyncClient(transport=fake.transport())``."""
        return httpx.MockTransport(self.handle)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the fake over HTTP/1.1 on a loopback port; yields its base URL (with
        :attr:`base_path`)."""
        from .server import serve_handler

        async with serve_handler(self.handle, host, port) as origin:
            yield f"{origin}{self.base_path}"

    # -- rate windows -------------------------------------------------------------------------------

    def take_budget(self, request: httpx.Request) -> tuple[list[Budget], Budget | None]:
        """Count ``request`` against its buckets: every bucket's budget, and the first that refused
        it (``None``: it fits). Refusals are counted in :attr:`rate_limited`."""
        budgets = self.windows.take(self.rate_buckets(request), self.now())
        refused = next((budget for budget in budgets if not budget.allowed), None)
        if refused is not None:
            self.rate_limited += 1
        return budgets, refused

    # -- failure injection --------------------------------------------------------------------------

    def script(
        self,
        status: int | None,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        fault: Literal["timeout", "disconnect"] | None = None,
    ) -> None:
        """Queue a canned answer for the next ``times`` matching requests (after those queued before)."""
        self._script.append(Scripted(status, body, dict(headers or {}), times, method, path, fault))

    def take_scripted(self, request: httpx.Request, path: str | None = None) -> Scripted | None:
        """The first queued answer that matches ``request`` (its ``path`` relative to the fake's API
        when given), used up by one; raises the transport error of a scripted fault."""
        path = request.url.path if path is None else path
        for entry in self._script:
            if entry.matches(request.method, path):
                entry.times -= 1
                if entry.times <= 0:
                    self._script.remove(entry)
                if entry.fault == "timeout":
                    raise httpx.ReadTimeout("injected timeout", request=request)
                if entry.fault == "disconnect":
                    raise httpx.RemoteProtocolError("injected dropped connection", request=request)
                return entry
        return None

    def injected_failure(self) -> bool:
        """Whether to fail this request, drawn from the seeded generator at ``failure_rate``."""
        return bool(self.failure_rate) and self.rng.random() < self.failure_rate
