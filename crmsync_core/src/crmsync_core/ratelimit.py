"""Request budgets: one model for every CRM, enforced in process or shared by a fleet through the database.

A CRM declares its budget as :class:`RateLimits`: one or more :class:`Bucket` (a window kind, a size, a
period, and the request paths it covers) and :class:`LimitHeaders`, the names of the headers in which the
CRM announces what is left. Settings override the first bucket (``{CRM}_SYNC_RATE_LIMIT_*``).

A :class:`Limiter` hands out **slots**: each slot is a span ``[start, end)`` (on the ledger's clock) in
which the CRM counts one request. Slots come from a ledger in blocks (a *lease*): the in-process
:class:`MemoryLedger`, or the store's PostgreSQL ledger shared by every worker on every machine. Both plan
a lease with the same arithmetic, :func:`plan`. The rule (:func:`issue_slots`): a slot starts at least
``period`` after the end of every slot ``limit`` or more places before it, so no ``limit + 1`` requests,
each counted within its slot, fit in one window: the requests of all workers together never put more
than ``limit`` requests into any window of ``period``, wherever that window starts. That one rule covers
every window kind:

* sliding (rolling) window of N per P: exactly the rule;
* fixed window of N per P: any fixed window is one of the sliding windows, so it holds too, whatever the
  CRM's window alignment (which we rarely know);
* token bucket of burst B refilling at r/s: N = B, P = B / r keeps at most B + r * t requests in any
  interval of length t, which is what a token bucket allows.

A new slot is long enough for its request to leave (``tolerance``, 15 ms of a 1 s window, or twice the
latest this event loop woke up lately, at most 60 ms), to travel (``margin``, 30 ms of a 1 s window, or
the slowest recent answer), and for the ledger clock's uncertainty. A request whose slot passed before it
could leave waits for the next slot: a slot is never used late. Once the CRM answers, the worker
*settles* the slot: the next statement replaces it with the span in which the request was really
counted (from when it left to its answer), so the next window is planned from what happened instead of
from what was allowed. A worker at the ceiling settles a window's slots before it leases the slots a
window later (a lease holds at most 60 % of a window's requests), so its long-run rate is
N / (P + the time from a slot's start to the answer): 98-99 % of a 1-second window on loopback.

A lease costs one statement on PostgreSQL (a compare-and-swap of the bucket's row) and carries the
settled slots; at 10 requests a second that is about 0.17 statements per request, and about 4
statements a second at 1,000 a second (256 slots a lease). Slots a worker did not use (expired, or held when
the run ends) go back to the ledger with its next statement; the slots of a worker that died simply age
out of the window.

A 429, or a response saying nothing is left, pauses the bucket until the reset the CRM announced: a pause
is a moment, never a debt, so pauses never add up (the latest announced reset wins), and it is written to
the ledger so that every worker holds off. A 429 also doubles the bucket's margin in this worker (up to
50 ms): the CRM counted more than the slots allowed, so the worker leaves more room from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

logger = logging.getLogger("crmsync.ratelimit")

#: a request must leave within this share of the period after its slot time (max 50 ms): how late an
#: event loop may wake up before the slot is given up
TOLERANCE_SHARE = 0.015
TOLERANCE_MAX = 0.05
#: the longest a busy slot lasts however late the event loop wakes (60 ms: 94 % of a 1 s window)
MAX_TOLERANCE = 0.06
#: room for the varying delay between sending and the CRM counting, in a slot not settled yet (30 ms of
#: a 1 s window, at most 50 ms)
MARGIN_SHARE = 0.03
MARGIN_MAX = 0.05
#: a lease covers about this many seconds of a bucket's rate
LEASE_SECONDS = 1.0
#: the most slots in one lease (1,000 requests a second: 4 statements a second)
MAX_LEASE = 256
#: the most a lease's slots start after it was asked for (they start after its round trip)
MAX_LEAD = 0.25
#: a lease holds at most this share of a window's requests
LEASE_SHARE = 0.6
#: how fast the slowest answer and the latest wake-up seen fade (per request)
FADE = 0.95
#: answers seen before the fastest is taken as the least time a request and its answer travel
SETTLED_ANSWERS = 8


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` per ``period_seconds``, e.g. ``RateLimit(10, 1.0)`` for Brevo's general tier."""

    requests: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.period_seconds <= 0:
            raise ValueError("a rate limit needs at least 1 request per positive period")

    @property
    def per_second(self) -> float:
        return self.requests / self.period_seconds


