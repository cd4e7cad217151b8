"""Preflight checks: is each CRM account (and the table) ready for a sync? Nothing is changed.

:func:`run_checks` returns, per CRM, a list of :class:`CheckResult` (a name, ``ok`` / ``problem`` /
``info``, what was found and what to do). It runs three kinds of checks:

* the core's own: the settings load, the table has the CRM's columns, and on PostgreSQL the shared
  rate-limit table exists when the CRM's budget is shared;
* the adapter's: :attr:`AdapterSpec.check <crmsync_core.adapter.AdapterSpec.check>`, e.g. credentials
  valid and scoped, the list exists, each mapped attribute exists with a compatible type, rate-limit
  headroom;
* any plugin's: a ``check_crm`` hook implementation. A third party adds a check in a few lines::

      @hookimpl
      def check_crm(crm, settings, context):
          if crm == "brevo" and settings.list_id is None:
              return [CheckResult("list", "problem", "no list", fix="set BREVO_LIST_ID")]
          return None

  (``check_crm`` may also return an awaitable of results: ``async def`` helpers work).

The engine runs the cheap part (``scope="fields"``: only the mapped fields) once per worker start and
warns about each mapped field the account lacks (see :mod:`crmsync_core.engine`).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import ValidationError

# The check types live beside the adapter protocol (an adapter's check returns them); named here too.
from .adapter import CheckContext as CheckContext
from .adapter import CheckResult as CheckResult
from .adapter import CheckScope as CheckScope
from .adapter import CheckStatus as CheckStatus
from .errors import AdapterError, ConfigurationError, CrmsyncError, FatalError, TransientError
from .ratelimit import Limiter
from .retry import RequestRetry

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .adapter import AdapterSpec
    from .layout import CrmColumns, Layout
    from .plugins import Registry
    from .settings import SyncSettings
    from .store import Store

logger = logging.getLogger("crmsync.check")

SettingsModel = TypeVar("SettingsModel", bound="SyncSettings")


def settings_from_environment(model: type[SettingsModel]) -> SettingsModel:
    """``model()`` read from the environment, or a :class:`ConfigurationError` naming what is wrong."""
    try:
        return model()
    except ValidationError as exc:
        prefix = model.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"the {prefix}* settings are invalid: {problems}") from None


def missing_fields(results: Iterable[CheckResult]) -> list[str]:
    """The mapped fields the account lacks (or holds with an incompatible type), in order."""
    return [r.field for r in results if r.field is not None and r.status == "problem"]


def crm_column_names(names: CrmColumns) -> set[str]:
    """Every column one CRM's state needs."""
    needed = {
        names.sync_status,
        names.processing_status,
        names.error,
        names.remote_id,
        names.attempts,
        names.next_attempt_at,
        names.claimed_at,
    }
    return needed | {n for n in (names.last_attempt_at, names.failed_crm) if n}


def configured_crms(registry: Registry) -> list[str]:
    """Installed CRMs with at least one of their environment variables set (e.g. ``BREVO_API_KEY``)."""
    found = []
    for name, spec in sorted(registry.adapters().items()):
        prefix = str(spec.settings_model.model_config.get("env_prefix", "")).upper()
        if prefix and any(key.upper().startswith(prefix) for key in os.environ):
            found.append(name)
    return found


async def run_checks(
    crms: Sequence[str] | None = None,
    *,
    registry: Registry | None = None,
    database: str | AsyncEngine | Store | None = None,
    layout: Layout | None = None,
    settings: Mapping[str, SyncSettings] | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    request_retry: RequestRetry | None = None,
) -> dict[str, list[CheckResult]]:
    """Check each CRM (default: the configured ones, see :func:`configured_crms`) and return its results.

    ``database`` (a URL, the host's engine or a :class:`~crmsync_core.store.Store`) adds the table checks;
    ``layout`` says where the CRM's columns are (default: the default layout of the installed adapters, or
    the store's). ``settings`` and ``transports`` are as for :class:`~crmsync_core.engine.Engine`. Nothing
    in the CRMs or the database is changed.
    """
    from .plugins import default_registry

    registry = registry or default_registry()
    names = list(crms) if crms else configured_crms(registry)
    results: dict[str, list[CheckResult]] = {}
    for crm in names:
        results[crm] = await _check_one(
            crm,
            registry=registry,
            database=database,
            layout=layout,
            settings=(settings or {}).get(crm),
            transport=(transports or {}).get(crm),
            request_retry=request_retry or RequestRetry(),
        )
    return results


