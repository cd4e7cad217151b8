"""Every hook is tested and documented (the datasette rule): a hook nobody calls or documents rots."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from crmsync_core import Registry, hookspecs

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DOCS = ROOT / "docs" / "plugins.md"

HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "crmsync_spec"))


def signature(name: str) -> str:
    """The hook's signature as the source spells it, e.g. ``run_finished(crm: str, report: RunReport) -> None``."""
    function: Any = getattr(hookspecs, name)
    params = inspect.signature(function).parameters.values()
    args = ", ".join(f"{p.name}: {p.annotation}" for p in params)
    return f"{name}({args}) -> {inspect.signature(function).return_annotation}"


def hooks_section() -> str:
    text = DOCS.read_text()
    start = text.index("\n## Hooks\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_hooks_are_the_ones_we_know() -> None:
    assert HOOKS == [
        "check_crm",
        "contact_failed",
        "contact_synced",
        "queue_measured",
        "register_adapters",
        "register_commands",
        "request_finished",
        "run_finished",
    ]
    registry = Registry(load_entry_points=False)
    for name in HOOKS:
        assert getattr(hookspecs, name).__doc__, f"{name} needs its one-line contract"
        assert hasattr(registry.pm.hook, name)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook: str) -> None:
    used = re.compile(rf"(def {hook}\(|hook\.{hook}\b|\"{hook}\")")
    users = [
        path.relative_to(TESTS)
        for path in TESTS.rglob("*.py")
        if path.name != Path(__file__).name and used.search(path.read_text())
    ]
    assert users, f"no test implements or calls the {hook} hook"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature(hook: str) -> None:
    section = hooks_section()
    assert re.search(rf"^### `?{hook}`?$", section, re.MULTILINE), (
        f"docs/plugins.md: no heading {hook}"
    )
    assert f"def {signature(hook)}:" in section, (
        f"docs/plugins.md must give the exact signature: def {signature(hook)}:"
    )


def test_the_docs_document_no_hook_that_does_not_exist() -> None:
    headings = re.findall(r"^### `?(\w+)`?$", hooks_section(), re.MULTILINE)
    assert sorted(headings) == HOOKS
