"""The long-running worker: runs CRMs on their intervals until told to stop.

SIGINT and SIGTERM ask it to stop: the batches in flight finish and are recorded (each request is bounded
by its deadline), nothing new is claimed, and nothing is left ``Processing``. A second signal cancels the
batches in flight: what the CRM already answered is recorded, the other contacts go back to the queue
untouched, and :meth:`Worker.run` returns normally (:attr:`Worker.abandoned` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence

from .engine import Engine
from .errors import StoreError
from .report import RunReport

logger = logging.getLogger("crmsync.worker")

#: how often the worker deletes run history past its retention
PRUNE_INTERVAL_SECONDS = 3600.0


class Worker:
    """Runs :meth:`Engine.run_once` for each CRM every ``{CRM}_SYNC_SCHEDULER_INTERVAL_MINUTES``
    (or every ``interval`` seconds when given), until :meth:`stop`."""

    def __init__(
        self,
        engine: Engine,
        crms: Sequence[str],
        *,
        interval: float | None = None,
        on_report: Callable[[RunReport], None] | None = None,
    ) -> None:
        if not crms:
            raise ValueError("a worker needs at least one CRM")
        self.engine = engine
        self.crms = list(crms)
        self._interval = interval
        self._on_report = on_report
        self._stop = asyncio.Event()
        self._next_run = dict.fromkeys(self.crms, 0.0)
        self._signals = 0
        #: the batches in flight were abandoned on a second signal
        self.abandoned = False
        self._next_prune = 0.0

    def stop(self) -> None:
        """Finish the batches in flight, then return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def interval_for(self, crm: str) -> float:
        if self._interval is not None:
            return self._interval
        return self.engine.settings_for(crm).sync_scheduler_interval_minutes * 60

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until stopped. With ``handle_signals``, SIGINT/SIGTERM stop it gracefully."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, task)
        try:
            while not self._stop.is_set():
                for crm in self.crms:
                    if self._stop.is_set():
                        break
                    if time.monotonic() < self._next_run[crm]:
                        continue
                    report = await self.engine.run_once(crm, stop=self._stop)
                    await self._prune()
                    wait = self.interval_for(crm)
                    if report.resume_after is not None:
                        wait = max(wait, report.resume_after)
                    self._next_run[crm] = time.monotonic() + wait
                    if self._on_report is not None:
                        self._on_report(report)
                sleep_for = max(0.0, min(self._next_run.values()) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=sleep_for)
        except asyncio.CancelledError:
            if not self.abandoned or task is None:
                raise
            # Our own second-signal cancellation: the engine has settled the batches; return normally.
            task.uncancel()
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    async def _prune(self) -> None:
        """Delete run history past its retention, about once an hour (the first time at start)."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
        try:
            deleted = await self.engine.store.prune_history(now=self.engine.now())
        except StoreError as exc:
            logger.warning("could not prune the run history: %s", exc)
            return
        if deleted:
            logger.info("pruned %d attempts past the history's retention", deleted)

    def _on_signal(self, task: asyncio.Task[None] | None) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.warning(
                "stopping: finishing the batches in flight (signal again to abandon them)"
            )
            self.stop()
        elif task is not None and not self.abandoned:
            logger.warning("abandoning the batches in flight; their contacts go back to the queue")
            self.abandoned = True
            task.cancel()