async def _check_one(
    crm: str,
    *,
    registry: Registry,
    database: str | AsyncEngine | Store | None,
    layout: Layout | None,
    settings: SyncSettings | None,
    transport: httpx.AsyncBaseTransport | None,
    request_retry: RequestRetry,
) -> list[CheckResult]:
    try:
        spec = registry.get(crm)
    except CrmsyncError as exc:
        return [CheckResult("adapter", "problem", exc.message)]
    results: list[CheckResult] = []
    prefix = spec.settings_model.model_config.get("env_prefix", "")
    if settings is None:
        try:
            settings = settings_from_environment(spec.settings_model)
        except ConfigurationError as exc:
            return [
                CheckResult(
                    "settings",
                    "problem",
                    exc.message,
                    fix=f"fix the {prefix}* environment variables",
                )
            ]
    results.append(CheckResult("settings", "ok", f"{prefix}* settings are valid"))
    if database is not None:
        results += await table_checks(crm, spec, settings, database, layout, registry)
    context = CheckContext(
        scope="full",
        transport=transport,
        request_retry=request_retry,
        rate_limiter=Limiter(settings.rate_limit(spec.rate_limit)),
        logger=logging.getLogger(f"crmsync.{crm}"),
    )
    results += await adapter_checks(spec, settings, context)
    results += await _plugin_checks(registry, crm, settings, context)
    return results


async def adapter_checks(
    spec: AdapterSpec[Any], settings: SyncSettings, context: CheckContext
) -> list[CheckResult]:
    """The adapter's own checks; a crash or an unexpected error becomes one problem line."""
    check = spec.check_function()
    if check is None:
        return [CheckResult("account", "info", f"the {spec.name} adapter declares no checks")]
    try:
        return list(await check(settings, context))
    except ConfigurationError as exc:
        return [CheckResult("configuration", "problem", exc.message)]
    except FatalError as exc:
        return [CheckResult("credentials", "problem", exc.message)]
    except AdapterError as exc:
        kind = "unreachable" if isinstance(exc, TransientError) else "error"
        return [CheckResult("connection", "problem", f"{kind}: {exc.message}")]
    except Exception as exc:  # a broken check must not hide the others
        logger.exception("%s: the adapter's check failed", spec.name)
        return [CheckResult("check", "problem", f"the check itself failed: {type(exc).__name__}")]


async def _plugin_checks(
    registry: Registry, crm: str, settings: SyncSettings, context: CheckContext
) -> list[CheckResult]:
    results: list[CheckResult] = []
    for impl in registry.hook.check_crm.get_hookimpls():
        try:
            answer = impl.function(crm=crm, settings=settings, context=context)
            if inspect.isawaitable(answer):
                answer = await answer
            results += list(answer or ())
        except Exception as exc:
            logger.exception("the check_crm hook of %s failed", impl.plugin_name)
            results.append(
                CheckResult(
                    f"plugin {impl.plugin_name}",
                    "problem",
                    f"its check failed: {type(exc).__name__}: {exc}"[:300],
                )
            )
    return results


