"""Fixtures for the n8n adapter's tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crmsync_core.adapter import AdapterContext
from crmsync_n8n import N8nAdapter, N8nSettings

WEBHOOK_URL = "https://n8n.example.com/webhook/scrapersky-contacts"
NOW = datetime(2026, 11, 22, 15, 4, 5, 123456, tzinfo=UTC)

MakeAdapter = Callable[..., N8nAdapter]


@pytest.fixture(autouse=True)
def _no_n8n_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read N8N_* variables: a developer's own must not leak into the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("N8N_"):
            monkeypatch.delenv(name)


@pytest.fixture
def now() -> datetime:
    """What the adapters' clock says (``make_adapter``)."""
    return NOW


@pytest.fixture
def webhook_url() -> str:
    """The production URL ``make_adapter`` posts to."""
    return WEBHOOK_URL


@pytest.fixture
def make_adapter() -> MakeAdapter:
    """``make_adapter(transport, **settings)``: an adapter at ``webhook_url`` whose clock says ``now``."""

    def make(
        transport: httpx.AsyncBaseTransport,
        *,
        clock: Callable[[], datetime] = lambda: NOW,
        **settings: Any,
    ) -> N8nAdapter:
        settings.setdefault("webhook_url", WEBHOOK_URL)
        return N8nAdapter(
            N8nSettings(**settings), AdapterContext.for_testing(transport), clock=clock
        )

    return make
