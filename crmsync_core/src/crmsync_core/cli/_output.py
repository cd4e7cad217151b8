"""What commands print: status tables that fit 80 columns, run reports, and progress.

Progress goes to stderr: a bar on a terminal, else a log line every few seconds (counts, rate, ETA), so
that cron, systemd and CI logs show a long run moving, or waiting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from ._options import one_line

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from ..changes import ChangeScan, DryRun
    from ..queue import StatusSummary
    from ..report import RunReport

#: seconds between progress lines when stderr is not a terminal
PROGRESS_EVERY = 5.0
#: the label column and the width each CRM's column takes in the status table
_LABEL_WIDTH = 12
_CRM_WIDTH = 13

_stdout: Console | None = None
_stderr: Console | None = None


def stdout() -> Console:
    global _stdout
    if _stdout is None:
        from rich.console import Console

        _stdout = Console()
    return _stdout


def stderr() -> Console:
    global _stderr
    if _stderr is None:
        from rich.console import Console

        _stderr = Console(stderr=True)
    return _stderr


def status_tables(summaries: Sequence[StatusSummary], width: int | None = None) -> list[Table]:
    """One row per status and one column per CRM, so that any count fits: as many CRMs per table as
    the terminal's width allows (four or five at 80 columns)."""
    from rich import box
    from rich.table import Table

    from ..status import SyncStatus

    width = width or stdout().width
    per_table = max(1, (width - _LABEL_WIDTH) // _CRM_WIDTH)
    tables = []
    for start in range(0, len(summaries), per_table):
        chunk = summaries[start : start + per_table]
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("status")
        for summary in chunk:
            table.add_column(summary.crm, justify="right")
        for status in SyncStatus:
            table.add_row(status.value, *(f"{s.counts[status]:,}" for s in chunk))
        table.add_section()
        table.add_row("due now", *(f"{s.due:,}" for s in chunk))
        table.add_row("retrying", *(f"{s.retrying:,}" for s in chunk))
        table.add_row("out of date", *(_maybe(s.out_of_date) for s in chunk))
        table.add_row("total", *(f"{s.total:,}" for s in chunk))
        tables.append(table)
    return tables


def summary_as_dict(summary: StatusSummary) -> dict[str, Any]:
    """A CRM's summary for ``--json``: every count, due, retrying and the oldest due contact's age."""
    from ..status import SyncStatus

    return {
        "crm": summary.crm,
        **{status.value.lower(): summary.counts[status] for status in SyncStatus},
        "total": summary.total,
        "due": summary.due,
        "retrying": summary.retrying,
        "out_of_date": summary.out_of_date,
        "oldest_due_seconds": summary.oldest_due_seconds,
        "paused_since": summary.paused_since.isoformat() if summary.paused_since else None,
        "probe_at": summary.probe_at.isoformat() if summary.probe_at else None,
    }


def _maybe(count: int | None) -> str:
    # None: the table has no updated_at, so crmsync cannot tell cheaply.
    return "?" if count is None else f"{count:,}"


def paused_lines(summaries: Sequence[StatusSummary]) -> list[str]:
    """A line for each paused CRM: since when, and when it is probed next (the circuit breaker) or why
    (a user)."""
    return [
        f"{s.crm} is paused by a user since {s.paused_since:%Y-%m-%d %H:%M:%S} UTC "
        f"({s.paused_by_user}); resume it on the status page"
        if s.paused_by_user is not None
        else f"{s.crm} is paused since {s.paused_since:%Y-%m-%d %H:%M:%S} UTC (circuit breaker); "
        f"next probe at {s.probe_at:%Y-%m-%d %H:%M:%S} UTC"
        for s in summaries
        if s.paused_since is not None and s.probe_at is not None
    ]


def report_line(report: RunReport) -> str:
    """The line that says what a run did."""
    unchanged = f"unchanged {report.unchanged:,}, " if report.unchanged else ""
    line = (
        f"{report.crm}: synced {report.synced:,}, {unchanged}skipped {report.skipped:,}, "
        f"retrying {report.retrying:,}, failed {report.failed:,} in {report.duration_seconds:.1f} s"
    )
    if report.released:
        line += f"; {report.released:,} handed back to the queue"
    return line


def why_failed(report: RunReport) -> str | None:
    """Why a run makes the command exit non-zero: its CRM was stopped (a fatal error), or paused (the
    circuit breaker), with what to fix; None when the run ended normally."""
    if report.stopped:
        label = "paused" if report.paused_since else "stopped"
        return f"{report.crm} {label}: {report.stopped}"
    return None


def print_report(report: RunReport, as_json: bool) -> bool:
    """Print what a run did (stdout) and why it failed (one stderr line); True when it failed."""
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(report_line(report))
    failure = why_failed(report)
    if failure:
        click.echo(f"error: {one_line(failure)}", err=True)
    return failure is not None


def print_scan(scan: ChangeScan, as_json: bool) -> None:
    """What ``sync --changed`` re-queued for one CRM."""
    if as_json:
        click.echo(json.dumps({"changed": scan.as_dict()}))
        return
    click.echo(
        f"{scan.crm}: {scan.requeued:,} changed contacts re-queued ({scan.scanned:,} compared, "
        f"{scan.unchanged:,} unchanged) in {scan.duration_seconds:.1f} s"
    )


def print_dry_run(run: DryRun, as_json: bool) -> None:
    """A dry run's requests: a heading per CRM, then each request's method, URL, headers and body."""
    if as_json:
        click.echo(json.dumps({"dry_run": run.as_dict()}, default=str))
        return
    unchanged = f", {len(run.unchanged):,} unchanged (no request)" if run.unchanged else ""
    click.echo(
        f"{run.crm}: {run.due:,} due{unchanged}; {len(run.requests):,} requests would be sent"
    )
    if run.stopped:
        click.echo(f"error: {one_line(run.stopped)}", err=True)
    for request in run.requests:
        click.echo(f"\n{request.method} {request.url}")
        for name, value in request.headers.items():
            click.echo(f"{name}: {value}")
        if request.body is not None:
            body = request.body
            text = body if isinstance(body, str) else json.dumps(body, indent=2, default=str)
            click.echo(f"\n{text}")


class RunProgress:
    """A run's progress on stderr: a bar on a terminal (unless ``bar`` is false), else a line every
    ``every`` seconds (every batch when ``every`` is 0), also when nothing moved for that long. Use as an async context manager
    and pass :meth:`update` as the engine's ``progress`` callback."""

    def __init__(
        self, crm: str, total: int, *, every: float = PROGRESS_EVERY, bar: bool = True
    ) -> None:
        self.crm = crm
        self.total = total
        self.every = every
        # On a terminal without a bar (--json), stay quiet: the lines are for logs.
        self.terminal = stderr().is_terminal
        self.quiet = self.terminal and not bar
        self._started = time.monotonic()
        self._last_line = self._started
        self._report: RunReport | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunProgress:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Show the bar, or start the line every ``every`` seconds (needs a running event loop)."""
        self._started = self._last_line = time.monotonic()
        if self.quiet:
            return
        if self.terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=stderr(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.crm, total=self.total)
        elif self.every > 0:
            import asyncio

            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(self, report: RunReport) -> None:
        """The engine's ``progress`` callback: called after each batch with the run's counts so far."""
        self._report = report
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=report.processed)
        elif (
            not self.quiet
            and not self.terminal
            and time.monotonic() - self._last_line >= self.every
        ):
            self._line()

    async def _beat(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.every)
            if time.monotonic() - self._last_line >= self.every * 0.99:
                self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last_line = now
        elapsed = now - self._started
        report = self._report
        done = report.processed if report else 0
        if not done:
            click.echo(
                f"{self.crm}: 0/{self.total:,} done after {elapsed:.0f} s, waiting for the CRM",
                err=True,
            )
            return
        assert report is not None
        rate = done / elapsed if elapsed > 0 else 0.0
        left = max(self.total - done, 0)
        eta = f"ETA {_duration(left / rate)}" if rate > 0 and left else "finishing"
        click.echo(
            f"{self.crm}: {done:,}/{self.total:,} done (synced {report.synced:,}, skipped "
            f"{report.skipped:,}, retrying {report.retrying:,}, failed {report.failed:,}), "
            f"{rate:,.1f}/s, {eta}",
            err=True,
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