async def table_checks(
    crm: str,
    spec: AdapterSpec[Any],
    settings: SyncSettings,
    database: str | AsyncEngine | Store,
    layout: Layout | None = None,
    registry: Registry | None = None,
) -> list[CheckResult]:
    """The table has the CRM's columns; the shared rate-limit table exists where it is needed."""
    from .layout import Layout
    from .store import Store, inspect_database

    if isinstance(database, Store):
        layout = layout or database.layout
        target: str | AsyncEngine = database.engine
    else:
        target = database
    if layout is None:
        specs = list((registry.adapters() if registry else {spec.name: spec}).values())
        layout = Layout.default(specs or [spec])
    if isinstance(target, str) and target.startswith("sqlite") and ":memory:" not in target:
        # Connecting would create an empty SQLite file: a check never changes anything.
        path = Path(target.split(":///", 1)[1]) if ":///" in target else None
        if path is not None and not path.exists():
            return [
                CheckResult(
                    "table",
                    "problem",
                    f"the database file {path} does not exist",
                    fix="`crmsync schema --apply` creates the table (or point --database-url at yours)",
                )
            ]
    try:
        columns = layout.columns_for(crm)
    except ConfigurationError as exc:
        return [CheckResult("table", "problem", exc.message)]
    try:
        found = await inspect_database(target, layout)
    except CrmsyncError as exc:
        return [CheckResult("database", "problem", exc.message)]
    hint = (
        "`crmsync schema` prints the SQL that adds them (`--apply` runs it)"
        if layout.managed
        else "`crmsync schema --scrapersky` prints the additive SQL for ScraperSky's table"
    )
    results: list[CheckResult] = []
    if not found.table_exists:
        results.append(
            CheckResult("table", "problem", f"there is no table {layout.table!r}", fix=hint)
        )
    else:
        needed = crm_column_names(columns) | {layout.id_column, *layout.fields.values()}
        if layout.updated_at:
            needed.add(layout.updated_at)
        missing = sorted(needed - found.columns)
        if missing:
            results.append(
                CheckResult(
                    "table",
                    "problem",
                    f"{layout.table!r} lacks the columns {', '.join(missing)}",
                    fix=hint,
                )
            )
        else:
            results.append(CheckResult("table", "ok", f"{layout.table!r} has the {crm} columns"))
    limit = settings.rate_limit(spec.rate_limit)
    if found.dialect != "postgresql":
        results.append(
            CheckResult(
                "shared rate limit",
                "info",
                f"not needed on {found.dialect}: one worker keeps the budget in memory",
            )
        )
    elif limit is None or not settings.sync_shared_rate_limit:
        results.append(
            CheckResult("shared rate limit", "info", "not needed: the budget is not shared")
        )
    elif found.rate_limit_table_exists:
        results.append(
            CheckResult("shared rate limit", "ok", f"table {found.rate_limit_table!r} exists")
        )
    else:
        results.append(
            CheckResult(
                "shared rate limit",
                "problem",
                f"table {found.rate_limit_table!r} does not exist; the first sync creates it only "
                "if the database user may create tables",
                fix=f"create it: {found.rate_limit_table_sql}",
            )
        )
    return results


async def engine_preflight(
    spec: AdapterSpec[Any], settings: SyncSettings, context: CheckContext
) -> list[CheckResult] | None:
    """The cheap part of the adapter's check (its mapped fields), for the engine; ``None`` when it
    could not be done (no check declared, or the CRM did not answer)."""
    check = spec.check_function()
    if check is None:
        return None
    context.scope = "fields"
    try:
        return list(await check(settings, context))
    except Exception as exc:
        # The run itself reports credentials and outages; the preflight only adds what it can see.
        message = exc.message if isinstance(exc, CrmsyncError) else type(exc).__name__
        context.logger.warning(
            "%s: could not check the account's fields before syncing: %s", spec.name, message
        )
        return None


SetupStatus = Literal["exists", "created", "would create", "kept"]


@dataclass(frozen=True, slots=True)
class SetupAction:
    """What ``crmsync <crm> setup`` found or did for one thing it manages (e.g. one attribute)."""

    #: what it is about, e.g. ``attribute DOMAIN_ID``
    name: str
    #: ``exists`` (left alone), ``created``, ``would create`` (``--dry-run``), or ``kept`` (it exists but
    #: differs from what crmsync would create; setup never changes what exists)
    status: SetupStatus
    detail: str = ""
    #: the request that creates it (``--dry-run`` prints it): method, path and JSON body, never a secret
    request: str = ""

    def line(self) -> str:
        text = f"{self.status:<12} {self.name}"
        if self.detail:
            text += f": {self.detail}"
        if self.status == "would create" and self.request:
            text += f"\n             {self.request}"
        return text
