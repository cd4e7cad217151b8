"""What users import, and how crmsync finds the adapter."""

from __future__ import annotations

import importlib.metadata

import crmsync_n8n
from crmsync_core.plugins import Registry
from crmsync_n8n import SPEC, N8nSettings, plugin


def test_the_plugin_registers_the_spec() -> None:
    registry = Registry(load_entry_points=False, plugins=[plugin])

    assert registry.get("n8n") is SPEC
    assert not registry.failures()


def test_entry_point_points_at_the_plugin_module() -> None:
    (entry_point,) = [
        ep for ep in importlib.metadata.entry_points(group="crmsync") if ep.name == "n8n"
    ]
    assert entry_point.value == "crmsync_n8n.plugin"


def test_capabilities_match_scraperskys_columns_and_settings() -> None:
    manifest = SPEC.capabilities()

    assert manifest["remote_id_column"] == "n8n_workflow_id"
    assert manifest["settings_env_prefix"] == "N8N_"
    assert manifest["rate_limit"] is None
    assert manifest["partial_success"] is True
    assert SPEC.settings_model is N8nSettings
    assert crmsync_n8n.IDEMPOTENCY_HEADER == "Idempotency-Key"
