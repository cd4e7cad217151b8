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
crmsync's: this module never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .adapter import AdapterContext
from .errors import ConfigurationError, CrmsyncError, FatalError
from .ratelimit import Limiter

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger("crmsync.scheduler")

__all__ = ["job_id", "schedule_sync_jobs"]


def job_id(crm: str) -> str:
    """The id of ``crm``'s job in the scheduler."""
    return f"crmsync_sync_{crm}"


async def schedule_sync_jobs(
    scheduler: Any, engine: Engine, crms: Iterable[str] | None = None, *, changed: bool = False
) -> dict[str, Any]:
    """Add (or replace) a sync job on ``scheduler`` (an ``AsyncIOScheduler``) for each CRM in ``crms``.

    With ``changed=True`` each run first re-queues the ``Complete`` contacts whose payload changed since
    their delivery (:meth:`Engine.queue_changed`, for adapters that declare their payload), so that the
    CRM follows the table.

    ``crms`` defaults to every CRM with an installed adapter and columns in the store's layout. A CRM
    that is not configured (its API key or URL is missing, or its settings are invalid) is not
    scheduled: one warning says what to set. Returns the scheduled jobs by CRM.
    """
    if crms is None:
        installed = engine.registry.adapters()
        crms = [crm for crm in engine.store.layout.crms if crm in installed]
    jobs: dict[str, Any] = {}
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
            args=(engine, crm, changed),
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
    return jobs


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


async def _run(engine: Engine, crm: str, changed: bool = False) -> None:
    try:
        if changed and engine.registry.get(crm).payload is not None:
            scan = await engine.queue_changed(crm)
            if scan.requeued:
                logger.info("%s sync: %d changed contacts re-queued", crm, scan.requeued)
        report = await engine.run_once(crm)
    except CrmsyncError as exc:
        # The database is down or the table changed: say so without a traceback every interval.
        logger.error("%s sync failed: %s", crm, exc)
        return
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
