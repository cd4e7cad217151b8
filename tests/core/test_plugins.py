"""The Registry for real: installed entry points, broken plugins, the allow-list, tracing, spec checks.

Broken plugins are real distributions: a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt`` in a folder put on ``sys.path``, exactly what ``pip install`` leaves behind.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from pydantic_settings import BaseSettings

import crmsync_brevo
import crmsync_hubspot
import crmsync_mautic
import crmsync_n8n
from crmsync_core import (
    AdapterNotInstalledError,
    AdapterSpec,
    ConfigurationError,
    Contact,
    Engine,
    Layout,
    Registry,
    Store,
    hookimpl,
)
from crmsync_core import plugins as plugins_module
from crmsync_core.cli import cli
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec

from ..conftest import UseRegistry

INSTALLED = {
    "brevo": crmsync_brevo.SPEC,
    "hubspot": crmsync_hubspot.SPEC,
    "mautic": crmsync_mautic.SPEC,
    "n8n": crmsync_n8n.SPEC,
}
#: every adapter installed here: ours and any other a user installed (never assumed to be none)
ALL_INSTALLED = Registry().adapters()
BROKEN_DISTRIBUTION = "crmsync-broken-plugins"


class AdapterPlugin:
    def __init__(self, *specs: AdapterSpec[Any]) -> None:
        self.specs = specs

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        for spec in self.specs:
            register(spec)


class HostPlugin:
    """What a host application registers: lifecycle hooks only."""

    @hookimpl
    def contact_failed(
        self, crm: str, contact: Contact, reason: str, notification_email: str | None
    ) -> None:
        pass

    @hookimpl
    def run_finished(self, crm: str, report: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(plugins_module.ALLOW_LIST_VARIABLE, raising=False)
    monkeypatch.delenv(plugins_module.TRACE_VARIABLE, raising=False)


def install_distribution(
    folder: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """Lay out an installed distribution in ``folder`` as pip would: dist-info plus modules."""
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[crmsync]\n{lines}")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))


def _register(body: str) -> str:
    return textwrap.dedent(
        """
        from crmsync_core import hookimpl
        from crmsync_core.testing import sandbox_adapter_spec

        @hookimpl
        def register_adapters(register):
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")


BROKEN_MODULES = {
    "crmsync_t_import_error": 'raise RuntimeError("boom at import")\n',
    "crmsync_t_register_raises": _register('raise RuntimeError("no config file")'),
    "crmsync_t_duplicate": _register('register(sandbox_adapter_spec(name="brevo"))'),
    "crmsync_t_not_a_spec": _register('register({"name": "dictcrm"})'),
    "crmsync_t_invalid_spec": _register('register(sandbox_adapter_spec(name="Bad Name"))'),
    "crmsync_t_good": _register('register(sandbox_adapter_spec(name="tmpcrm"))'),
}
BROKEN_ENTRY_POINTS = {
    "pipedrive": "crmsync_t_import_error",
    "raiser": "crmsync_t_register_raises",
    "impostor": "crmsync_t_duplicate",
    "notaspec": "crmsync_t_not_a_spec",
    "invalidspec": "crmsync_t_invalid_spec",
    "tmpcrm": "crmsync_t_good",
}


