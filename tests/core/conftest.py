"""Core fixtures: a store on each database, a sandbox CRM, a clock the tests move."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from crmsync_core import Engine, Layout, Registry, Store, hookimpl
from crmsync_core.adapter import AdapterSpec
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import MovableClock, SandboxCrm, SandboxSettings, sandbox_adapter_spec


class Clock(MovableClock):
    def __init__(self) -> None:
        super().__init__(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))


class AdapterPlugin:
    """Registers the given specs, as an installed adapter package would."""

    def __init__(self, *specs: AdapterSpec[Any]) -> None:
        self.specs = specs

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        for spec in self.specs:
            register(spec)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def crm() -> SandboxCrm:
    return SandboxCrm()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(
        database_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    yield store
    await store.close()


def make_engine(store: Store, crm: SandboxCrm, clock: Clock, **settings: Any) -> Engine:
    specs = [sandbox_adapter_spec(crm), sandbox_adapter_spec(SandboxCrm(), name="other")]
    values = {"sync_retry_jitter": 0.0, **settings}
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(*specs)]),
        settings={"sandbox": SandboxSettings(**values), "other": SandboxSettings(**values)},
        request_retry=NO_WAIT,
        clock=clock,
    )


def engine_with_adapter(
    store: Store, clock: Clock, factory: Any, *plugins: object, **settings: Any
) -> Engine:
    """An engine whose "sandbox" CRM is served by ``factory`` (an adapter written for one test)."""
    spec = AdapterSpec(
        name="sandbox",
        settings_model=SandboxSettings,
        factory=factory,
        max_batch_size=10,
        rate_limit=None,
        partial_success=False,
    )
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(spec), *plugins]),
        settings={"sandbox": SandboxSettings(**settings)},
        clock=clock,
        request_retry=NO_WAIT,
    )


def rows(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [
        {"id": uuid.uuid4(), "email": f"person{n}@example.com", "name": f"Person {n}", **overrides}
        for n in range(count)
    ]