class WindowKind(enum.StrEnum):
    """How a CRM counts: all are enforced by the same slot rule (see the module docstring)."""

    FIXED = "fixed"
    SLIDING = "sliding"
    TOKEN_BUCKET = "token_bucket"  # noqa: S105 - not a password


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget of a CRM: at most ``requests`` per ``period_seconds``, counted the ``kind`` way.

    ``paths`` are the request path prefixes (relative to the client's base URL) it covers; an empty tuple
    covers every request that no other bucket claims. For a token bucket, ``requests`` is the burst and
    ``period_seconds`` the time it takes to refill it.
    """

    name: str
    requests: int
    period_seconds: float
    kind: WindowKind = WindowKind.SLIDING
    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        RateLimit(self.requests, self.period_seconds)  # the same validation

    @property
    def limit(self) -> RateLimit:
        return RateLimit(self.requests, self.period_seconds)

    @property
    def tolerance(self) -> float:
        return min(TOLERANCE_SHARE * self.period_seconds, TOLERANCE_MAX)

    @property
    def margin(self) -> float:
        return min(MARGIN_SHARE * self.period_seconds, MARGIN_MAX)

    @property
    def gap(self) -> float:
        """The least time between a slot and the one ``requests`` slots after it, at the ceiling."""
        return self.period_seconds + self.tolerance + self.margin

    def covers(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.paths)


@dataclass(frozen=True, slots=True)
class LimitHeaders:
    """Where a CRM announces its budget in its responses (header names, any letter case).

    ``reset`` is seconds until the budget refills (a value above 10^9 is read as a Unix time);
    ``reset_milliseconds`` says it counts milliseconds. ``limit`` and ``interval_milliseconds`` announce
    the budget itself: a smaller one than configured is adopted. ``pause_when_exhausted``: a
    ``remaining`` of 0 pauses the bucket until the reset (only meaningful with a ``reset`` header).
    """

    remaining: str | None = None
    reset: str | None = None
    reset_milliseconds: bool = False
    limit: str | None = None
    interval_milliseconds: str | None = None
    pause_when_exhausted: bool = True


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one response said about the budget."""

    #: seconds until the budget refills, when the response said
    reset: float | None = None
    #: the response said no request is left
    exhausted: bool = False
    #: the budget the CRM announced
    limit: RateLimit | None = None


def read_headers(
    spec: LimitHeaders, headers: Mapping[str, str], *, now: float | None = None
) -> Announcement:
    """Read ``headers`` (an ``httpx.Headers`` or any case-insensitive mapping) the ``spec`` way."""
    reset: float | None = None
    if spec.reset and (raw := headers.get(spec.reset)) is not None:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            if value > 1e9:  # a Unix time (Mautic's X-RateLimit-Reset)
                value -= now if now is not None else time.time()
            elif spec.reset_milliseconds:
                value /= 1000
            reset = max(0.0, value)
    exhausted = False
    if spec.remaining and (raw := headers.get(spec.remaining)) is not None:
        with contextlib.suppress(ValueError):
            exhausted = int(float(raw)) <= 0
    limit: RateLimit | None = None
    if spec.limit and spec.interval_milliseconds:
        try:
            requests = int(headers.get(spec.limit, ""))
            interval = float(headers.get(spec.interval_milliseconds, "")) / 1000
            if requests >= 1 and interval > 0:
                limit = RateLimit(requests, interval)
        except ValueError:
            pass
    return Announcement(reset=reset, exhausted=exhausted, limit=limit)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A CRM's whole budget: its buckets and how it announces them."""

    buckets: tuple[Bucket, ...] = ()
    headers: LimitHeaders = field(default_factory=LimitHeaders)

    def __post_init__(self) -> None:
        names = [b.name for b in self.buckets]
        if len(set(names)) != len(names):
            raise ValueError(f"bucket names must be unique, got {names}")

    @classmethod
    def single(
        cls, limit: RateLimit | None, *, kind: WindowKind = WindowKind.SLIDING, name: str = "all"
    ) -> RateLimits:
        """One bucket for every request (``None``: no limit)."""
        if limit is None:
            return cls()
        return cls((Bucket(name, limit.requests, limit.period_seconds, kind),))

    @property
    def primary(self) -> Bucket | None:
        """The first bucket: the one ``{CRM}_SYNC_RATE_LIMIT_*`` sets."""
        return self.buckets[0] if self.buckets else None

    def with_primary(self, limit: RateLimit | None) -> RateLimits:
        """These limits with the first bucket set to ``limit`` (``None`` keeps them unchanged)."""
        if limit is None:
            return self
        if not self.buckets:
            return replace(self, buckets=(Bucket("all", limit.requests, limit.period_seconds),))
        first = replace(
            self.buckets[0], requests=limit.requests, period_seconds=limit.period_seconds
        )
        return replace(self, buckets=(first, *self.buckets[1:]))

    def bucket_for(self, path: str) -> Bucket | None:
        """The bucket a request to ``path`` counts against: the first whose prefixes match it, else the
        first catch-all bucket, else none (unlimited)."""
        for bucket in self.buckets:
            if bucket.paths and bucket.covers(path):
                return bucket
        for bucket in self.buckets:
            if not bucket.paths:
                return bucket
        return None


# -- the slot rule --------------------------------------------------------------------------------------


#: a span ``(start, end)`` on the ledger's clock in which the CRM counts one request
Slot = tuple[float, float]
#: what became of a slot a worker leased: the span in which the CRM counted its request, as measured
#: from the answer, or ``None`` when the request was never sent (the slot expired, or the run ended)
Settled = tuple[Slot, Slot | None]


def issue_slots(
    held: Sequence[Slot],
    count: int,
    *,
    bucket: Bucket,
    start: float,
    validity: float | None = None,
    allowance: float | None = None,
    uncertainty: float = 0.0,
) -> list[Slot]:
    """``count`` new slots, none before ``start`` nor before the latest start of ``held`` (sorted by start).

    The rule: a slot starts at least ``period`` after the *end* of every slot ``requests`` or more places
    before it (by start), so that no ``requests + 1`` requests, each counted within its slot, fit in one
    window of ``period``. A new slot is ``validity`` (the time its request may take to leave: the
    bucket's tolerance while busy, up to half the period while fewer than half of its requests were
    issued in the last period) plus :func:`extra`: ``allowance`` (from leaving to being counted, at least
    the bucket's margin) and twice the ledger clock's ``uncertainty`` (the worker lets a request go
    ``uncertainty`` after the slot's start, so that it never leaves before it on the real clock). Pure:
    the ledgers keep ``held``.
    """
    limit, period = bucket.requests, bucket.period_seconds
    recent = sum(1 for a, _ in held if a > start - period)
    busy = validity if validity is not None else bucket.tolerance
    busy = min(max(busy, bucket.tolerance), period)
    far_from_full = recent + count <= limit / 2
    window = max(busy, min(LEASE_SECONDS, period / 2)) if far_from_full else busy
    after = extra(bucket, allowance, uncertainty)
    combined = list(held)
    # the latest end among slots at least ``limit`` places back, as the list grows
    reach = -math.inf
    for _start, e in combined[: max(0, len(combined) - limit + 1)]:
        reach = max(reach, e)
    # While busy, slots are spread at the limit's own pace: a burst of slots at one instant, each valid
    # for a few milliseconds, would mostly expire before the requests that wait for them are sent.
    pace = period / limit if not far_from_full else 0.0
    issued: list[Slot] = []
    for _ in range(count):
        at = max(start, combined[-1][0] + pace) if combined else start
        at = max(at, reach + period)
        slot = (at, at + window + after)
        combined.append(slot)
        issued.append(slot)
        if len(combined) >= limit:
            reach = max(reach, combined[len(combined) - limit][1])
    return issued


def extra(bucket: Bucket, allowance: float | None, uncertainty: float) -> float:
    """How much longer a slot lasts than its send window: see :func:`issue_slots`."""
    return max(allowance if allowance is not None else 0.0, bucket.margin) + 2 * uncertainty


def prune(held: Sequence[Slot], start: float, bucket: Bucket) -> list[Slot]:
    """The slots that can still hold back a slot starting at ``start`` or later."""
    before = start - bucket.period_seconds
    return [slot for slot in held if slot[1] >= before]


def settle(held: Sequence[Slot], settled: Sequence[Settled]) -> list[Slot]:
    """``held`` with each settled slot replaced by the span in which its request was counted, or
    removed when it was never sent; sorted by start. Slots no longer held (pruned) are ignored."""
    if not settled:
        return list(held)
    gone = Counter(slot for slot, _ in settled)
    left = []
    for slot in held:
        if gone[slot] > 0:
            gone[slot] -= 1
        else:
            left.append(slot)
    left += [counted for _, counted in settled if counted is not None]
    left.sort()
    return left


def plan(
    held: Sequence[Slot],
    settled: Sequence[Settled],
    *,
    bucket: Bucket,
    count: int,
    now: float,
    not_before: float,
    paused_until: float,
    validity: float | None = None,
    allowance: float | None = None,
    uncertainty: float = 0.0,
) -> tuple[list[Slot], list[Slot]]:
    """A lease, as every ledger computes it: ``(what the ledger holds afterwards, the new slots)``.

    The worker's ``settled`` slots are applied first, then slots older than a window are dropped, then
    ``count`` slots are issued from ``max(now, not_before, paused_until)`` on.
    """
    start = max(now, not_before, paused_until)
    kept = prune(settle(held, settled), start, bucket)
    slots = issue_slots(
        kept,
        count,
        bucket=bucket,
        start=start,
        validity=validity,
        allowance=allowance,
        uncertainty=uncertainty,
    )
    return kept + slots, slots


@dataclass(frozen=True, slots=True)
class Lease:
    """Slots a ledger issued, on its own clock."""

    slots: list[Slot]
    #: the bucket is paused until then (ledger clock); 0 when not paused
    paused_until: float
    #: the ledger's clock when it issued them
    now: float
    #: how far that clock may be from the ledger's real one (see :func:`issue_slots`)
    uncertainty: float = 0.0


class Ledger(Protocol):
    """Where slots are issued: in this process, or in the database for the whole fleet."""

    def now(self) -> float:
        """The ledger's clock (for the database: its clock as estimated here)."""
        ...

    @property
    def uncertainty(self) -> float:
        """How far :meth:`now` may be from the ledger's real clock (0 in process)."""
        ...

    async def lease(
        self,
        key: str,
        bucket: Bucket,
        count: int,
        settled: Sequence[Settled],
        not_before: float,
        validity: float | None = None,
        allowance: float | None = None,
    ) -> Lease:
        """Apply ``settled``, then issue ``count`` slots of ``bucket`` (see :func:`plan`)."""
        ...

    async def settle(self, key: str, bucket: Bucket, settled: Sequence[Settled]) -> None:
        """Apply ``settled`` (the end of a run): unused time becomes anyone's."""
        ...

    async def pause(self, key: str, bucket: Bucket, until: float) -> None:
        """Issue no slot before ``until`` (ledger clock); a later pause wins, pauses never add up."""
        ...


class MemoryLedger:
    """The ledger of one process (SQLite, tests, or ``{CRM}_SYNC_SHARED_RATE_LIMIT=false``)."""

    uncertainty = 0.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, list[Slot]] = {}
        self._paused: dict[str, float] = {}

    def now(self) -> float:
        return self.clock()

    async def lease(
        self,
        key: str,
        bucket: Bucket,
        count: int,
        settled: Sequence[Settled],
        not_before: float,
        validity: float | None = None,
        allowance: float | None = None,
    ) -> Lease:
        now = self.clock()
        paused = self._paused.get(key, 0.0)
        self._held[key], slots = plan(
            self._held.get(key, []),
            settled,
            bucket=bucket,
            count=count,
            now=now,
            not_before=not_before,
            paused_until=paused,
            validity=validity,
            allowance=allowance,
        )
        return Lease(slots, paused, now)

    async def settle(self, key: str, bucket: Bucket, settled: Sequence[Settled]) -> None:
        self._held[key] = settle(self._held.get(key, []), settled)

    async def pause(self, key: str, bucket: Bucket, until: float) -> None:
        self._paused[key] = max(self._paused.get(key, 0.0), until)


