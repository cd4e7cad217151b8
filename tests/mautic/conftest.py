"""Fixtures for the Mautic adapter's tests: a fake Mautic and adapters pointed at it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr

from crmsync_core.adapter import AdapterContext
from crmsync_mautic import FakeMautic, MauticAdapter, MauticSettings
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

BASE_URL = "https://mautic.example.com"


@pytest.fixture(autouse=True)
def _no_mautic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read MAUTIC_* variables: a developer's own must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("MAUTIC_"):
            monkeypatch.delenv(name)


class Clock:
    """Monotonic seconds that a test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeMautic:
    return FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock)


def _settings(fake: FakeMautic, mode: str = "oauth2", **overrides: Any) -> MauticSettings:
    if mode == "oauth2":
        values: dict[str, Any] = {
            "client_id": fake.client_id,
            "client_secret": SecretStr(fake.client_secret),
        }
    else:
        values = {"username": fake.username, "password": SecretStr(fake.password)}
    return MauticSettings(**{"base_url": BASE_URL, **values, **overrides})


SettingsFor = Callable[..., MauticSettings]


@pytest.fixture
def settings_for(fake: FakeMautic) -> SettingsFor:
    """``settings_for("oauth2" | "basic", **overrides)``: settings that sign in to ``fake``."""
    return lambda mode="oauth2", **overrides: _settings(fake, mode, **overrides)


MakeAdapter = Callable[..., MauticAdapter]


@pytest.fixture
async def make_adapter(fake: FakeMautic, clock: Clock) -> AsyncIterator[MakeAdapter]:
    """``make_adapter(settings=None, transport=None, context=None)``: OAuth 2 against ``fake`` by
    default, on the test's clock; closed after the test."""
    made: list[MauticAdapter] = []

    def make(
        settings: MauticSettings | None = None,
        *,
        transport: Any = None,
        context: AdapterContext | None = None,
    ) -> MauticAdapter:
        context = context or AdapterContext.for_testing(transport or fake.transport())
        adapter = MauticAdapter(settings or _settings(fake), context, clock=clock)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.aclose()
