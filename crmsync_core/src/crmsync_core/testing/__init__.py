"""Helpers for testing crmsync and its adapters without a network.

* :func:`sandbox_adapter_spec` / :class:`SandboxCrm`: an in-memory CRM adapter.
* :func:`contact_rows`: realistic contact rows (unicode names, bad addresses, duplicates).
* :class:`MovableClock`: an engine clock that tests move forward to make retries due.
* :mod:`crmsync_core.testing.contract`: the adapter contract test kit (needs pytest).
* :mod:`crmsync_core.testing.fakecrm`: :class:`~crmsync_core.testing.fakecrm.FakeCrm`, the base of a fake
  CRM (request log, scripted and seeded failures, the vendor's rate windows, loopback serving).
"""

from .clock import MovableClock
from .data import contact_rows
from .sandbox import SandboxAdapter, SandboxCrm, SandboxSettings, sandbox_adapter_spec

__all__ = [
    "MovableClock",
    "SandboxAdapter",
    "SandboxCrm",
    "SandboxSettings",
    "contact_rows",
    "sandbox_adapter_spec",
]
