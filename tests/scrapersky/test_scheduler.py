"""APScheduler glue: one job per configured CRM, with the CRM's interval, batch size and instances."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from crmsync_core import Engine, Store, hookimpl
from crmsync_core.report import RunReport
from crmsync_core.scheduler import job_id, schedule_sync_jobs
from crmsync_core.testing import SandboxCrm

pytestmark = pytest.mark.postgres


@pytest.fixture
async def scheduler() -> AsyncIterator[AsyncIOScheduler]:
    scheduler = AsyncIOScheduler()
    yield scheduler
    if scheduler.running:
        scheduler.shutdown(wait=False)


async def test_each_crm_gets_a_job_with_its_own_settings(
    store: Store,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    sandbox_settings: Callable[..., Any],
    scheduler: AsyncIOScheduler,
) -> None:
    engine = Engine(
        store,
        registry=make_registry(crms),
        settings={
            "brevo": sandbox_settings(
                sync_scheduler_interval_minutes=5,
                sync_scheduler_batch_size=10,
                sync_scheduler_max_instances=1,
            ),
            "hubspot": sandbox_settings(
                sync_scheduler_interval_minutes=0.5, sync_scheduler_max_instances=3
            ),
            "mautic": sandbox_settings(),
            "n8n": sandbox_settings(),
        },
    )

    jobs = await schedule_sync_jobs(scheduler, engine)

    assert sorted(jobs) == ["brevo", "hubspot", "mautic", "n8n"]
    brevo, hubspot = scheduler.get_job(job_id("brevo")), scheduler.get_job(job_id("hubspot"))
    assert isinstance(brevo.trigger, IntervalTrigger)
    assert brevo.trigger.interval.total_seconds() == 300
    assert hubspot.trigger.interval.total_seconds() == 30
    assert (brevo.max_instances, hubspot.max_instances) == (1, 3)


async def test_settings_from_the_environment_are_honoured(
    store: Store,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    scheduler: AsyncIOScheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox adapter reads SANDBOX_*; a real adapter reads BREVO_*, HUBSPOT_*, ...
    monkeypatch.setenv("SANDBOX_SYNC_SCHEDULER_INTERVAL_MINUTES", "2")
    monkeypatch.setenv("SANDBOX_SYNC_SCHEDULER_MAX_INSTANCES", "2")
    monkeypatch.setenv("SANDBOX_SYNC_SCHEDULER_BATCH_SIZE", "7")
    engine = Engine(store, registry=make_registry({"brevo": crms["brevo"]}))

    await schedule_sync_jobs(scheduler, engine)

    job = scheduler.get_job(job_id("brevo"))
    assert job.trigger.interval.total_seconds() == 120
    assert job.max_instances == 2
    assert engine.settings_for("brevo").sync_scheduler_batch_size == 7


async def test_a_crm_without_its_api_key_is_not_scheduled_and_says_so_once(
    store: Store,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    sandbox_settings: Callable[..., Any],
    scheduler: AsyncIOScheduler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = Engine(
        store,
        registry=make_registry(crms, needs_key=["hubspot"]),
        settings={
            crm: sandbox_settings(api_key=None if crm == "hubspot" else "sandbox-secret-key")
            for crm in crms
        },
    )

    with caplog.at_level(logging.WARNING, logger="crmsync.scheduler"):
        jobs = await schedule_sync_jobs(scheduler, engine)

    assert "hubspot" not in jobs
    assert scheduler.get_job(job_id("hubspot")) is None
    assert scheduler.get_job(job_id("brevo")) is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["hubspot sync is not scheduled: HUBSPOT_API_KEY is not set"]


async def test_scheduling_twice_replaces_the_jobs(
    store: Store,
    registry: Any,
    sandbox_settings: Callable[..., Any],
    scheduler: AsyncIOScheduler,
) -> None:
    engine = Engine(
        store,
        registry=registry,
        settings={crm: sandbox_settings() for crm in ("brevo", "hubspot", "mautic", "n8n")},
    )

    await schedule_sync_jobs(scheduler, engine, ["brevo"])
    await schedule_sync_jobs(scheduler, engine, ["brevo"])

    assert [job.id for job in scheduler.get_jobs()] == [job_id("brevo")]


async def test_a_scheduled_job_syncs_the_due_contacts(
    db: Any,
    store: Store,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    sandbox_settings: Callable[..., Any],
    scheduler: AsyncIOScheduler,
    insert: Callable[..., Any],
    fetch: Callable[..., Any],
) -> None:
    finished: asyncio.Queue[RunReport] = asyncio.Queue()

    class Observer:
        @hookimpl
        def run_finished(self, crm: str, report: RunReport) -> None:
            finished.put_nowait(report)

    registry = make_registry({"brevo": crms["brevo"]})
    registry.register(Observer())
    engine = Engine(
        store, registry=registry, settings={"brevo": sandbox_settings(sync_scheduler_batch_size=2)}
    )
    ids = [uuid.uuid4() for _ in range(5)]
    await insert(db, ids)
    await store.queue("brevo", ids)
    await schedule_sync_jobs(scheduler, engine)
    scheduler.start()

    scheduler.get_job(job_id("brevo")).modify(next_run_time=datetime.now(UTC))
    report = await asyncio.wait_for(finished.get(), timeout=30)

    assert report.synced == 5
    assert crms["brevo"].batch_sizes == [2, 2, 1], "claims of SYNC_SCHEDULER_BATCH_SIZE contacts"
    rows = await fetch(db, ids)
    assert {row["brevo_sync_status"] for row in rows.values()} == {"Complete"}