def _forget_modules(names: Any) -> None:
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def broken_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution whose plugins fail in every way a plugin can, installed first on sys.path."""
    install_distribution(tmp_path, BROKEN_DISTRIBUTION, BROKEN_ENTRY_POINTS, BROKEN_MODULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    _forget_modules(BROKEN_MODULES)


# -- (a) entry points ---------------------------------------------------------------------------------


def test_installed_adapters_are_found_with_their_distributions() -> None:
    registry = Registry()
    assert registry.adapters() == ALL_INSTALLED
    assert INSTALLED.items() <= ALL_INSTALLED.items()
    for name in INSTALLED:
        distribution = f"crmsync-{name}"
        assert registry.distribution_of(name) == (
            distribution,
            importlib.metadata.version(distribution),
        )
    assert registry.failures() == []


def test_entry_points_load_lazily_and_not_at_all_when_asked() -> None:
    registry = Registry()
    assert registry.pm.get_plugins() == set(), "nothing is imported until the registry is used"
    assert set(registry.adapters()) == set(ALL_INSTALLED)
    empty = Registry(load_entry_points=False)
    assert empty.adapters() == {}
    assert empty.plugins() == []


def test_a_host_plugin_registered_later_adds_its_adapter() -> None:
    registry = Registry()
    assert set(registry.adapters()) == set(ALL_INSTALLED)
    extra = AdapterPlugin(sandbox_adapter_spec(name="inhouse"))
    registry.register(extra, name="inhouse")
    assert set(registry.adapters()) == {*ALL_INSTALLED, "inhouse"}
    assert registry.distribution_of("inhouse") == (None, None)
    registry.unregister(extra)
    assert set(registry.adapters()) == set(ALL_INSTALLED)


# -- (b) broken plugins -------------------------------------------------------------------------------


def test_broken_plugins_are_reported_and_the_others_still_work(broken_plugins: Path) -> None:
    registry = Registry()
    adapters = registry.adapters()

    assert set(adapters) == {*ALL_INSTALLED, "tmpcrm"}
    for name, spec in INSTALLED.items():
        assert adapters[name] is spec, f"{name} must be the installed package's adapter"
    assert registry.distribution_of("brevo") == (
        "crmsync-brevo",
        importlib.metadata.version("crmsync-brevo"),
    )
    assert registry.distribution_of("tmpcrm") == (BROKEN_DISTRIBUTION, "0.1")

    failures = {f.plugin: f for f in registry.failures()}
    assert set(failures) == {"pipedrive", "raiser", "impostor", "notaspec", "invalidspec"}
    assert {f.distribution for f in failures.values()} == {BROKEN_DISTRIBUTION}
    assert failures["pipedrive"].error == "RuntimeError: boom at import"
    assert failures["raiser"].error == "register_adapters raised RuntimeError: no config file"
    assert failures["impostor"].error == (
        "register_adapters: adapter name 'brevo' is already registered"
    )
    assert failures["notaspec"].error == "register_adapters: expected an AdapterSpec, got dict"
    assert failures["invalidspec"].error.startswith(
        "register_adapters raised ValueError: adapter name 'Bad Name' must be lower-case"
    )


def test_failures_are_not_repeated_when_plugins_change(broken_plugins: Path) -> None:
    registry = Registry()
    before = registry.failures()
    registry.register(HostPlugin(), name="host")
    assert registry.failures() == before
    assert registry.failures() == before


def test_adapters_command_lists_failures_beside_the_working_adapters(
    broken_plugins: Path, use_registry: UseRegistry
) -> None:
    use_registry(None)
    result = CliRunner().invoke(cli, ["adapters"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [a["name"] for a in report["adapters"]] == sorted([*ALL_INSTALLED, "tmpcrm"])
    assert {f["plugin"] for f in report["failures"]} == {
        "pipedrive",
        "raiser",
        "impostor",
        "notaspec",
        "invalidspec",
    }
    assert all(f["distribution"] == BROKEN_DISTRIBUTION for f in report["failures"])


def test_a_duplicate_never_takes_over_the_genuine_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = {"crmsync_t_late_duplicate": BROKEN_MODULES["crmsync_t_duplicate"]}
    install_distribution(
        tmp_path, "crmsync-late", {"impostor": "crmsync_t_late_duplicate"}, modules
    )
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])  # installed after the adapters
    try:
        registry = Registry()
        assert registry.get("brevo") is crmsync_brevo.SPEC
        assert [(f.plugin, f.distribution) for f in registry.failures()] == [
            ("impostor", "crmsync-late")
        ]
    finally:
        _forget_modules(modules)


def test_a_plugin_that_exits_at_import_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = {"crmsync_t_exits": 'raise SystemExit("install the cli extra")\n'}
    install_distribution(tmp_path, "crmsync-exits", {"exits": "crmsync_t_exits"}, modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = Registry()
        assert set(registry.adapters()) == set(ALL_INSTALLED)
        assert [f.plugin for f in registry.failures()] == ["exits"]
    finally:
        _forget_modules(modules)


# -- (c) the allow-list -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("brevo,n8n", {"brevo", "n8n"}),
        (" brevo , n8n ,", {"brevo", "n8n"}),
        ("hubspot", {"hubspot"}),
        ("", set()),
    ],
)
def test_the_allow_list_limits_which_entry_points_load(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: set[str]
) -> None:
    monkeypatch.setenv("CRMSYNC_ADAPTERS", value)
    registry = Registry()
    assert set(registry.adapters()) == expected
    assert {p.name for p in registry.plugins()} == expected
    assert registry.failures() == []


def test_an_empty_allow_list_skips_a_broken_plugin_but_keeps_host_plugins(
    broken_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_ADAPTERS", "")
    registry = Registry(plugins=[AdapterPlugin(sandbox_adapter_spec())])
    assert set(registry.adapters()) == {"sandbox"}
    assert registry.failures() == []
    assert "crmsync_t_import_error" not in sys.modules, "a disabled plugin is never imported"


def test_an_adapter_left_out_by_the_allow_list_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_ADAPTERS", "n8n")
    with pytest.raises(AdapterNotInstalledError) as raised:
        Registry().get("brevo")
    assert "CRMSYNC_ADAPTERS" in str(raised.value)
    assert "pip install" not in str(raised.value)


# -- (d) asking for an adapter ------------------------------------------------------------------------


def test_an_adapter_that_is_not_installed_names_the_package() -> None:
    with pytest.raises(AdapterNotInstalledError) as raised:
        Registry().get("pipedrive")
    assert str(raised.value) == (
        "no adapter for CRM 'pipedrive' is installed (pip install crmsync-pipedrive); "
        "installed adapters: brevo, hubspot, mautic, n8n"
    )
    assert isinstance(raised.value, ConfigurationError)


def test_the_package_name_uses_dashes_and_nonsense_gets_no_package() -> None:
    registry = Registry(load_entry_points=False)
    with pytest.raises(AdapterNotInstalledError, match=r"pip install crmsync-active-campaign\)"):
        registry.get("active_campaign")
    with pytest.raises(AdapterNotInstalledError) as raised:
        registry.get("rm -rf /")
    assert "pip install" not in str(raised.value)
    assert "check the name" in str(raised.value)
    assert str(raised.value).endswith("installed adapters: none")


def test_an_adapter_that_failed_to_load_says_so(broken_plugins: Path) -> None:
    with pytest.raises(AdapterNotInstalledError) as raised:
        Registry().get("pipedrive")
    assert str(raised.value) == (
        "the adapter for 'pipedrive' is installed but failed to load: RuntimeError: boom at import"
    )


def test_a_wrongly_cased_name_points_at_the_installed_adapter() -> None:
    with pytest.raises(AdapterNotInstalledError) as raised:
        Registry().get("HubSpot")
    assert "pip install" not in str(raised.value)
    assert "'hubspot'" in str(raised.value)


# -- (e) plugins() ------------------------------------------------------------------------------------


def test_plugins_report_distribution_version_and_hooks() -> None:
    registry = Registry(plugins=[])
    registry.register(HostPlugin(), name="host")
    infos = {info.name: info for info in registry.plugins()}
    assert set(infos) == {*ALL_INSTALLED, "host"}
    for name in ("brevo", "mautic", "n8n"):
        assert infos[name].distribution == f"crmsync-{name}"
        assert infos[name].version == importlib.metadata.version(f"crmsync-{name}")
    # brevo, hubspot and mautic add `crmsync <crm> setup`; n8n has nothing to set up
    assert infos["n8n"].hooks == ("register_adapters",)
    for name in ("brevo", "hubspot", "mautic"):
        assert infos[name].hooks == ("register_adapters", "register_commands")
    assert (infos["host"].distribution, infos["host"].version) == (None, None)
    assert infos["host"].hooks == ("contact_failed", "run_finished")


# -- (f) tracing --------------------------------------------------------------------------------------


async def _sync_one_contact(registry: Registry, url: str) -> None:
    store = await Store.connect(url, Layout.default(["sandbox"]), create=True)
    contact_id = uuid.uuid4()
    try:
        await store.add_contacts([{"id": contact_id, "email": "someone@example.com"}])
        await store.queue("sandbox", [contact_id])
        engine = Engine(
            store, registry=registry, settings={"sandbox": SandboxSettings()}, request_retry=NO_WAIT
        )
        assert (await engine.run_once("sandbox")).synced == 1
    finally:
        await store.close()


class SyncedListener:
    @hookimpl
    def contact_synced(self, crm: str, contact: Contact, remote_id: str | None) -> None:
        pass


async def test_trace_hooks_writes_every_hook_call_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    monkeypatch.setenv("CRMSYNC_TRACE_HOOKS", "1")
    registry = Registry(
        load_entry_points=False,
        plugins=[AdapterPlugin(sandbox_adapter_spec(SandboxCrm())), SyncedListener()],
    )
    await _sync_one_contact(registry, sqlite_url)
    err = capsys.readouterr().err
    assert "crmsync hook:" in err
    assert "contact_synced" in err
    assert "run_finished" in err
    assert "crm: sandbox" in err
    assert "someone@example.com" in err, "the trace shows the arguments"


async def test_without_trace_hooks_nothing_is_written(
    capsys: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    registry = Registry(load_entry_points=False, plugins=[AdapterPlugin(sandbox_adapter_spec())])
    await _sync_one_contact(registry, sqlite_url)
    assert "crmsync hook" not in capsys.readouterr().err


def test_trace_hooks_shows_register_adapters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CRMSYNC_TRACE_HOOKS", "1")
    monkeypatch.setenv("CRMSYNC_ADAPTERS", "brevo")
    Registry().adapters()
    assert "register_adapters" in capsys.readouterr().err


# -- (g) the spec checks its values -------------------------------------------------------------------


def _spec(**overrides: Any) -> AdapterSpec[Any]:
    values: dict[str, Any] = {
        "name": "mycrm",
        "settings_model": SandboxSettings,
        "factory": lambda settings, context: None,
        "max_batch_size": 10,
        "rate_limit": None,
        "partial_success": False,
        **overrides,
    }
    return AdapterSpec(**values)


@pytest.mark.parametrize("name", ["MyCrm", "my-crm", "1crm", "", "my crm", "x" * 32, "crm!"])
def test_an_invalid_adapter_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="must be lower-case letters, digits and underscores"):
        _spec(name=name)


@pytest.mark.parametrize("size", [0, -5])
def test_a_batch_size_below_one_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=r"adapter 'mycrm': max_batch_size must be at least 1"):
        _spec(max_batch_size=size)


class NotSyncSettings(BaseSettings):
    api_key: str | None = None


class PlainModel(BaseModel):
    api_key: str | None = None


@pytest.mark.parametrize("model", [NotSyncSettings, PlainModel, SandboxSettings(), dict])
def test_a_settings_model_that_is_not_sync_settings_is_refused(model: Any) -> None:
    with pytest.raises(
        TypeError, match=r"adapter 'mycrm': settings_model must subclass SyncSettings"
    ):
        _spec(settings_model=model)


def test_a_factory_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match=r"adapter 'mycrm': factory must be callable"):
        _spec(factory="crmsync_mycrm.adapter:make")


def test_a_valid_spec_describes_itself() -> None:
    spec = _spec(name="my_crm2", max_batch_size=1)
    assert spec.remote_id_column_name == "my_crm2_contact_id"
    assert spec.capabilities() == {
        "name": "my_crm2",
        "max_batch_size": 1,
        "rate_limit": None,
        "partial_success": False,
        "remote_id_column": "my_crm2_contact_id",
        "settings_env_prefix": "SANDBOX_",
        "sandbox": False,
        "check": False,
    }
