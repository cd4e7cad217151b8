"""The names crmsync_mautic promises, and how crmsync finds it."""

from __future__ import annotations

import importlib.metadata

import crmsync_mautic
import crmsync_mautic.plugin
from crmsync_core.plugins import Registry


def test_plugin_module_holds_only_hook_implementations() -> None:
    hooks = [
        name
        for name, value in vars(crmsync_mautic.plugin).items()
        if callable(value) and getattr(value, "crmsync_impl", None) is not None
    ]
    assert hooks == ["register_adapters", "register_commands"]


def test_registry_finds_the_adapter_through_the_plugin() -> None:
    registry = Registry(load_entry_points=False, plugins=[crmsync_mautic.plugin])
    spec = registry.get("mautic")
    assert spec is crmsync_mautic.SPEC
    assert spec.capabilities() == {
        "name": "mautic",
        "max_batch_size": 200,
        "rate_limit": None,
        "partial_success": True,
        "remote_id_column": "mautic_contact_id",
        "settings_env_prefix": "MAUTIC_",
        "sandbox": True,
        "check": True,
    }


def test_installed_distribution_declares_the_entry_point() -> None:
    points = importlib.metadata.entry_points(group="crmsync", name="mautic")
    assert [p.value for p in points] == ["crmsync_mautic.plugin"]
