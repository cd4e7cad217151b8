"""The package's public names are deliberate: this guards the list."""

from __future__ import annotations

import crmsync_brevo
from crmsync_core.plugins import Registry


def test_the_entry_point_registers_brevo() -> None:
    registry = Registry(load_entry_points=True)
    spec = registry.get("brevo")
    assert spec is crmsync_brevo.SPEC
    assert spec.capabilities()["settings_env_prefix"] == "BREVO_"
    assert spec.rate_limit is not None
    assert (spec.rate_limit.requests, spec.rate_limit.period_seconds) == (10, 1.0)
