"""The public names of crmsync_core: a deliberate surface, and a light import for host web processes."""

from __future__ import annotations

import json
import subprocess
import sys

import crmsync_core
import crmsync_core.testing

#: what a host's web process must not pay for by importing crmsync
HEAVY = ("click", "rich", "fastapi", "starlette", "apscheduler", "pytest")


def test_every_name_is_importable_with_from_import() -> None:
    namespace: dict[str, object] = {}
    exec("from crmsync_core import *", namespace)  # noqa: S102 - a fixed statement
    assert set(crmsync_core.__all__) <= set(namespace)
    exec("from crmsync_core.testing import *", namespace)  # noqa: S102 - a fixed statement
    assert set(crmsync_core.testing.__all__) <= set(namespace)


def test_the_public_errors_form_one_tree() -> None:
    errors = [
        getattr(crmsync_core, name)
        for name in crmsync_core.__all__
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
