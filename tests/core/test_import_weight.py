"""What importing crmsync loads: production modules never pull in the database stack, pytest or a fake.

An adapter needs ``crmsync_core.contacts`` and ``crmsync_core.adapter``; the command line loads every
adapter's ``plugin`` module to list the CRMs; a host process loads each ``adapter``. None of them may
pay for SQLAlchemy and the database drivers, nor carry test code (pytest, the fakes and the loopback
server they serve through) into production. Each import runs in a fresh interpreter, so that what
this test process already loaded cannot hide anything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ADAPTERS = ("brevo", "hubspot", "mautic", "n8n")
DATABASE = ("sqlalchemy", "psycopg", "asyncpg", "aiosqlite")
TEST_CODE = ("pytest", "_pytest")
TEST_MODULES = ("crmsync_core.testing.server", "crmsync_core.testing.fakecrm")

PRODUCTION = [
    pytest.param("crmsync_core", id="core"),
    pytest.param("crmsync_core.contacts", id="contacts"),
    pytest.param("crmsync_core.adapter", id="adapter"),
    *(pytest.param(f"crmsync_{crm}.plugin", id=f"{crm}-plugin") for crm in ADAPTERS),
    *(pytest.param(f"crmsync_{crm}.adapter", id=f"{crm}-adapter") for crm in ADAPTERS),
]


def loaded_after_import(module: str) -> list[str]:
    """The names in ``sys.modules`` after a fresh interpreter imports ``module``."""
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    names: list[str] = json.loads(done.stdout)
    return names


def loaded_test_code(names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if name.split(".")[0] in TEST_CODE or name.endswith(".fake") or name in TEST_MODULES
    ]


@pytest.mark.parametrize("module", PRODUCTION)
def test_production_imports_no_database_stack_and_no_test_code(module: str) -> None:
    names = loaded_after_import(module)
    database = sorted({name.split(".")[0] for name in names if name.split(".")[0] in DATABASE})
    assert database == [], f"importing {module} loads {database}"
    assert loaded_test_code(names) == [], f"importing {module} loads test code"


@pytest.mark.parametrize("module", ["crmsync_core.testing", "crmsync_core.demo"], ids=str)
def test_the_testing_helpers_and_the_demo_import_no_pytest(module: str) -> None:
    names = loaded_after_import(module)
    assert [name for name in names if name.split(".")[0] in TEST_CODE] == []
    if module == "crmsync_core.demo":
        assert [name for name in names if name.endswith(".fake")] == [], (
            "the demo imports a fake only when it builds that CRM's sandbox"
        )


@pytest.mark.parametrize("crm", ADAPTERS)
def test_the_spec_names_its_sandbox_and_builds_it_on_demand(crm: str) -> None:
    code = (
        "import json, sys\n"
        f"from crmsync_{crm}.adapter import SPEC\n"
        "before = f'crmsync_{SPEC.name}.fake' in sys.modules\n"
        "sandbox = SPEC.make_sandbox()\n"
        "after = f'crmsync_{SPEC.name}.fake' in sys.modules\n"
        "print(json.dumps([SPEC.sandbox, before, after, sandbox.transport is not None]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [f"crmsync_{crm}.fake:make_sandbox", False, True, True]


@pytest.mark.parametrize("module", ["crmsync_core", "crmsync_core.contacts"], ids=str)
def test_the_core_and_its_contacts_load_no_http_client_until_used(module: str) -> None:
    # What a host's web process and an adapter's mapping code import: the HTTP stack comes with the
    # first adapter or client that sends.
    names = loaded_after_import(module)
    assert sorted({n.split(".")[0] for n in names} & {"httpx", "httpcore"}) == []
