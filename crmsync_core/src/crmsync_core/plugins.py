"""Finding adapters and host plugins: the ``crmsync`` entry point group, read through pluggy.

Installing ``crmsync-brevo`` is all it takes for ``brevo`` to appear. An adapter package that fails to
import, or whose spec is invalid, is reported by :meth:`Registry.failures` and ``crmsync adapters``; the
others still work. ``CRMSYNC_ADAPTERS`` limits which entry points are loaded: a comma-separated list of
names, and an empty value loads none (the way out when a plugin breaks the host). ``CRMSYNC_TRACE_HOOKS=1``
prints every hook call to stderr.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import AdapterNotInstalledError

if TYPE_CHECKING:
    from .adapter import AdapterSpec

ENTRY_POINT_GROUP = "crmsync"
ALLOW_LIST_VARIABLE = "CRMSYNC_ADAPTERS"
TRACE_VARIABLE = "CRMSYNC_TRACE_HOOKS"
#: the name of the built-in failure e-mail plugin (:class:`crmsync_core.notify.FailureNotifier`)
FAILURE_EMAIL_PLUGIN = "crmsync.failure_email"

logger = logging.getLogger("crmsync.plugins")


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that could not be loaded or registered something invalid."""

    plugin: str
    distribution: str | None
    error: str


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin, for ``crmsync adapters``."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


class Registry:
    """The plugin manager and the adapters its plugins registered.

    ``Registry()`` loads the installed entry points on first use; ``Registry(load_entry_points=False)``
    starts empty, for tests and hosts that register plugins themselves.
    """

    def __init__(self, *, load_entry_points: bool = True, plugins: Iterable[object] = ()) -> None:
        self.pm = pluggy.PluginManager("crmsync")
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get(TRACE_VARIABLE):
            self.pm.trace.root.setwriter(
                lambda message: sys.stderr.write(f"crmsync hook: {message}")
            )
            self.pm.enable_tracing()
        self._load_entry_points = load_entry_points
        self._entry_points_loaded = False
        self._distributions: dict[str, tuple[str | None, str | None]] = {}
        self._failures: list[PluginFailure] = []
        self._adapters: dict[str, AdapterSpec[Any]] | None = None
        self._owners: dict[str, str] = {}
        self._not_allowed: set[str] = set()
        for plugin in plugins:
            self.register(plugin)

    @property
    def hook(self) -> Any:
        self._ensure_entry_points()
        return self.pm.hook

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add a plugin (a module or object with ``@hookimpl`` functions)."""
        self.pm.register(plugin, name=name)
        self._adapters = None

    @property
    def failure_notifier(self) -> Any:
        """The built-in :class:`~crmsync_core.notify.FailureNotifier`, or ``None`` in a registry that
        does not load the installed plugins."""
        self._ensure_entry_points()
        plugin = self.pm.get_plugin(FAILURE_EMAIL_PLUGIN)
        return plugin.notifier() if plugin is not None else None

    def unregister(self, plugin: object) -> None:
        self.pm.unregister(plugin)
        self._adapters = None

    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to import, or registered an invalid or duplicate adapter."""
        self.adapters()
        return list(self._failures)

    def adapters(self) -> dict[str, AdapterSpec[Any]]:
        """Every valid adapter, by CRM name."""
        self._ensure_entry_points()
        if self._adapters is None:
            self._adapters = self._collect_adapters()
        return dict(self._adapters)

    def get(self, crm: str) -> AdapterSpec[Any]:
        """The adapter for ``crm``, or an error that names the package to install."""
        adapters = self.adapters()
        if crm in adapters:
            return adapters[crm]
        installed = ", ".join(sorted(adapters)) or "none"
        failed = [f for f in self._failures if f.plugin == crm]
        if failed:
            raise AdapterNotInstalledError(
                f"the adapter for {crm!r} is installed but failed to load: {failed[0].error}"
            )
        if crm in self._not_allowed:
            raise AdapterNotInstalledError(
                f"the adapter for {crm!r} is installed but not enabled: add it to {ALLOW_LIST_VARIABLE} "
                f"(now {os.environ.get(ALLOW_LIST_VARIABLE, '')!r})"
            )
        normalized = crm.strip().lower().replace("-", "_")
        close = [name for name in adapters if name.lower() == normalized]
        close += difflib.get_close_matches(normalized, sorted(adapters), n=1, cutoff=0.7)
        if close:
            raise AdapterNotInstalledError(
                f"no adapter is called {crm!r}; did you mean {close[0]!r}? "
                f"(installed adapters: {installed})"
            )
        from .adapter import NAME_PATTERN

        hint = (
            f"pip install crmsync-{crm.replace('_', '-')}"
            if NAME_PATTERN.match(crm)
            else "check the name"
        )
        raise AdapterNotInstalledError(
            f"no adapter for CRM {crm!r} is installed ({hint}); installed adapters: {installed}"
        )

    def plugins(self) -> list[PluginInfo]:
        """Every loaded plugin with its distribution, version and the hooks it implements.

        The built-in failure e-mail plugin is not listed: it belongs to crmsync-core itself.
        """
        self._ensure_entry_points()
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None or name == FAILURE_EMAIL_PLUGIN:
                continue
            hooks = tuple(sorted(impl.name for impl in self.pm.get_hookcallers(plugin) or ()))
            distribution, version = self._distributions.get(name, (None, None))
            infos.append(PluginInfo(name, distribution, version, hooks))
        return sorted(infos, key=lambda info: info.name)

    def _ensure_entry_points(self) -> None:
        if self._entry_points_loaded or not self._load_entry_points:
            return
        self._entry_points_loaded = True
        # Built in, so that {CRM}_SYNC_FAILURE_NOTIFICATION_EMAIL works wherever the installed plugins
        # do (an allow list of adapters does not turn it off); it does nothing while the setting is empty.
        if self.pm.get_plugin(FAILURE_EMAIL_PLUGIN) is None:
            self.pm.register(_FailureEmail(), name=FAILURE_EMAIL_PLUGIN)
        allowed = _allow_list()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and entry_point.name not in allowed:
                self._not_allowed.add(entry_point.name)
                continue
            dist = entry_point.dist
            distribution = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                plugin = entry_point.load()
                self.pm.register(plugin, name=entry_point.name)
            except (Exception, SystemExit) as exc:  # a broken plugin must not break the others
                self._fail(entry_point.name, distribution, f"{type(exc).__name__}: {exc}")
                continue
            self._distributions[entry_point.name] = (distribution, version)
        self._adapters = None

    def _collect_adapters(self) -> dict[str, AdapterSpec[Any]]:
        # Imported here: loading plugins (for the command line's help) must not load the adapter machinery.
        from .adapter import AdapterSpec

        self._failures = [f for f in self._failures if not f.error.startswith("register_adapters")]
        trace = self.pm.trace.root.get("hook")
        offers: list[tuple[str, AdapterSpec[Any]]] = []
        # Each plugin is called on its own, so that one that raises cannot hide the others.
        for impl in self.pm.hook.register_adapters.get_hookimpls():
            plugin_name = impl.plugin_name
            distribution = self._distributions.get(plugin_name, (None, None))[0]
            offered: list[object] = []
            trace("register_adapters", f"[{plugin_name}]")
            try:
                impl.function(register=offered.append)
            except Exception as exc:
                self._fail(
                    plugin_name,
                    distribution,
                    f"register_adapters raised {type(exc).__name__}: {exc}",
                )
                continue
            for spec in offered:
                if isinstance(spec, AdapterSpec):
                    offers.append((plugin_name, spec))
                else:
                    self._fail(
                        plugin_name,
                        distribution,
                        f"register_adapters: expected an AdapterSpec, got {type(spec).__name__}",
                    )
        # A name belongs to the plugin whose entry point has that name (crmsync-brevo's "brevo"), else
        # to the first plugin that registered it; any other claim to it is reported, never obeyed.
        collected: dict[str, AdapterSpec[Any]] = {}
        self._owners = {}
        ranked = sorted(offers, key=lambda offer: offer[0] != offer[1].name)
        for plugin_name, spec in ranked:
            if spec.name in collected:
                distribution = self._distributions.get(plugin_name, (None, None))[0]
                self._fail(
                    plugin_name,
                    distribution,
                    f"register_adapters: adapter name {spec.name!r} is already registered",
                )
                continue
            collected[spec.name] = spec
            self._owners[spec.name] = plugin_name
        return collected

    def _fail(self, plugin: str, distribution: str | None, error: str) -> None:
        logger.error("crmsync plugin %r (%s) failed: %s", plugin, distribution or "?", error)
        self._failures.append(PluginFailure(plugin, distribution, error))

    def distribution_of(self, crm: str) -> tuple[str | None, str | None]:
        """(distribution, version) of the plugin that registered ``crm``, when it came from one."""
        self.adapters()
        return self._distributions.get(self._owners.get(crm, ""), (None, None))


