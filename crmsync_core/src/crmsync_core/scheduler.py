"""Glue for a host's APScheduler (3.x): one sync job per configured CRM.

::

    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from crmsync_core import Engine, Layout, Store
    from crmsync_core.scheduler import schedule_sync_jobs

    store = await Store.connect(engine, Layout.scrapersky())
    await schedule_sync_jobs(scheduler, Engine(store))

Each job calls :meth:`Engine.run_once` every ``{CRM}_SYNC_SCHEDULER_INTERVAL_MINUTES``, claiming
``{CRM}_SYNC_SCHEDULER_BATCH_SIZE`` contacts per adapter call, with at most
``{CRM}_SYNC_SCHEDULER_MAX_INSTANCES`` runs of it at once. APScheduler is the host's dependency, not
crmsync's: this module imports it only to hear of the scheduler's shutdown.

On PostgreSQL the jobs are also woken on queue (:mod:`crmsync_core.wake`): a commit that queues contacts
for a CRM runs its job at once (a job already running runs again when it ends); the interval stays the
fallback. ``CRMSYNC_WAKE_ON_QUEUE=off`` (or ``wake_on_queue="off"``) turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .adapter import AdapterContext
from .errors import ConfigurationError, CrmsyncError, FatalError
from .ratelimit import Limiter
from .wake import QueueWaker

if TYPE_CHECKING:
    from .engine import Engine
    from .report import RunReport
    from .wake import Listener

logger = logging.getLogger("crmsync.scheduler")

__all__ = ["job_id", "schedule_sync_jobs"]


def job_id(crm: str) -> str:
    """The id of ``crm``'s job in the scheduler."""
    return f"crmsync_sync_{crm}"


@dataclass
class _Wake:
    """Wake on queue for one scheduler's jobs."""

    waker: QueueWaker
    crms: list[str]
    listener: Listener | None = None
    task: asyncio.Task[None] | None = None
    #: CRMs whose job is running now, and those woken meanwhile (the job runs again when it ends)
    running: set[str] = field(default_factory=set)
    rerun: set[str] = field(default_factory=set)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.listener is not None:
            self.listener.stop()


_wakes: weakref.WeakKeyDictionary[Any, _Wake] = weakref.WeakKeyDictionary()


async def schedule_sync_jobs(
    scheduler: Any,
    engine: Engine,
    crms: Iterable[str] | None = None,
    *,
    wake_on_queue: str | None = None,
) -> dict[str, Any]:
    """Add (or replace) a sync job on ``scheduler`` (an ``AsyncIOScheduler``) for each CRM in ``crms``.

    ``crms`` defaults to every CRM with an installed adapter and columns in the store's layout. A CRM
    that is not configured (its API key or URL is missing, or its settings are invalid) is not
    scheduled: one warning says what to set. Returns the scheduled jobs by CRM. ``wake_on_queue``
    (``"auto"`` or ``"off"``; default ``CRMSYNC_WAKE_ON_QUEUE``) runs a job as soon as contacts are
    queued for its CRM, on PostgreSQL.
    """
    if crms is None:
        installed = engine.registry.adapters()
        crms = [crm for crm in engine.store.layout.crms if crm in installed]
    jobs: dict[str, Any] = {}
    previous = _wakes.pop(scheduler, None)
    if previous is not None:
        previous.stop()
    wake = _Wake(QueueWaker(), [])
    for crm in crms:
        engine.store.layout.columns_for(crm)
        problem = await _configuration_problem(engine, crm)
        if problem is not None:
            logger.warning("%s sync is not scheduled: %s", crm, problem)
            continue
        settings = engine.settings_for(crm)
        if scheduler.get_job(job_id(crm)) is not None:
            # replace_existing only takes effect once the scheduler runs; replace pending jobs too
            scheduler.remove_job(job_id(crm))
        jobs[crm] = scheduler.add_job(
            _run,
            trigger="interval",
            minutes=settings.sync_scheduler_interval_minutes,
            args=(engine, crm, wake),
            id=job_id(crm),
            name=f"crmsync: sync {crm}",
            max_instances=settings.sync_scheduler_max_instances,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
        )
        logger.info(
            "%s sync scheduled every %g min (batch %s, at most %d at once)",
            crm,
            settings.sync_scheduler_interval_minutes,
            settings.sync_scheduler_batch_size or "the adapter's largest",
            settings.sync_scheduler_max_instances,
        )
    if jobs:
        wake.crms = list(jobs)
        wake.listener = engine.store.queue_listener(wake.waker, wake.crms, mode=wake_on_queue)
        if wake.listener is not None:
            wake.task = asyncio.create_task(_wake_jobs(scheduler, wake), name="crmsync-wake-jobs")
            _wakes[scheduler] = wake
            _stop_on_shutdown(scheduler, wake)
    return jobs


def _stop_on_shutdown(scheduler: Any, wake: _Wake) -> None:
    try:
        from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
    except ImportError:  # not APScheduler: stopped by the store's close()
        return
    with contextlib.suppress(AttributeError):
        scheduler.add_listener(lambda _event: wake.stop(), EVENT_SCHEDULER_SHUTDOWN)


async def _wake_jobs(scheduler: Any, wake: _Wake) -> None:
    """Run a CRM's job now when contacts are queued for it."""
    while True:
        for crm in await wake.waker.wait(wake.crms, None):
            wake.waker.clear(crm)
            if crm in wake.running:
                wake.rerun.add(crm)
                continue
            job = scheduler.get_job(job_id(crm))
            if job is None or job.next_run_time is None:  # removed or paused by the host
                continue
            try:
                job.modify(next_run_time=datetime.now(UTC))
            except Exception:
                logger.warning("%s: could not run the sync job early", crm, exc_info=True)


async def _configuration_problem(engine: Engine, crm: str) -> str | None:
    """Why ``crm`` cannot run, found by building its adapter the way a run does; ``None`` when it can."""
    try:
        spec = engine.registry.get(crm)
        settings = engine.settings_for(crm)
        adapter = spec.factory(settings, AdapterContext(rate_limiter=Limiter(None)))
    except (ConfigurationError, FatalError) as exc:
        return str(exc)
    await adapter.aclose()
    return None


async def _run(engine: Engine, crm: str, wake: _Wake | None = None) -> None:
    while True:
        if wake is not None:
            wake.running.add(crm)
            wake.rerun.discard(crm)
        try:
            report = await engine.run_once(crm)
        except CrmsyncError as exc:
            # The database is down or the table changed: say so without a traceback every interval.
            logger.error("%s sync failed: %s", crm, exc)
            return
        finally:
            if wake is not None:
                wake.running.discard(crm)
        _log_report(crm, report)
        # Woken while running: what was queued after the run's last claim waits for no interval.
        if wake is None or crm not in wake.rerun or report.resume_after is not None:
            return


def _log_report(crm: str, report: RunReport) -> None:
    if report.claimed or report.recovered or report.stopped:
        logger.info(
            "%s sync: %d claimed, %d synced, %d retrying, %d failed, %d skipped in %.1fs",
            crm,
            report.claimed,
            report.synced,
            report.retrying,
            report.failed,
            report.skipped,
            report.duration_seconds,
        )