# -- the limiter ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """One request's slot: :meth:`Limiter.acquire` returns it, :meth:`Limiter.answered` takes it back once
    the CRM answered, so that the ledger learns when the request was really counted."""

    bucket: str
    slot: Slot
    #: the ledger's clock when the request was let go
    sent: float


@runtime_checkable
class RateLimiter(Protocol):
    """What :class:`crmsync_core.http.CrmClient` uses to stay within a CRM's budget."""

    async def acquire(self, path: str = "") -> Ticket | None:
        """Wait until one more request to ``path`` may be sent; hand the result to :meth:`answered`."""

    def answered(self, ticket: Ticket | None, *, rate_limited: bool = False) -> None:
        """The request of ``ticket`` got its answer (``rate_limited``: a 429), or failed."""

    def pause(self, seconds: float, path: str = "") -> None:
        """Send nothing to ``path``'s bucket for ``seconds`` (the CRM said its budget is spent)."""

    def announce(self, limit: RateLimit, path: str = "") -> None:
        """The CRM announced its budget for ``path``: never send more than it allows."""

    async def release(self) -> None:
        """Give back the slots not used (the end of a run)."""

    @property
    def waited_seconds(self) -> float:
        """Total time callers spent waiting in :meth:`acquire`."""


#: one leased slot as the worker keeps it: the slot, and when its request may leave (ledger clock)
_Held = tuple[Slot, float, float]


