"""The public names of crmsync_core: a deliberate surface, and a light import for host web processes."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType

import pytest

import crmsync_core
import crmsync_core.testing

CORE_NAMES = [
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "AdapterNotInstalledError",
    "AdapterSpec",
    "AuthenticationError",
    "CheckResult",
    "CircuitOpenError",
    "ConfigurationError",
    "Contact",
    "ContactFilter",
    "ContactState",
    "CrmColumns",
    "CrmsyncError",
    "DatabaseUnavailableError",
    "EmailType",
    "Engine",
    "FatalError",
    "IllegalTransitionError",
    "InvalidRequestError",
    "Layout",
    "MalformedResponseError",
    "Outcome",
    "PermanentError",
    "PermanentFailure",
    "ProcessingStatus",
    "QueueResult",
    "RateLimit",
    "RateLimitExhaustedError",
    "Registry",
    "RequestRetry",
    "RetryPolicy",
    "RunReport",
    "Sandbox",
    "SandboxOptions",
    "Skipped",
    "StatusSummary",
    "Store",
    "StoreError",
    "SyncSettings",
    "SyncStatus",
    "Synced",
    "TransientError",
    "TransientFailure",
    "Worker",
    "hookimpl",
    "register_plugin",
    "run_checks",
]

TESTING_NAMES = [
    "MovableClock",
    "SandboxAdapter",
    "SandboxCrm",
    "SandboxSettings",
    "contact_rows",
    "sandbox_adapter_spec",
]

#: what a host's web process must not pay for by importing crmsync
HEAVY = ("click", "rich", "fastapi", "starlette", "apscheduler", "pytest")


@pytest.mark.parametrize(
    ("module", "expected"),
    [(crmsync_core, CORE_NAMES), (crmsync_core.testing, TESTING_NAMES)],
    ids=["crmsync_core", "crmsync_core.testing"],
)
def test_public_names(module: ModuleType, expected: list[str]) -> None:
    # Adding or removing a public name is a decision: update this list in the same change.
    assert module.__all__ == expected
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_every_name_is_importable_with_from_import() -> None:
    namespace: dict[str, object] = {}
    exec("from crmsync_core import *", namespace)  # noqa: S102 - a fixed statement
    assert set(CORE_NAMES) <= set(namespace)
    exec("from crmsync_core.testing import *", namespace)  # noqa: S102 - a fixed statement
    assert set(TESTING_NAMES) <= set(namespace)


def test_the_public_errors_form_one_tree() -> None:
    errors = [
        getattr(crmsync_core, name)
        for name in CORE_NAMES
        if name.endswith("Error") and name[0].isupper()
    ]
    assert len(errors) == 15
    assert all(issubclass(error, crmsync_core.CrmsyncError) for error in errors)


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def test_importing_the_core_stays_light() -> None:
    loaded = _modules_after("import crmsync_core")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    assert "crmsync_core" in loaded


def test_the_testing_helpers_do_not_need_pytest() -> None:
    # The sandbox adapter serves the demo and the benchmarks, where pytest is not installed.
    loaded = _modules_after("import crmsync_core.testing")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_loading_the_installed_adapters_does_not_load_the_web_or_scheduler_extras() -> None:
    # click and rich may arrive here through httpx (its optional command line), not through crmsync.
    loaded = _modules_after(
        "import crmsync_core\nprint(sorted(crmsync_core.Registry().adapters()))"
    )
    assert {"crmsync_brevo", "crmsync_hubspot", "crmsync_mautic", "crmsync_n8n"} <= loaded
    assert loaded.isdisjoint({"fastapi", "starlette", "apscheduler", "pytest"})