class _FailureEmail:
    """The built-in failure e-mail, imported on first use so that loading plugins stays light."""

    def __init__(self) -> None:
        self._notifier: Any = None

    # A method, not a property: older pluggy reads every attribute of a plugin when registering it, and
    # a property would import the notifier (and pydantic) into `crmsync --help`.
    def notifier(self) -> Any:
        if self._notifier is None:
            from .notify import FailureNotifier

            self._notifier = FailureNotifier()
        return self._notifier

    @hookspecs.hookimpl
    def contact_failed(
        self, crm: str, contact: Any, reason: str, notification_email: str | None
    ) -> None:
        if notification_email:
            self.notifier().contact_failed(crm, contact, reason, notification_email)

    @hookspecs.hookimpl
    def run_finished(self, crm: str, report: Any, settings: Any) -> None:
        self.notifier().run_finished(crm, report, settings)


def _allow_list() -> set[str] | None:
    value = os.environ.get(ALLOW_LIST_VARIABLE)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of installed plugins, loaded on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def set_default_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (``None``: load the installed plugins again on next use).

    Returns the one it replaced, so that a test or an embedding host can put it back.
    """
    global _default
    previous, _default = _default, registry
    return previous


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Add a host plugin (e.g. a ``contact_failed`` implementation that sends e-mail) to the default
    registry."""
    default_registry().register(plugin, name=name)