@dataclass(slots=True)
class _State:
    bucket: Bucket | None
    key: str
    name: str
    slots: deque[_Held] = field(default_factory=deque)
    #: slots this worker is done with, for the ledger's next statement
    settled: list[Settled] = field(default_factory=list)
    paused_until: float = 0.0  # ledger clock
    lease_size: int = 1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    prefetch: asyncio.Task[None] | None = None
    used: int = 0  # slots sent since the last lease
    unused: int = 0  # slots given up since the last lease
    #: the least time from leaving to being counted that this bucket allows (doubles on a 429)
    margin: float = 0.0


class Limiter:
    """A CRM's :class:`RateLimits`, enforced with slots from a :class:`Ledger` (see the module docstring).

    ``ledger`` defaults to a :class:`MemoryLedger` on ``clock``. Requests to each bucket are served in
    arrival order. ``statements`` counts the ledger calls (each one database statement when shared).
    """

    def __init__(
        self,
        limits: RateLimits | RateLimit | None,
        ledger: Ledger | None = None,
        *,
        crm: str = "crm",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not isinstance(limits, RateLimits):
            limits = RateLimits.single(limits)
        self.limits = limits
        self.crm = crm
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger(clock)
        self.shared = ledger is not None and not isinstance(ledger, MemoryLedger)
        self._sleep = sleep
        self._states: dict[str, _State] = {}
        self._by_path: dict[str, _State] = {}
        self._waited = 0.0
        self._lead = 0.0
        self._late = 0.0  # how late after a slot's start requests leave (a slowly fading maximum)
        # From letting a request go to its answer: the shortest seen, and a slowly fading maximum.
        self._fastest = math.inf
        self._slowest = 0.0
        self._answers = 0
        #: ledger calls (each one database statement when shared), and slots that expired unused
        self.statements = 0
        self.expired = 0
        self._pending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        buckets = ", ".join(
            f"{b.name}={b.requests}/{b.period_seconds:g}s" for b in self.limits.buckets
        )
        return f"Limiter({self.crm}: {buckets or 'unlimited'}{', shared' if self.shared else ''})"

    @property
    def limit(self) -> RateLimit | None:
        """The first bucket's budget."""
        primary = self.limits.primary
        return primary.limit if primary else None

    @property
    def waited_seconds(self) -> float:
        return self._waited

    def _state(self, path: str) -> _State:
        state = self._by_path.get(path)
        if state is None:
            if len(self._by_path) > 1024:  # paths with ids in them: keep the cache small
                self._by_path.clear()
            state = self._by_path[path] = self._state_of(path)
        return state

    def _state_of(self, path: str) -> _State:
        bucket = self.limits.bucket_for(path)
        name = bucket.name if bucket else "*"
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = _State(bucket, f"{self.crm}:{name}", name)
            if bucket is not None:
                state.lease_size = self._lease_size(bucket)
                state.margin = bucket.margin
        return state

    @staticmethod
    def _lease_size(bucket: Bucket) -> int:
        # About a second of requests, and at most 60 % of the window's requests: a worker at the ceiling
        # then settles the slots a window before the ones it leases next, so these start from when its
        # requests were really counted instead of from the ends its slots allowed.
        wanted = math.ceil(bucket.limit.per_second * LEASE_SECONDS)
        return max(1, min(int(bucket.requests * LEASE_SHARE), wanted, MAX_LEASE))

    def _now(self) -> float:
        # Slots are moments on the ledger's clock: the database's, for a fleet.
        return self.ledger.now()

    def bucket(self, path: str = "") -> Bucket | None:
        """The bucket requests to ``path`` count against, with any smaller budget the CRM announced."""
        return self._state(path).bucket

    async def acquire(self, path: str = "") -> Ticket | None:
        state = self._state(path)
        async with state.lock:
            while True:
                now = self._now()
                if state.bucket is None:
                    if now >= state.paused_until:
                        return None
                    await self._wait(state.paused_until - now)
                    continue
                # A slot whose time to leave passed is given up, never used late: its end is what kept
                # the others out, and the CRM might count a late request after it.
                while state.slots and max(now, state.paused_until) >= state.slots[0][2]:
                    slot, _, until = state.slots.popleft()
                    logger.debug(
                        "%s: gave up a %s slot %.1f ms after its time to leave (paused: %s)",
                        self.crm,
                        state.name,
                        (now - until) * 1000,
                        state.paused_until > until,
                    )
                    state.settled.append((slot, None))
                    state.unused += 1
                    self.expired += 1
                if not state.slots:
                    if state.prefetch is not None:
                        await asyncio.shield(state.prefetch)
                    else:
                        await self._lease(state, now)
                    continue
                slot, leave, _ = state.slots[0]
                at = max(leave, state.paused_until)
                if at > now:
                    await self._wait(at - now)
                    continue
                state.slots.popleft()
                state.used += 1
                self._late = max(now - leave, FADE * self._late)
                self._prefetch_if_running_low(state, now)
                return Ticket(state.name, slot, now)

    def answered(self, ticket: Ticket | None, *, rate_limited: bool = False) -> None:
        if ticket is None:
            return
        state = self._states[ticket.bucket]
        now = self._now()
        took = now - ticket.sent
        self._fastest = min(self._fastest, took)
        self._slowest = max(took, self._slowest * FADE)
        self._answers += 1
        # The CRM counted the request after it left and before it answered: before the answer by at
        # least half the fastest exchange seen (unless the CRM's own work takes more than half of
        # that), once enough were seen for the fastest not to be a first one that opened the
        # connection. Plus this clock's uncertainty, and any room a 429 taught.
        assert state.bucket is not None
        way = self._fastest / 2 if self._answers >= SETTLED_ANSWERS else 0.0
        extra = self.ledger.uncertainty + state.margin - state.bucket.margin
        state.settled.append((ticket.slot, (ticket.sent + way, now - way + extra)))
        if rate_limited:
            # The CRM counted more than the slots allowed: leave more room from now on.
            state.margin = min(2 * state.margin, max(MARGIN_MAX, state.bucket.margin))

    def _allowance(self, state: _State) -> float:
        """How long after its send window a slot must last for the request to be counted."""
        assert state.bucket is not None
        flight = self._slowest - (self._fastest / 2 if self._answers >= SETTLED_ANSWERS else 0.0)
        flight = min(max(flight, 0.0), state.bucket.period_seconds / 4)
        return state.margin + flight

    def _prefetch_if_running_low(self, state: _State, now: float) -> None:
        """Lease the next block in the background before this one runs out, so that no request waits
        for the database's round trip."""
        if state.prefetch is not None:
            return
        low = len(state.slots) <= max(1, state.lease_size // 4)
        ending = bool(state.slots) and state.slots[-1][2] - now < 2 * self._lead + 0.01
        if not (low or ending):
            return

        async def prefetch() -> None:
            try:
                await self._lease(state, self._now())
            except Exception as exc:  # the next acquire leases again, and raises
                logger.warning("%s: could not lease request slots ahead: %s", self.crm, exc)
            finally:
                state.prefetch = None

        state.prefetch = asyncio.get_running_loop().create_task(prefetch())

    async def _lease(self, state: _State, now: float) -> None:
        assert state.bucket is not None
        settled, state.settled = state.settled, []
        if state.unused > state.used:
            # Slots went unused: lease about twice what was sent since the last lease (a worker far
            # below the limit keeps its leases, and the shared row, small).
            state.lease_size = max(1, min(self._lease_size(state.bucket), 2 * state.used))
        else:
            state.lease_size = self._lease_size(state.bucket)
        state.used = state.unused = 0
        self.statements += 1
        # New slots start after the lease's own round trip, or they would be stale on arrival.
        not_before = max(now + self._lead, state.paused_until)
        # Slots last long enough for how late this event loop wakes up (twice the worst of late): a
        # slot given up is a request lost, while a longer slot costs only until it is settled.
        validity = min(max(state.bucket.tolerance, 2 * self._late), MAX_TOLERANCE)
        allowance = self._allowance(state)
        try:
            lease = await self.ledger.lease(
                state.key, state.bucket, state.lease_size, settled, not_before, validity, allowance
            )
        except BaseException:
            state.settled[:0] = settled  # for the next statement
            raise
        took = self._now() - now
        self._lead = min(0.8 * self._lead + 0.2 * 1.5 * took, MAX_LEAD)
        state.paused_until = max(state.paused_until, lease.paused_until)
        # A request leaves within the slot's send window on the ledger's real clock: from the start
        # plus this clock's uncertainty, to the end less the time to be counted.
        u = lease.uncertainty
        after = extra(state.bucket, allowance, u)
        state.slots.extend((slot, slot[0] + u, slot[1] - after + u) for slot in lease.slots)

    def pause(self, seconds: float, path: str = "") -> None:
        if seconds <= 0:
            return
        state = self._state(path)
        until = self._now() + seconds
        if until <= state.paused_until:
            return  # already paused at least that long: pauses never add up
        state.paused_until = until
        if state.slots and until <= state.slots[0][0][0]:
            # The window frees before this worker's next slot anyway (the usual ``remaining: 0`` of a
            # worker at the ceiling): the slots already keep every worker out, no statement needed.
            return
        if state.bucket is not None and self.shared:
            self.statements += 1
            task = asyncio.get_running_loop().create_task(
                self.ledger.pause(state.key, state.bucket, until)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def announce(self, limit: RateLimit, path: str = "") -> None:
        state = self._state(path)
        bucket = state.bucket
        if bucket is None or limit.per_second >= bucket.limit.per_second:
            return
        state.bucket = replace(bucket, requests=limit.requests, period_seconds=limit.period_seconds)
        state.lease_size = min(state.lease_size, self._lease_size(state.bucket))

    async def release(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for state in self._states.values():
            if state.bucket is None:
                continue
            async with state.lock:
                if state.prefetch is not None:
                    await asyncio.shield(state.prefetch)
                settled = [*state.settled, *((held[0], None) for held in state.slots)]
                state.settled, state.slots = [], deque()
                if settled:
                    self.statements += 1
                    await self.ledger.settle(state.key, state.bucket, settled)

    async def _wait(self, seconds: float) -> None:
        self._waited += seconds
        await self._sleep(seconds)
