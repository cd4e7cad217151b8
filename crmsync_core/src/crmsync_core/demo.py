"""``crmsync demo``: a sync a newcomer can watch, with no accounts and no network.

It seeds a contacts table with realistic contacts (some without e-mail, some with invalid or duplicate
e-mails, unicode names), queues them for every installed adapter, and drains the queues against each
adapter's in-process sandbox (the stateful fake its package ships), which injects transient failures and
enforces the CRM's rate limit. Without any adapter package, the core's sandbox adapter stands in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .adapter import AdapterSpec, SandboxOptions
from .engine import Engine
from .hookspecs import hookimpl
from .layout import Layout
from .plugins import Registry, default_registry
from .queue import StatusSummary
from .ratelimit import RateLimit
from .report import RunReport
from .retry import RequestRetry
from .settings import SyncSettings
from .status import SyncStatus
from .store import Store
from .testing import contact_rows, sandbox_adapter_spec

DEMO_PROXY_LIMIT = RateLimit(500, 1.0)


@dataclass
class DemoResult:
    crm: str
    report: RunReport
    summary: StatusSummary
    examples: list[str]


class _SandboxPlugin:
    def __init__(self, spec: AdapterSpec[Any]) -> None:
        self.spec = spec

    @hookimpl
    def register_adapters(self, register: Callable[[AdapterSpec[Any]], None]) -> None:
        register(self.spec)


def demo_registry(registry: Registry | None = None) -> tuple[Registry, list[str]]:
    """The installed adapters that ship a sandbox; the core's sandbox adapter when there are none."""
    registry = registry or default_registry()
    crms = [name for name, spec in sorted(registry.adapters().items()) if spec.sandbox is not None]
    if crms:
        return registry, crms
    fallback = Registry(load_entry_points=False, plugins=[_SandboxPlugin(sandbox_adapter_spec())])
    return fallback, ["sandbox"]


async def run_demo(
    store: Store,
    registry: Registry,
    crms: list[str],
    *,
    contacts: int = 3_000,
    failure_rate: float = 0.05,
    seed: int = 2026,
    on_report: Callable[[RunReport], None] | None = None,
) -> list[DemoResult]:
    """Seed ``store``, queue everything for ``crms`` and sync it against their sandboxes."""
    rows = list(
        contact_rows(
            contacts,
            seed=seed,
            missing_email_share=0.03,
            invalid_email_share=0.03,
            duplicate_email_share=0.03,
        )
    )
    await store.add_contacts(rows)
    ids = [row["id"] for row in rows]

    settings: dict[str, SyncSettings] = {}
    transports: dict[str, Any] = {}
    for crm in crms:
        spec = registry.get(crm)
        # The sandbox enforces the CRM's own limit; one without a limit (n8n) sits behind a proxy
        # that throttles, so that every demo shows rate limits being waited out.
        limit = spec.rate_limit or DEMO_PROXY_LIMIT
        sandbox = spec.make_sandbox(
            SandboxOptions(failure_rate=failure_rate, rate_limit=limit, seed=seed)
        )
        # Retries are due at once so the demo shows them finish; a real deployment waits minutes.
        settings[crm] = sandbox.settings.model_copy(
            update={"sync_retry_delay_minutes": 0.0, "sync_retry_jitter": 0.0}
        )
        if sandbox.transport is not None:
            transports[crm] = sandbox.transport
        await store.queue(crm, ids)

    engine = Engine(
        store,
        registry=registry,
        settings=settings,
        transports=transports,
        # One try per request: injected failures then show up as transient failures retried later.
        request_retry=RequestRetry(
            attempts=1, initial_wait=0.0, max_wait=0.0, max_rate_limit_wait=30
        ),
        rng=random.Random(seed),
    )
    results = []
    for crm in crms:
        report = await engine.run_once(crm, progress=on_report)
        summary = await store.summary(crm)
        states = await store.states(crm, ids)
        examples = _examples(report, [(s.sync_status, s.error) for s in states.values() if s.error])
        results.append(DemoResult(crm, report, summary, examples))
    return results


def _examples(report: RunReport, errors: list[tuple[SyncStatus, str]]) -> list[str]:
    """A few reasons of each kind: skipped, failed for good, and retried."""
    examples: list[str] = []
    for status in (SyncStatus.SKIPPED, SyncStatus.ERROR):
        reasons = sorted({reason for s, reason in errors if s is status}, key=lambda r: (len(r), r))
        examples += [f"{status.value}: {reason}" for reason in _distinct_shapes(reasons)[:2]]
    examples += [f"retried: {reason}" for reason in report.sample_errors.get("transient", [])[:2]]
    return examples


def _distinct_shapes(reasons: list[str]) -> list[str]:
    # "invalid e-mail address 'x'" a hundred times over says less than one of each kind of reason.
    seen: set[str] = set()
    chosen = []
    for reason in reasons:
        shape = reason.split("'")[0]
        if shape not in seen:
            seen.add(shape)
            chosen.append(reason)
    return chosen


def demo_layout(registry: Registry, crms: list[str]) -> Layout:
    return Layout.default([registry.get(crm) for crm in crms])
