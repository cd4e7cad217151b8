"""Metrics: the hooks that feed them, and OpenTelemetry instruments read back after a run."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from crmsync_core import Registry, Store, hookimpl
from crmsync_core.engine import Engine
from crmsync_core.metrics import Metrics, enable_metrics, metrics_available
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


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every instrument's data points as (attributes, value): a sum or gauge value, or a histogram's
    (count, sum)."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = (
                        (point.count, point.sum)
                        if isinstance(point, HistogramDataPoint)
                        else point.value
                    )
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


async def test_the_instruments_after_a_run(store: Store, clock: Clock) -> None:
    crm = SandboxCrm(failure_rate=0.0)
    await queue(store, rows(20), clock)
    await queue(store, rows(3, email="someone@rejected.invalid"), clock)
    await queue(store, rows(2, email="not-an-email"), clock)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(meter_provider=provider)
    assert metrics.enabled and metrics_available()

    report = await engine(store, crm, clock, metrics).run_once("sandbox")
    assert (report.synced, report.failed, report.skipped) == (20, 3, 2)

    found = points(reader)
    contacts = {(a["crm"], a["outcome"], a.get("kind")): v for a, v in found["crmsync.contacts"]}
    assert contacts == {
        ("sandbox", "synced", None): 20,
        ("sandbox", "failed", "permanent"): 3,
        ("sandbox", "skipped", None): 2,
    }
    assert found["crmsync.runs"] == [({"crm": "sandbox", "stopped": False}, 1)]
    ((attributes, (count, total)),) = found["crmsync.request.duration"]
    assert attributes == {"crm": "sandbox", "status_code": 200}
    assert count == 3, "one simulated request per batch of 10"
    assert total >= 0
    depth = {a["status"]: v for a, v in found["crmsync.queue.depth"]}
    assert (depth["Complete"], depth["Error"], depth["Skipped"], depth["Queued"]) == (20, 3, 2, 0)
    assert found["crmsync.queue.due"] == [({"crm": "sandbox"}, 0)]
    assert found["crmsync.circuit.open"] == [({"crm": "sandbox"}, 0)]
    assert "crmsync.rate_limited.duration" not in found, "no request waited for the rate limit"
    provider.shutdown()


async def test_a_paused_crm_shows_in_the_circuit_gauge_and_a_stopped_run(
    store: Store, clock: Clock
) -> None:
    crm = SandboxCrm()
    await queue(store, rows(2), clock)
    await store.open_circuit("sandbox", now=clock(), cooldown=60, max_cooldown=60)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    report = await engine(store, crm, clock, Metrics(meter_provider=provider)).run_once("sandbox")
    assert report.paused_since is not None
    found = points(reader)
    assert found["crmsync.circuit.open"] == [({"crm": "sandbox"}, 1)]
    assert found["crmsync.runs"] == [({"crm": "sandbox", "stopped": True}, 1)]
    assert found["crmsync.queue.due"] == [({"crm": "sandbox"}, 2)]
    provider.shutdown()


def test_enable_metrics_registers_the_plugin_with_the_registry() -> None:
    registry = Registry(load_entry_points=False)
    metrics = enable_metrics(MeterProvider(), registry=registry)
    assert registry.pm.is_registered(metrics)
