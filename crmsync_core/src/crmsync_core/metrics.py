"""Metrics through OpenTelemetry's API (``pip install 'crmsync-core[metrics]'``).

:class:`Metrics` is a plugin: its hooks (``run_finished``, ``request_finished``, ``queue_measured``) feed
the instruments below, so the engine pays nothing for metrics unless they are enabled. The host picks the
exporter (Prometheus, OTLP) by configuring OpenTelemetry's SDK; without the SDK the API's meter is a
no-op, and without the ``metrics`` extra (no ``opentelemetry-api``) :class:`Metrics` records nothing.

=================================  ==========  ==============================================================
instrument                         kind        attributes
=================================  ==========  ==============================================================
``crmsync.contacts``               counter     ``crm``, ``outcome`` (synced, failed, skipped, retrying),
                                               ``kind`` on failed (permanent, transient)
``crmsync.runs``                   counter     ``crm``, ``stopped`` (true when a fatal error ended the run)
``crmsync.request.duration``       histogram   ``crm``, ``status_code`` (0: timeout or connection error), s
``crmsync.rate_limited.duration``  counter     ``crm``: seconds requests waited for the rate limit
``crmsync.queue.depth``            gauge       ``crm``, ``status``: contacts per sync status
``crmsync.queue.due``              gauge       ``crm``: contacts due now
``crmsync.circuit.open``           gauge       ``crm``: 1 while the circuit breaker pauses the CRM, else 0
=================================  ==========  ==============================================================
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .plugins import Registry
    from .queue import StatusSummary
    from .report import RunReport

_otel: Any
try:  # the optional extra
    from opentelemetry import metrics as _otel
except ImportError:  # pragma: no cover - exercised only without the extra
    _otel = None

__all__ = ["Metrics", "enable_metrics", "metrics_available"]

METER_NAME = "crmsync"


def metrics_available() -> bool:
    """Whether OpenTelemetry's API is installed (the ``metrics`` extra)."""
    return _otel is not None


class _Gauge:
    """The last value per attribute set, reported by an observable gauge (works with every API version
    that has observable gauges, unlike the newer synchronous gauge)."""

    def __init__(self) -> None:
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()  # the SDK's reader may collect from another thread

    def set(self, value: float, attributes: dict[str, str]) -> None:
        with self._lock:
            self._values[tuple(sorted(attributes.items()))] = value

    def observe(self, options: Any) -> Iterable[Any]:
        assert _otel is not None
        with self._lock:
            values = list(self._values.items())
        return [_otel.Observation(value, dict(key)) for key, value in values]


class Metrics:
    """crmsync's instruments, fed by its hooks. Register once at start-up::

        from crmsync_core.metrics import enable_metrics

        enable_metrics()  # after configuring OpenTelemetry's MeterProvider

    ``meter_provider`` defaults to OpenTelemetry's global provider.
    """

    def __init__(self, meter_provider: Any = None) -> None:
        self.enabled = _otel is not None
        self._depth = _Gauge()
        self._due = _Gauge()
        self._circuit = _Gauge()
        if _otel is None:
            return
        from importlib.metadata import PackageNotFoundError, version

        try:
            release: str | None = version("crmsync-core")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree
            release = None
        provider = meter_provider or _otel.get_meter_provider()
        meter = provider.get_meter(METER_NAME, release)
        self._contacts = meter.create_counter(
            "crmsync.contacts",
            unit="{contact}",
            description="Contacts whose outcome was recorded, per CRM and outcome",
        )
        self._runs = meter.create_counter(
            "crmsync.runs",
            unit="{run}",
            description="Runs per CRM, and whether a fatal error stopped them",
        )
        self._request = meter.create_histogram(
            "crmsync.request.duration",
            unit="s",
            description="HTTP exchanges with a CRM, per status code (0: no answer)",
        )
        self._rate_limited = meter.create_counter(
            "crmsync.rate_limited.duration",
            unit="s",
            description="Time requests waited for a CRM's rate limit",
        )
        meter.create_observable_gauge(
            "crmsync.queue.depth",
            callbacks=[self._depth.observe],
            unit="{contact}",
            description="Contacts per sync status after the CRM's last run",
        )
        meter.create_observable_gauge(
            "crmsync.queue.due",
            callbacks=[self._due.observe],
            unit="{contact}",
            description="Contacts due now after the CRM's last run",
        )
        meter.create_observable_gauge(
            "crmsync.circuit.open",
            callbacks=[self._circuit.observe],
            description="1 while the circuit breaker pauses the CRM, else 0",
        )

    @hookimpl
    def run_finished(self, crm: str, report: RunReport) -> None:
        if not self.enabled:
            return
        permanent = min(report.errors_by_kind.get("permanent", 0), report.failed)
        for outcome, count, extra in (
            ("synced", report.synced, {}),
            ("skipped", report.skipped, {}),
            ("retrying", report.retrying, {}),
            ("failed", permanent, {"kind": "permanent"}),
            ("failed", report.failed - permanent, {"kind": "transient"}),
        ):
            if count:
                self._contacts.add(count, {"crm": crm, "outcome": outcome, **extra})
        self._runs.add(1, {"crm": crm, "stopped": report.stopped is not None})
        if report.rate_limited_seconds:
            self._rate_limited.add(report.rate_limited_seconds, {"crm": crm})
        self._circuit.set(1 if report.paused_since is not None else 0, {"crm": crm})

    @hookimpl
    def request_finished(self, crm: str, status_code: int | None, seconds: float) -> None:
        if self.enabled:
            self._request.record(seconds, {"crm": crm, "status_code": status_code or 0})

    @hookimpl
    def queue_measured(self, crm: str, summary: StatusSummary) -> None:
        for status, count in summary.counts.items():
            self._depth.set(count, {"crm": crm, "status": status.value})
        self._due.set(summary.due, {"crm": crm})
        self._circuit.set(1 if summary.paused_since is not None else 0, {"crm": crm})


def enable_metrics(meter_provider: Any = None, registry: Registry | None = None) -> Metrics:
    """Register :class:`Metrics` with ``registry`` (default: crmsync's default registry); returns it.

    Call it once, after configuring OpenTelemetry's SDK (the exporter is the host's choice). Without the
    ``metrics`` extra it registers a plugin that records nothing.
    """
    from .plugins import default_registry

    metrics = Metrics(meter_provider)
    (registry or default_registry()).register(metrics, name="crmsync-metrics")
    return metrics
