"""The engine: drains a CRM's queue through its adapter. It knows neither SQL nor HTTP.

One run (:meth:`Engine.run_once`) hands claims back that a dead worker held, then keeps up to
``{CRM}_SYNC_CONCURRENCY`` batches in flight: each claims up to a batch of due contacts from the
:class:`~crmsync_core.store.Store`, pushes them through the adapter (whose requests share one rate
limiter), turns every outcome into an event of the status machine with the retry policy, and records
the batch in bulk.

A contact's fate follows the CRM's answer to its own request, never the batch's: the adapter reports each
request's outcomes as they arrive, and whatever then happens to the batch (a
:class:`~crmsync_core.errors.FatalError`, a cancellation, a database error) the answered contacts are
recorded and only the unanswered ones go back to the queue, untouched. A database error is never an
attempt: writes are retried on a fresh connection, and if the worker gives up, the claim expires. A CRM
that keeps failing trips the circuit breaker: the run stops, the CRM is paused in the store for every
worker, and a later run probes it with one small batch after a growing cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from . import confirm
from .adapter import (
    Adapter,
    AdapterContext,
    AdapterSpec,
    CircuitBreaker,
    ReportedOutcomes,
    collect_outcomes,
)
from .contacts import Contact, Outcome, PermanentFailure, Skipped, Synced, TransientFailure
from .errors import (
    CircuitOpenError,
    ConfigurationError,
    FatalError,
    RateLimitExhaustedError,
    StoreError,
)
from .history import PayloadCapture, PayloadSampler
from .plugins import Registry, default_registry
from .queue import Claim, Queue, Resolution
from .ratelimit import Limiter, RateLimiter
from .report import RunReport
from .retry import RequestRetry, RetryPolicy
from .settings import SyncSettings
from .status import Event

if TYPE_CHECKING:
    from .changes import ChangeScan, DryRun, TestOne

logger = logging.getLogger("crmsync.engine")

#: longest error text kept in the processing-error column
MAX_ERROR_LENGTH = 1_000
#: what the claim heartbeat assumes of an adapter that set no request deadline (3 x httpx's 30 s)
DEFAULT_REQUEST_DEADLINE = 90.0
T = TypeVar("T")
#: how long a cancelled batch may take to record its answers and hand back the rest
SETTLE_ON_CANCEL_SECONDS = 10.0


@dataclass
class _Run:
    crm: str
    spec: AdapterSpec[Any]
    settings: SyncSettings
    policy: RetryPolicy
    adapter: Adapter
    batch_size: int
    report: RunReport
    remaining: int | None
    stop: asyncio.Event | None
    progress: Callable[[RunReport], None] | None
    context: AdapterContext
    circuit: CircuitBreaker
    #: how long database writes are retried before the claim timeout is left to hand contacts back
    database_retry_seconds: float
    #: the run's row in the history (``None``: history is off)
    run_id: int | None = None
    fatal: FatalError | None = None
    store_error: StoreError | None = None
    #: only these contacts are claimed (``Engine.test_one``)
    only: list[Any] | None = None
    #: change detection: the payload fingerprint of each claimed contact, and the claimed contacts
    #: completed without a request, with their last delivery time (see :mod:`crmsync_core.changes`)
    fingerprints: dict[Any, str] = field(default_factory=dict)
    unchanged: dict[Any, datetime] = field(default_factory=dict)


class Engine:
    """Syncs queued contacts of a :class:`~crmsync_core.queue.Queue` (a :class:`~crmsync_core.store.Store`) into CRMs.

    ``registry`` finds adapters (default: the installed ones). ``settings`` gives settings per CRM in
    code (default: each adapter's settings model read from the environment). ``transports`` routes a
    CRM's HTTP through a given ``httpx.AsyncBaseTransport`` (sandboxes, tests). ``clock`` returns the
    current aware UTC time (tests move it forward to make retries due). ``worker_name`` names this
    worker in the run history.
    """

    def __init__(
        self,
        store: Queue,
        *,
        registry: Registry | None = None,
        settings: Mapping[str, SyncSettings] | None = None,
        transports: Mapping[str, Any] | None = None,
        request_retry: RequestRetry | None = None,
        rate_limiters: Mapping[str, RateLimiter] | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
        worker_name: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry or default_registry()
        self._settings = dict(settings or {})
        self._transports = dict(transports or {})
        self._request_retry = request_retry or RequestRetry()
        self._limiters: dict[str, RateLimiter] = dict(rate_limiters or {})
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng = rng or random.Random()
        #: who runs the runs, in the run history (default: host name and process id)
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        #: CRMs whose mapped fields were checked by this engine (once per worker, or per one-shot run)
        self._fields_checked: set[str] = set()

    def now(self) -> datetime:
        """The engine's clock (aware UTC)."""
        return self._clock()

    def settings_for(self, crm: str) -> SyncSettings:
        """The CRM's settings: given in code, else read from the environment."""
        if crm not in self._settings:
            spec = self.registry.get(crm)
            try:
                self._settings[crm] = spec.settings_model()
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                    for e in exc.errors(include_input=False, include_url=False)
                )
                prefix = spec.settings_model.model_config.get("env_prefix", "")
                raise ConfigurationError(
                    f"{crm} settings ({prefix}*) are invalid: {problems}"
                ) from None
        return self._settings[crm]

    def transport_for(self, crm: str) -> Any:
        """The ``httpx`` transport given for ``crm`` (``None``: the network)."""
        return self._transports.get(crm)

    async def queue_changed(self, crm: str) -> ChangeScan:
        """Re-queue, as the system, every ``Complete`` contact of ``crm`` whose payload (what the CRM
        receives) differs from the one last delivered. Candidates are found in the database (contacts
        updated after their last delivery or check, where the table has ``updated_at``; else every
        ``Complete`` one) and compared in chunks. Raises :class:`ConfigurationError` when the adapter
        does not declare its payload."""
        from .changes import queue_changed

        return await queue_changed(self, crm)

    async def dry_run(self, crm: str, *, limit: int | None = None) -> DryRun:
        """The requests a sync of ``crm`` would send now for its due contacts (redacted), and the due
        contacts it would complete unchanged. Sends nothing and changes nothing."""
        from .changes import dry_run

        return await dry_run(self, crm, limit=limit)

    async def test_one(self, crm: str, contact_id: Any) -> TestOne:
        """Send one contact to ``crm`` now, whatever its state (queued by the user, forced), and record
        the outcome as a sync does; returns the exchanges (redacted) and the contact's new state."""
        from .changes import test_one

        return await test_one(self, crm, contact_id)

    def _limiter(self, crm: str, spec: AdapterSpec[Any], settings: SyncSettings) -> RateLimiter:
        """The CRM's budget: shared by every worker through the database where it can be, else per process."""
        limits = spec.limits_for(settings)
        shared = (
            bool(limits.buckets)
            and settings.sync_shared_rate_limit
            and self.store.shares_rate_limits
        )
        return Limiter(limits, self.store.rate_ledger() if shared else None, crm=crm)

    async def run_once(
        self,
        crm: str,
        *,
        limit: int | None = None,
        stop: asyncio.Event | None = None,
        progress: Callable[[RunReport], None] | None = None,
        only: Sequence[Any] | None = None,
        transport: Any = None,
    ) -> RunReport:
        """Sync what is due for ``crm`` now (at most ``limit`` contacts) and report what happened.

        ``only`` claims only these contacts (queued ones, due or not); ``transport`` replaces the CRM's
        ``httpx`` transport for this run (:meth:`test_one` uses both).

        Raises :class:`~crmsync_core.errors.AdapterNotInstalledError` for an unknown CRM and
        :class:`~crmsync_core.errors.ConfigurationError` when the table has no columns for it. A
        missing or refused credential does not raise: the report's ``stopped`` says what to fix and the
        contacts stay queued.
        """
        spec = self.registry.get(crm)
        self.store.layout.columns_for(crm)
        report, run_id = await self._run_once(spec, crm, limit, stop, progress, only, transport)
        if run_id is not None:
            try:
                await self.store.finish_run(run_id, report, now=self._clock())
            except StoreError as exc:
                logger.warning("%s: could not write the run's history: %s", crm, exc)
        if self.registry.hook.queue_measured.get_hookimpls():
            # Only for a plugin that wants it (metrics): one count of the CRM's queue.
            try:
                summary = await self.store.summary(crm, now=self._clock())
            except StoreError as exc:
                logger.warning("%s: could not measure the queue: %s", crm, exc)
            else:
                self._notify("queue_measured", crm=crm, summary=summary)
        return report

    def _payloads(self) -> PayloadSampler | None:
        history = self.store.history_settings
        if not history.history or history.history_payloads is PayloadCapture.OFF:
            return None
        return PayloadSampler(history, self._rng)

    def _response_hook(self, crm: str) -> Callable[[int | None, float], None] | None:
        """The ``request_finished`` hook for the adapter's HTTP client, when a plugin implements it."""
        if not self.registry.hook.request_finished.get_hookimpls():
            return None

        def finished(status_code: int | None, seconds: float) -> None:
            self._notify("request_finished", crm=crm, status_code=status_code, seconds=seconds)

        return finished

    async def _start_run(self, crm: str) -> int | None:
        # History never stops a sync: without its run row, attempts are kept without a run.
        try:
            return await self.store.start_run(crm, worker=self.worker_name, now=self._clock())
        except StoreError as exc:
            logger.warning("%s: could not keep the run in the history: %s", crm, exc)
            return None

    async def _run_once(
        self,
        spec: AdapterSpec[Any],
        crm: str,
        limit: int | None,
        stop: asyncio.Event | None,
        progress: Callable[[RunReport], None] | None,
        only: Sequence[Any] | None,
        transport: Any,
    ) -> tuple[RunReport, int | None]:
        """The run, and its row in the history. A run that never reached the CRM (bad settings, a
        paused CRM waiting for its probe) is reported but not kept: a paused CRM would add a row per
        interval, and the CLI's bad input must change nothing."""
        started = time.perf_counter()
        report = RunReport(crm=crm, started_at=self._clock())
        try:
            settings = self.settings_for(crm)
            paused = await self.store.circuit(crm)
        except (ConfigurationError, StoreError) as exc:
            return self._stopped(report, exc, started), None
        now = self._clock()
        if paused is not None and now < paused.probe_at:
            report.paused_since = paused.opened_at
            # A dead worker's claims still go back to the queue while the CRM is paused.
            with contextlib.suppress(StoreError):
                report.recovered = await self.store.release_expired(
                    crm,
                    now=now,
                    older_than=timedelta(minutes=settings.sync_claim_timeout_minutes),
                )
            if paused.paused_by_user is not None:
                # Until a user resumes it: look again after a cool-down, not at the far probe time.
                error = CircuitOpenError(
                    f"{crm} is paused by a user since {_when(paused.opened_at)} "
                    f"({paused.paused_by_user}); resume it on the status page",
                    resume_after=settings.sync_circuit_cooldown_seconds,
                )
            else:
                error = CircuitOpenError(
                    f"{crm} is paused since {_when(paused.opened_at)} after repeated connection "
                    f"errors, timeouts or 5xx; next probe at {_when(paused.probe_at)}",
                    resume_after=(paused.probe_at - now).total_seconds(),
                )
            return self._stopped(report, error, started), None
        # A paused CRM past its cool-down is probed: one small batch, and its first failure pauses it again.
        circuit = CircuitBreaker(
            1 if paused is not None else settings.sync_circuit_failures, crm=crm
        )
        try:
            limiter = self._limiters.get(crm)
            if limiter is None:
                limiter = self._limiters[crm] = self._limiter(crm, spec, settings)
            waited_before = limiter.waited_seconds
            context = AdapterContext(
                rate_limiter=limiter,
                request_retry=self._request_retry,
                transport=transport if transport is not None else self._transports.get(crm),
                logger=logging.getLogger(f"crmsync.{crm}"),
                request_deadline=settings.sync_request_deadline_seconds,
                circuit=circuit,
                max_response_bytes=settings.sync_max_response_bytes,
                on_response=self._response_hook(crm),
                payloads=self._payloads(),
            )
            adapter = spec.factory(settings, context)
        except (ConfigurationError, FatalError) as exc:
            return self._stopped(report, exc, started), None
        if crm not in self._fields_checked:
            problem = await self._check_fields(crm, spec, settings, limiter)
            if problem is not None:
                await adapter.aclose()
                return self._stopped(report, problem, started), None

        claim_timeout = settings.sync_claim_timeout_minutes * 60
        run_id = await self._start_run(crm)
        run = _Run(
            crm=crm,
            spec=spec,
            settings=settings,
            policy=settings.retry_policy(),
            adapter=adapter,
            batch_size=min(
                settings.sync_scheduler_batch_size or spec.max_batch_size, spec.max_batch_size
            ),
            report=report,
            remaining=limit,
            stop=stop,
            progress=progress,
            context=context,
            circuit=circuit,
            database_retry_seconds=(
                settings.sync_database_retry_seconds
                if settings.sync_database_retry_seconds is not None
                else claim_timeout / 2
            ),
            only=list(only) if only is not None else None,
            run_id=run_id,
        )
        try:
            try:
                report.recovered = await self.store.release_expired(
                    crm,
                    now=self._clock(),
                    older_than=timedelta(minutes=settings.sync_claim_timeout_minutes),
                )
            except StoreError as exc:
                run.store_error = exc
            if report.recovered:
                logger.warning(
                    "%s: took back %d contacts from a worker that died", crm, report.recovered
                )
            if settings.sync_confirm and run.store_error is None:
                try:
                    report.unconfirmed = await confirm.expire(
                        self.store, self.registry, crm, settings, now=self._clock(), rng=self._rng
                    )
                except StoreError as exc:
                    run.store_error = exc
            if paused is not None and run.store_error is None:
                await self._probe(run, settings.sync_circuit_probe_size)
            if run.fatal is None and run.store_error is None:
                lanes = [
                    asyncio.create_task(self._lane(run)) for _ in range(settings.sync_concurrency)
                ]
                try:
                    await asyncio.gather(*lanes)
                except BaseException:
                    for lane in lanes:
                        lane.cancel()
                    await asyncio.gather(*lanes, return_exceptions=True)
                    raise
        finally:
            await adapter.aclose()
            try:
                await limiter.release()
            except StoreError as exc:
                # Unused slots age out of the window on their own; nothing is lost but a little time.
                logger.warning("%s: could not give back unused request slots: %s", crm, exc)
            report.rate_limited_seconds = limiter.waited_seconds - waited_before
            report.duration_seconds = time.perf_counter() - started
        if circuit.opened is not None:
            await self._pause(run, circuit.opened)
        if run.fatal is not None:
            self._stopped(report, run.fatal, started)
        elif run.store_error is not None:
            self._stopped(report, run.store_error, started)
        else:
            self._notify("run_finished", crm=crm, report=report, settings=settings)
        return report, run_id

    async def _check_fields(
        self, crm: str, spec: AdapterSpec[Any], settings: SyncSettings, limiter: RateLimiter
    ) -> ConfigurationError | None:
        """The cheap part of ``crmsync check`` before the first run: warn once about each mapped field
        the account lacks (a CRM that drops unknown fields silently must not do it unnoticed), or, with
        ``{CRM}_SYNC_REQUIRE_FIELDS=true``, return the error that stops the run until they exist."""
        from .check import CheckContext, engine_preflight, missing_fields

        context = CheckContext(
            scope="fields",
            transport=self._transports.get(crm),
            request_retry=self._request_retry,
            rate_limiter=limiter,
            logger=logging.getLogger(f"crmsync.{crm}"),
        )
        results = await engine_preflight(spec, settings, context)
        prefix = str(spec.settings_model.model_config.get("env_prefix", "")).upper()
        if results is None:
            if not settings.sync_require_fields:
                self._fields_checked.add(crm)
            return None
        lacking = [r for r in results if r.field in missing_fields(results)]
        if not lacking:
            self._fields_checked.add(crm)
            return None
        what = "; ".join(f"{r.field} ({r.detail})" for r in lacking)
        names = ", ".join(str(r.field) for r in lacking)
        if settings.sync_require_fields:
            return ConfigurationError(
                f"{crm}: the account lacks mapped field(s) {names}: {what}. Run `crmsync {crm} setup` "
                f"to create them ({prefix}SYNC_REQUIRE_FIELDS=true stops the sync until they exist)"
            )
        self._fields_checked.add(crm)
        logger.warning(
            "%s: the account lacks mapped field(s) %s, so contacts are synced without them: %s. Run "
            "`crmsync %s setup` to create them, or set %sSYNC_REQUIRE_FIELDS=true to stop instead",
            crm,
            names,
            what,
            crm,
            prefix,
        )
        return None

    async def _probe(self, run: _Run, size: int) -> None:
        """Send one small batch to a paused CRM; an answer resumes it for every worker."""
        logger.warning("%s: paused CRM past its cool-down; probing with %d contacts", run.crm, size)
        saved, run.batch_size = run.batch_size, min(size, run.batch_size)
        remaining = run.remaining
        run.remaining = run.batch_size if remaining is None else min(run.batch_size, remaining)
        try:
            await self._lane(run)
        finally:
            run.batch_size = saved
            if remaining is not None:
                run.remaining = remaining - run.report.claimed
            else:
                run.remaining = None
        if run.circuit.opened is None and run.fatal is None and run.store_error is None:
            try:
                await self.store.close_circuit(run.crm)
            except StoreError as exc:
                run.store_error = exc
                return
            logger.warning("%s: the CRM answered the probe; resumed", run.crm)
            run.circuit.threshold = run.settings.sync_circuit_failures

    async def _pause(self, run: _Run, error: CircuitOpenError) -> None:
        settings = run.settings
        try:
            state = await self.store.open_circuit(
                run.crm,
                now=self._clock(),
                cooldown=settings.sync_circuit_cooldown_seconds,
                max_cooldown=settings.sync_circuit_max_cooldown_seconds,
            )
        except StoreError:
            # Not shared, but this run still stops; the next one finds out for itself.
            logger.warning("%s: could not record the pause in the database", run.crm, exc_info=True)
            error.resume_after = settings.sync_circuit_cooldown_seconds
            return
        run.report.paused_since = state.opened_at
        error.resume_after = state.cooldown_seconds
        error.args = (
            f"{error.message}; paused since {_when(state.opened_at)}, "
            f"next probe at {_when(state.probe_at)}",
        )

    def _stopped(self, report: RunReport, exc: Exception, started: float) -> RunReport:
        report.stopped = str(exc)
        report.errors_by_kind["fatal"] += 1
        if isinstance(exc, (RateLimitExhaustedError, CircuitOpenError)):
            report.resume_after = exc.resume_after
        report.duration_seconds = time.perf_counter() - started
        logger.error("%s: run stopped: %s", report.crm, report.stopped)
        self._notify(
            "run_finished", crm=report.crm, report=report, settings=self._settings.get(report.crm)
        )
        return report

    async def _lane(self, run: _Run) -> None:
        """One batch in flight at a time; several lanes run side by side."""
        while (
            run.fatal is None
            and run.store_error is None
            and not (run.stop is not None and run.stop.is_set())
        ):
            size = run.batch_size if run.remaining is None else min(run.batch_size, run.remaining)
            if size <= 0:
                return
            if run.remaining is not None:
                run.remaining -= size
            claim = await self._with_database(
                run,
                "claim contacts",
                lambda size=size: self.store.claim(  # type: ignore[misc]
                    run.crm, size, now=self._clock(), ids=run.only
                ),
            )
            if claim is None:
                return
            if run.remaining is not None:
                run.remaining += size - len(claim.contacts)
            if not claim.contacts:
                return
            run.report.claimed += len(claim.contacts)
            await self._process(run, claim)
            if run.progress is not None:
                run.progress(run.report)

    async def _process(self, run: _Run, claim: Claim) -> None:
        unchanged = await self._unchanged(run, claim)
        done = {outcome.contact_id for outcome in unchanged}
        to_send = [c for c in claim.contacts if c.id not in done]
        reported = ReportedOutcomes(claim.contacts)
        reported.add(unchanged)
        held, pushed = [claim], asyncio.Event()
        heartbeat = asyncio.create_task(self._keep_claimed(run, held, pushed, reported))
        try:
            outcomes = [
                *unchanged,
                *(
                    await collect_outcomes(run.adapter, to_send, crm=run.crm, reported=reported)
                    if to_send
                    else []
                ),
            ]
        except FatalError as exc:
            # What the CRM answered before stands; only the contacts it did not answer go back.
            run.fatal = run.fatal or exc
            run.context.halt(exc)
            outcomes = reported.outcomes()
        except StoreError as exc:
            # Infrastructure (a shared rate limit's database), not the CRM: no attempt is counted. The
            # run stops (the next one starts afresh) rather than claim the same contacts again at once.
            run.report.database_errors += 1
            run.store_error = run.store_error or exc
            logger.warning(
                "%s: database error during a push; unanswered contacts go back to the queue with no "
                "attempt counted: %s",
                run.crm,
                exc,
            )
            outcomes = reported.outcomes()
        except BaseException:
            # Cancelled (a second stop signal): record what was answered and hand back the rest, even
            # while being cancelled, within a short deadline of its own.
            reported.closed = True
            settle = asyncio.ensure_future(
                self._settle(run, held, pushed, heartbeat, reported.outcomes())
            )
            try:
                await asyncio.shield(settle)
            except asyncio.CancelledError:
                await asyncio.wait({settle}, timeout=SETTLE_ON_CANCEL_SECONDS)
            raise
        reported.closed = True
        await self._settle(run, held, pushed, heartbeat, outcomes)

    async def _unchanged(self, run: _Run, claim: Claim) -> list[Synced]:
        """Change detection: fingerprint each claimed contact's payload, and complete without a request
        those a user re-selected whose payload is the one last delivered."""
        if run.spec.payload is None:
            return []
        from .changes import payload_fingerprint

        for contact in claim.contacts:
            value = payload_fingerprint(run.spec, run.settings, contact)
            if value is not None:
                run.fingerprints[contact.id] = value
        wanted = [c.id for c in claim.contacts if c.id in run.fingerprints]
        if not wanted:
            return []
        try:
            stored = await self.store.fingerprints(run.crm, wanted)
        except StoreError as exc:
            # Not knowing what was delivered only costs requests: send them.
            logger.warning("%s: could not read fingerprints, sending: %s", run.crm, exc)
            return []
        done = []
        for contact_id, known in stored.items():
            if known.reselected and known.fingerprint == run.fingerprints.get(contact_id):
                run.unchanged[contact_id] = known.delivered_at
                done.append(Synced(contact_id))
        return done

    async def _settle(
        self,
        run: _Run,
        held: list[Claim],
        pushed: asyncio.Event,
        heartbeat: asyncio.Task[None],
        outcomes: Sequence[Outcome],
    ) -> None:
        """Record the answered contacts of a claim and hand the others back untouched."""
        pushed.set()
        await heartbeat
        claim = held[0]
        now = self._clock()
        contacts = {contact.id: contact for contact in claim.contacts}
        outcomes = [o for o in outcomes if o.contact_id in contacts]
        if outcomes:
            resolutions = [self._resolve(run, contacts[o.contact_id], o, now) for o in outcomes]
            if run.settings.sync_confirm:
                await self._expect_confirmations(run, outcomes, now)
            result = await self._with_database(
                run,
                "record results",
                lambda: self.store.record(claim, resolutions, now=now, run_id=run.run_id),
            )
            for contact_id in contacts:
                run.fingerprints.pop(contact_id, None)
                run.unchanged.pop(contact_id, None)
            if result is not None:
                run.report.stale += result.stale
                written = [r for r in resolutions if r.contact_id in result.written_ids]
                by_id = {o.contact_id: o for o in outcomes}
                for resolution in written:
                    self._count(run.report, resolution, by_id[resolution.contact_id])
                # Hooks hear only of what was written: a stale result belongs to the worker that took
                # it back.
                self._after_record(run, contacts, written)
                if run.settings.sync_confirm:
                    await self._apply_early_callbacks(run, written, now)
        answered = {o.contact_id for o in outcomes}
        unanswered = [c.id for c in claim.contacts if c.id not in answered]
        if unanswered:
            released = await self._with_database(
                run, "hand contacts back", lambda: self.store.release(claim, unanswered)
            )
            run.report.released += released or 0

    async def _with_database(
        self, run: _Run, what: str, operation: Callable[[], Awaitable[T]]
    ) -> T | None:
        """Run a store operation, retrying database errors on a fresh connection (the pool pre-pings)
        for up to ``database_retry_seconds``. ``None`` when it gave up: the run then stops, and claimed
        contacts go back to the queue when their claim expires, with no attempt counted."""
        give_up = time.monotonic() + run.database_retry_seconds
        delay = 0.05
        while True:
            try:
                return await operation()
            except StoreError as exc:
                run.report.database_errors += 1
                if time.monotonic() + delay > give_up:
                    logger.error(
                        "%s: could not %s (database error); the claim will expire and its contacts go "
                        "back to the queue with no attempt counted: %s",
                        run.crm,
                        what,
                        exc,
                    )
                    run.store_error = run.store_error or exc
                    return None
                logger.warning("%s: could not %s, retrying: %s", run.crm, what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _keep_claimed(
        self, run: _Run, held: list[Claim], pushed: asyncio.Event, reported: ReportedOutcomes
    ) -> None:
        """Renew the claim while its push goes on: a slow CRM must not look like a dead worker. A request
        past its deadline is no longer covered (a stuck worker's contacts return to the queue).

        It stops between renewals, never during one, so the claim it hands back is the one in the table.
        """
        interval = run.settings.sync_claim_timeout_minutes * 60 / 3
        deadline = run.context.request_deadline or DEFAULT_REQUEST_DEADLINE
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pushed.wait(), timeout=interval)
                return
            if reported.oldest_request_seconds() > deadline + interval:
                logger.warning(
                    "%s: a request is past its deadline; its claim is no longer renewed", run.crm
                )
                continue
            try:
                held[0] = await self.store.extend_claim(held[0], now=self._clock())
            except StoreError as exc:
                run.report.database_errors += 1
                logger.warning(
                    "%s: could not renew a claim; it may be taken back: %s", run.crm, exc
                )
            except Exception:
                logger.warning(
                    "%s: could not renew a claim; it may be taken back", run.crm, exc_info=True
                )

    async def _expect_confirmations(
        self, run: _Run, outcomes: Sequence[Outcome], now: datetime
    ) -> None:
        """Confirmed delivery: note what awaits a callback before the acceptance is written, so that no
        contact awaits without its row (a crash in between only leaves a row behind)."""
        items = [(o.contact_id, o.idempotency_key) for o in outcomes if isinstance(o, Synced)]
        by = confirm.confirm_by(run.settings, now)
        await self._with_database(
            run,
            "note deliveries awaiting confirmation",
            lambda: self.store.expect_confirmations(run.crm, items, now=now, confirm_by=by),
        )

    async def _apply_early_callbacks(
        self, run: _Run, written: Sequence[Resolution], now: datetime
    ) -> None:
        """Callbacks that came before the acceptance was written apply now."""
        ids = [r.contact_id for r in written if r.event is Event.AWAIT]
        try:
            results = await confirm.apply_early(
                self.store, self.registry, run.crm, run.settings, ids, now=now, rng=self._rng
            )
        except Exception:
            # They stay in the store; the contacts await until the timeout re-sends them.
            logger.exception(
                "%s: could not apply callbacks that came before the acceptance", run.crm
            )
            return
        run.report.awaiting -= sum(1 for r in results if r != "ignored")
        run.report.synced += results.count("confirmed")
        run.report.retrying += results.count("retrying")
        run.report.failed += results.count("failed")

    def _resolve(self, run: _Run, contact: Contact, outcome: Outcome, now: datetime) -> Resolution:
        resolution = self._event(run, contact, outcome, now)
        exchange = None if isinstance(outcome, Skipped) else outcome.exchange
        if exchange is None:
            return resolution
        return dataclasses.replace(resolution, request=exchange.request, response=exchange.response)

    def _event(self, run: _Run, contact: Contact, outcome: Outcome, now: datetime) -> Resolution:
        since = run.unchanged.get(contact.id) if isinstance(outcome, Synced) else None
        if since is not None:
            # Nothing was sent, so there is nothing to confirm either.
            from .changes import unchanged_reason

            return Resolution(
                contact.id,
                Event.SUCCEED,
                error=unchanged_reason(since),
                fingerprint=run.fingerprints.get(contact.id),
                unchanged=True,
            )
        if isinstance(outcome, Synced) and run.settings.sync_confirm:
            return Resolution(
                contact.id,
                Event.AWAIT,
                remote_id=outcome.remote_id,
                fallback_id=outcome.fallback_id,
            )
        if isinstance(outcome, Synced):
            return Resolution(
                contact.id,
                Event.SUCCEED,
                remote_id=outcome.remote_id,
                fallback_id=outcome.fallback_id,
                fingerprint=run.fingerprints.get(contact.id),
                status_code=outcome.status_code,
            )
        if isinstance(outcome, Skipped):
            return Resolution(contact.id, Event.SKIP_BY_ADAPTER, error=_clip(outcome.reason))
        attempts = contact.attempts + 1
        if isinstance(outcome, PermanentFailure):
            return Resolution(
                contact.id,
                Event.FAIL,
                error=_clip(outcome.reason),
                attempts=attempts,
                status_code=outcome.status_code,
            )
        assert isinstance(outcome, TransientFailure)
        delay = run.policy.delay_after(attempts, retry_after=outcome.retry_after, rng=self._rng)
        if delay is None:
            reason = f"{outcome.reason} (gave up after {attempts} attempts)"
            return Resolution(
                contact.id,
                Event.FAIL,
                error=_clip(reason),
                attempts=attempts,
                status_code=outcome.status_code,
            )
        return Resolution(
            contact.id,
            Event.RETRY,
            error=_clip(outcome.reason),
            attempts=attempts,
            next_attempt_at=now + delay,
            status_code=outcome.status_code,
        )

    @staticmethod
    def _count(report: RunReport, resolution: Resolution, outcome: Outcome) -> None:
        """Count one written result in the report (what was not written is not counted)."""
        if resolution.event is Event.AWAIT:
            report.awaiting += 1
        elif isinstance(outcome, Synced) and resolution.unchanged:
            report.unchanged += 1
        elif isinstance(outcome, Synced):
            report.synced += 1
        elif isinstance(outcome, Skipped):
            report.skipped += 1
            report._sample("skipped", outcome.reason)
        elif isinstance(outcome, PermanentFailure):
            report.failed += 1
            report._sample("permanent", outcome.reason)
        else:
            report._sample("transient", outcome.reason)
            if resolution.event is Event.FAIL:
                report.failed += 1
            else:
                report.retrying += 1

    def _after_record(
        self, run: _Run, contacts: Mapping[Any, Contact], resolutions: Sequence[Resolution]
    ) -> None:
        hook = self.registry.hook
        wants_synced = bool(hook.contact_synced.get_hookimpls())
        wants_failed = bool(hook.contact_failed.get_hookimpls())
        if not (wants_synced or wants_failed):
            return
        email = run.settings.sync_failure_notification_email
        for r in resolutions:
            if r.event is Event.SUCCEED and wants_synced and not r.unchanged:
                self._notify(
                    "contact_synced",
                    crm=run.crm,
                    contact=contacts[r.contact_id],
                    remote_id=r.remote_id,
                )
            elif r.event is Event.FAIL and wants_failed:
                self._notify(
                    "contact_failed",
                    crm=run.crm,
                    contact=contacts[r.contact_id],
                    reason=r.error or "",
                    notification_email=email,
                )

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        try:
            getattr(self.registry.hook, hook_name)(**kwargs)
        except Exception:
            # A broken notifier must not stop the sync or lose its results.
            logger.exception("a %s hook failed", hook_name)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_ERROR_LENGTH else reason[: MAX_ERROR_LENGTH - 1] + "…"
