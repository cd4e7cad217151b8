"""Queue notifications (PostgreSQL ``LISTEN``/``NOTIFY``): the SQL side of :mod:`crmsync_core.wake`.

Queue operations call :meth:`NotifyMixin._notify_queued` inside their own transaction (the caller's,
for an outbox queue): ``pg_notify`` is delivered at commit, never for a rolled-back transaction.
:class:`QueueListener` keeps one connection of its own (psycopg, outside the pool, autocommit) in
``LISTEN crmsync_queue`` and turns each notification into :meth:`QueueWaker.wake`. It never makes a
worker fail: a refused or dropped connection is logged and retried with a growing backoff, while the
worker polls at its interval; after a reconnection every CRM is woken once, since notifications sent
meanwhile were lost. An idle listener sends no query (TCP keepalives find a dead connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo
from pydantic import ValidationError
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import ConfigurationError
from ..wake import CHANNEL, QueueWaker, WakeSettings, wake_unsupported_reason
from .base import StoreBase

logger = logging.getLogger("crmsync.wake")


def listen_conninfo(url: URL) -> str:
    """A libpq connection string for ``url`` (any PostgreSQL driver's URL), with TCP keepalives so that
    a silently dropped connection is noticed without sending queries."""
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "application_name": "crmsync-listener",
    }
    sslmode = url.query.get("sslmode") or url.query.get("ssl")
    if isinstance(sslmode, str) and sslmode not in ("true", "false"):
        params["sslmode"] = sslmode
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


class QueueListener:
    """``LISTEN crmsync_queue`` on a dedicated connection, waking ``waker`` for each queue commit.

    Start with :meth:`start`, stop with :meth:`aclose`. :attr:`listening` is set while the ``LISTEN`` is
    active (tests wait on it before queueing).
    """

    def __init__(
        self,
        url: URL,
        waker: QueueWaker,
        crms: Sequence[str],
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self._conninfo = listen_conninfo(url)
        self._where = url.render_as_string(hide_password=True)
        self.waker = waker
        self.crms = list(crms)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        #: connections made (the first, then each reconnection)
        self.connections = 0

    def __repr__(self) -> str:
        return f"QueueListener({self._where!r}, crms={self.crms!r})"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="crmsync-queue-listener")

    def stop(self) -> None:
        """Stop listening (without waiting for the connection to close; :meth:`aclose` waits)."""
        if self._task is not None:
            self._task.cancel()
        self.listening.clear()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening.clear()

    async def _run(self) -> None:
        delay = self._min_backoff
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    if self.connections > 1:
                        logger.warning("listening for queued contacts again on %s", self._where)
                        # Notifications sent while the connection was down are lost.
                        self.waker.wake_all(self.crms)
                    self.listening.set()
                    delay = self._min_backoff
                    async for notification in conn.notifies():
                        if notification.channel == CHANNEL and notification.payload:
                            self.waker.wake(notification.payload)
                raise psycopg.OperationalError("the listening connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never fatal: the worker polls at its interval while the listener reconnects.
                self.listening.clear()
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc)
                logger.warning(
                    "not listening for queued contacts on %s (%s); polling at the interval "
                    "meanwhile, reconnecting in %.1f s",
                    self._where,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)


class NotifyMixin(StoreBase):
    """The store's half of wake on queue (see :mod:`crmsync_core.wake`)."""

    _listeners: list[QueueListener]

    async def _notify_queued(self, conn: AsyncConnection, crm: str, queued: int) -> None:
        """Tell listening workers that ``crm`` has newly queued contacts, at the commit of ``conn``'s
        transaction (PostgreSQL; elsewhere nothing)."""
        if queued and self.engine.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_notify(CHANNEL, crm)))

    def queue_listener(
        self, waker: QueueWaker, crms: Sequence[str], *, mode: str | None = None
    ) -> QueueListener | None:
        """A started :class:`QueueListener` waking ``waker`` for ``crms``, or ``None`` (logged once) where
        workers cannot be woken: SQLite, a transaction pooler, ``CRMSYNC_WAKE_ON_QUEUE=off``. It is
        stopped by :meth:`close`, or by its own ``aclose``. ``CRMSYNC_WAKE_LISTEN_URL`` replaces the
        store's URL for the listening connection only."""
        try:
            settings = WakeSettings()
        except ValidationError:
            raise ConfigurationError(
                "CRMSYNC_WAKE_ON_QUEUE must be auto or off, and CRMSYNC_WAKE_LISTEN_URL a "
                "PostgreSQL URL"
            ) from None
        mode = mode or settings.wake_on_queue
        url = self.engine.url
        if settings.wake_listen_url is not None and self.engine.dialect.name == "postgresql":
            url = sa.make_url(settings.wake_listen_url.get_secret_value())
        reason = wake_unsupported_reason(url, mode)
        if reason is not None:
            # Once per store (a worker process has one): every worker and scheduler job asks again.
            said: set[str] = self.__dict__.setdefault("_wake_reasons_said", set())
            if reason not in said:
                said.add(reason)
                logger.info("not woken on queue (%s): polling at the interval", reason)
            return None
        listener = QueueListener(url, waker, crms)
        listener.start()
        if not hasattr(self, "_listeners"):
            self._listeners = []
        self._listeners.append(listener)
        return listener

    async def close(self) -> None:
        for listener in getattr(self, "_listeners", []):
            await listener.aclose()
        self._listeners = []
        await super().close()
