"""Metrics: the hooks that feed them, and OpenTelemetry instruments read back after a run."""

from __future__ import annotations

from typing import Any

from crmsync_core import Registry, Store, hookimpl
from crmsync_core.engine import Engine
from crmsync_core.queue import StatusSummary
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import SyncStatus
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec

from .conftest import AdapterPlugin, Clock, rows


class Measured:
    def __init__(self) -> None:
        self.requests: list[tuple[str, int | None, float]] = []
        self.queues: list[tuple[str, StatusSummary]] = []

    @hookimpl
    def request_finished(self, crm: str, status_code: int | None, seconds: float) -> None:
        self.requests.append((crm, status_code, seconds))

    @hookimpl
    def queue_measured(self, crm: str, summary: StatusSummary) -> None:
        self.queues.append((crm, summary))


def engine(store: Store, crm: SandboxCrm, clock: Clock, *plugins: object) -> Engine:
    return Engine(
        store,
        registry=Registry(
            load_entry_points=False,
            plugins=[AdapterPlugin(sandbox_adapter_spec(crm)), *plugins],
        ),
        settings={"sandbox": SandboxSettings(sync_scheduler_batch_size=10, sync_concurrency=1)},
        request_retry=NO_WAIT,
        clock=clock,
    )


async def queue(store: Store, people: list[dict[str, Any]], clock: Clock) -> None:
    await store.add_contacts(people)
    await store.queue("sandbox", [p["id"] for p in people], now=clock())


async def test_request_and_queue_hooks_report_each_request_and_the_queue_after_a_run(
    store: Store, clock: Clock
) -> None:
    crm = SandboxCrm()
    await queue(store, rows(25), clock)
    measured = Measured()
    report = await engine(store, crm, clock, measured).run_once("sandbox", limit=20)
    assert report.synced == 20
    assert [(c, s) for c, s, _ in measured.requests] == [("sandbox", 200)] * 2
    assert all(seconds >= 0 for _, _, seconds in measured.requests)
    ((name, summary),) = measured.queues
    assert name == "sandbox"
    assert (summary.total, summary.due) == (25, 5)
    assert summary.counts[SyncStatus.COMPLETE] == 20
