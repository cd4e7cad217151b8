"""The whole contract between crmsync and its plugins (adapters and host applications).

A plugin is a module (or object) with functions marked ``@hookimpl`` and the names below. Adapter
packages expose theirs through the ``crmsync`` entry point group; a host registers its own with
:func:`crmsync_core.plugins.register_plugin`. Lifecycle hooks run in the worker's event loop: keep them
quick, and start a task for slow work such as sending an e-mail. An exception in a lifecycle hook is
logged and does not stop the sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .adapter import AdapterSpec
    from .check import CheckContext, CheckResult
    from .contacts import Contact
    from .queue import StatusSummary
    from .report import RunReport
    from .settings import SyncSettings

hookspec = pluggy.HookspecMarker("crmsync")
hookimpl = pluggy.HookimplMarker("crmsync")


@hookspec
def register_adapters(register: Callable[[AdapterSpec[Any]], None]) -> None:
    """Call ``register(spec)`` for each CRM adapter this plugin provides."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``crmsync`` command line (``cli`` is its ``click.Group``)."""


@hookspec
def contact_synced(crm: str, contact: Contact, remote_id: str | None) -> None:
    """``contact`` reached ``crm``; ``remote_id`` is the CRM's id for it, when known."""


@hookspec
def contact_failed(crm: str, contact: Contact, reason: str, notification_email: str | None) -> None:
    """``contact`` failed for good in ``crm`` (it is now ``Error``): the failure notification.

    ``notification_email`` is the CRM's ``{CRM}_SYNC_FAILURE_NOTIFICATION_EMAIL`` setting.
    """


@hookspec
def run_finished(crm: str, report: RunReport, settings: SyncSettings | None) -> None:
    """A run of ``crm`` ended (also when it stopped on a fatal error); ``report`` says what happened.

    ``settings`` are the CRM's settings, or ``None`` when they could not be read (invalid settings).
    Implementations may leave the argument out.
    """


@hookspec
def request_finished(crm: str, status_code: int | None, seconds: float) -> None:
    """One HTTP exchange with ``crm`` ended after ``seconds``: ``status_code`` is the CRM's answer, or
    ``None`` for a timeout or a connection error. Called for every request (keep it cheap: metrics)."""


@hookspec
def queue_measured(crm: str, summary: StatusSummary) -> None:
    """How ``crm``'s queue stands after a run (``summary.total``, ``summary.due``, ``summary.counts``).

    The engine asks the store for it only when a plugin implements this hook (metrics).
    """


@hookspec
def check_crm(
    crm: str, settings: SyncSettings, context: CheckContext
) -> Sequence[CheckResult] | Awaitable[Sequence[CheckResult]] | None:
    """Extra preflight checks for ``crm`` (``crmsync check``): return results, an awaitable of them, or
    ``None``. Checks read and never change anything in the CRM or the table."""
