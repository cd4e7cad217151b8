"""Wake on queue: a worker (or the APScheduler glue) runs a CRM as soon as contacts are queued for it,
instead of waiting for its interval.

On PostgreSQL every queue operation of the store sends ``NOTIFY crmsync_queue, '<crm>'`` in the same
transaction as the queue update, so the notification is delivered when (and only if) the transaction
commits: a contact queued inside a host's transaction that rolls back wakes nobody. A
:class:`~crmsync_core.store.QueueListener` (``LISTEN`` on a connection of its own) turns each
notification into :meth:`QueueWaker.wake`; the worker waits with :meth:`QueueWaker.wait`, which returns
early when woken. Polling at the interval stays: it is the fallback whenever a notification cannot
arrive (SQLite, a transaction pooler, a dropped listening connection).

``CRMSYNC_WAKE_ON_QUEUE`` chooses: ``auto`` (default) listens on PostgreSQL, except behind a
transaction pooler (Supavisor's transaction mode, port 6543), which does not carry ``LISTEN``;
``off`` never listens. ``CRMSYNC_WAKE_LISTEN_URL`` gives the listener a connection of its own that does
carry it (the pooler's session port 5432, or the database itself) while the store keeps the pooled
engine. This module holds no SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Literal, Protocol

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

from .settings import SecretUrl

logger = logging.getLogger("crmsync.wake")

#: the channel of the queue notifications; the payload is the CRM's name
CHANNEL = "crmsync_queue"
#: Supavisor's transaction-mode port (its session mode is 5432)
TRANSACTION_POOLER_PORT = 6543

__all__ = [
    "CHANNEL",
    "Listener",
    "QueueWaker",
    "WakeSettings",
    "wake_unsupported_reason",
]


class Listener(Protocol):
    """What listens for queued contacts (:class:`crmsync_core.store.QueueListener` on PostgreSQL)."""

    #: set while notifications can arrive
    listening: asyncio.Event

    def stop(self) -> None:
        """Stop listening without waiting."""
        ...

    async def aclose(self) -> None:
        """Stop listening, and wait for the connection to close."""
        ...


class WakeSettings(BaseSettings):
    """``CRMSYNC_WAKE_ON_QUEUE=auto|off`` (``auto``: on for PostgreSQL without a transaction pooler)."""

    model_config = SettingsConfigDict(
        env_prefix="CRMSYNC_", extra="ignore", hide_input_in_errors=True
    )

    wake_on_queue: Literal["auto", "off"] = "auto"
    #: where the listener connects (default: the store's database URL); must not be a transaction pooler
    wake_listen_url: SecretUrl | None = None


def wake_unsupported_reason(url: URL, mode: str = "auto") -> str | None:
    """Why a worker on the database at ``url`` cannot be woken on queue (``None``: it can)."""
    if mode == "off":
        return "CRMSYNC_WAKE_ON_QUEUE=off"
    backend = url.get_backend_name()
    if backend != "postgresql":
        return f"{backend} has no LISTEN/NOTIFY"
    if url.port == TRANSACTION_POOLER_PORT:
        return (
            f"port {TRANSACTION_POOLER_PORT} is a transaction pooler (Supavisor's transaction mode), "
            "which does not carry LISTEN; connect the worker through the session port (5432) or the "
            "database itself to be woken on queue"
        )
    return None


class QueueWaker:
    """Wakes whoever waits for a CRM when its queue gains contacts.

    A wake that comes while nobody waits is kept (the worker is busy with a run): the next
    :meth:`wait` for that CRM returns at once. :meth:`clear` forgets it, which a worker does just before
    a run (the run takes whatever was queued until then).
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._changed = asyncio.Event()
        #: wakes received (for the benchmarks and logs)
        self.wakes = 0

    def wake(self, crm: str) -> None:
        """Contacts were queued for ``crm`` (and committed)."""
        self.wakes += 1
        self._pending.add(crm)
        self._changed.set()

    def wake_all(self, crms: Iterable[str]) -> None:
        """Notifications may have been missed (the listening connection dropped): wake every CRM."""
        for crm in crms:
            self.wake(crm)

    def pending(self, crm: str) -> bool:
        """Whether ``crm`` was woken since it was last cleared."""
        return crm in self._pending

    def clear(self, crm: str) -> None:
        self._pending.discard(crm)

    async def wait(
        self,
        crms: Iterable[str],
        seconds: float | None,
        *,
        stop: asyncio.Event | None = None,
    ) -> set[str]:
        """Wait up to ``seconds`` (``None``: forever) until one of ``crms`` is woken, or
        ``stop`` is set. Returns the woken CRMs (empty when the time is up or on stop); they stay pending until
        cleared."""
        wanted = set(crms)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            woken = wanted & self._pending
            if woken or (stop is not None and stop.is_set()):
                return woken
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return set()
            self._changed.clear()
            waiters = [asyncio.ensure_future(self._changed.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
