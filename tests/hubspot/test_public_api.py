"""The public names of crmsync_hubspot: a deliberate, small surface."""

from __future__ import annotations

import crmsync_hubspot
from crmsync_core.plugins import Registry
from crmsync_hubspot import plugin


def test_the_plugin_registers_the_adapter_and_only_hooks() -> None:
    registry = Registry(load_entry_points=False, plugins=[plugin])
    assert registry.get("hubspot") is crmsync_hubspot.SPEC
    assert registry.failures() == []
    [info] = registry.plugins()
    assert info.hooks == ("register_adapters", "register_commands")


def test_the_entry_point_finds_the_adapter() -> None:
    registry = Registry()
    assert registry.get("hubspot") is crmsync_hubspot.SPEC
