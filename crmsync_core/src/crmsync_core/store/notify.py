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


#: how often a listener waiting for notifications checks whether it was asked to stop
_STOP_CHECK_SECONDS = 1.0


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
        self._stopping = False
        self._connecting: asyncio.Future[psycopg.AsyncConnection[Any]] | None = None
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
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        self.listening.clear()

    async def aclose(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            # A connection being made as the listener stopped is closed once it is made.
            await asyncio.wait({connecting}, timeout=_STOP_CHECK_SECONDS * 5)
        self.listening.clear()

    def _stop_requested(self) -> bool:
        # Besides our own flag, the task's pending cancellations: psycopg 3.2 can lose one (its connect
        # catches CancelledError per attempt, and its waits go through asyncio.wait_for, which on Python
        # 3.11 can swallow a cancellation that arrives as the wait ends). A listener that missed its one
        # cancellation kept an event loop that was closing waiting forever (tests/scrapersky/test_wake.py
        # hung that way under ScraperSky's pins).
        task = asyncio.current_task()
        return self._stopping or (task is not None and task.cancelling() > 0)

    async def _run(self) -> None:
        delay = self._min_backoff
        while not self._stop_requested():
            connections = self.connections
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never fatal: the worker polls at its interval while the listener reconnects.
                self.listening.clear()
                if self.connections > connections:
                    delay = self._min_backoff  # it was listening: the backoff starts over
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

    async def _listen(self) -> None:
        """One listening connection, until it fails (raised) or the listener is stopped."""
        # A connect interrupted half way leaves its server connection open (psycopg closes it only
        # when collected): it runs in a task of its own, and a stop that comes meanwhile closes it.
        connecting = self._connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        )
        try:
            conn = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(_close_connected)  # (aclose waits for it)
            raise
        self._connecting = None
        try:
            if self._stop_requested():
                return
            await conn.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            if self.connections > 1:
                logger.warning("listening for queued contacts again on %s", self._where)
                # Notifications sent while the connection was down are lost.
                self.waker.wake_all(self.crms)
            self.listening.set()
            while not self._stop_requested():
                # A bounded wait, so that a stop is seen within a second even if its cancellation
                # was lost; a notification is still handed on the moment it arrives.
                async for notification in conn.notifies(timeout=_STOP_CHECK_SECONDS):
                    if notification.channel == CHANNEL and notification.payload:
                        self.waker.wake(notification.payload)
                if conn.closed:
                    raise psycopg.OperationalError("the listening connection closed")
        finally:
            # Closed at once, with no round trip to the server, whatever ended the wait: a listener is
            # often cancelled as its event loop closes (a host's shutdown, a scheduler's), and a close
            # that awaits the server would then not finish, leaving the server's connection open.
            conn.pgconn.finish()


def _close_connected(connecting: asyncio.Future[psycopg.AsyncConnection[Any]]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().pgconn.finish()


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
