"""Wake on queue (issue 14, item 2): selection → first CRM request, and an idle worker's queries.

    .venv/bin/python -m bench.wake --selections 200 --idle-seconds 60

A worker (``Worker``, interval 5 minutes, wake on queue on) runs against a zero-latency fake CRM that
timestamps each request. The host, on an engine of its own (other connections), makes 200 selections
one after another: each queues one contact, commits, and waits for the fake's request before the next.
Latency is from the commit (``Store.queue`` returning) to the fake receiving the request; "from the
call" includes the queue transaction itself. Then the worker is left idle for ``--idle-seconds`` while
every statement its engine sends is counted; a run with nothing due (what the 5-minute interval
triggers) is counted too. Creates its own database (CRMSYNC_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test for the admin connection) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from crmsync_core import Engine, Layout, Registry, Store, hookimpl
from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.contacts import Contact, Outcome, Synced
from crmsync_core.testing import SandboxSettings
from crmsync_core.worker import Worker

from .core import ADMIN_URL

CRM = "sandbox"
INTERVAL_MINUTES = 5.0


class Fake:
    """A zero-latency CRM that notes when each request arrives."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[float] = asyncio.Queue()

    def spec(self) -> AdapterSpec[SandboxSettings]:
        fake = self

        class Adapter:
            async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
                fake.arrived.put_nowait(time.perf_counter())
                return [Synced(c.id, "1") for c in contacts]

            async def aclose(self) -> None:
                return None

        def factory(settings: SandboxSettings, context: AdapterContext) -> Adapter:
            return Adapter()

        return AdapterSpec(
            name=CRM,
            settings_model=SandboxSettings,
            factory=factory,
            max_batch_size=100,
            rate_limit=None,
            partial_success=True,
        )


class _Plugin:
    def __init__(self, spec: AdapterSpec[Any]) -> None:
        self.spec = spec

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(self.spec)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(selections: int, idle_seconds: float) -> None:
    name = f"crmsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    layout = Layout.default([CRM])
    worker_store = await Store.connect(url, layout, create=True)
    host = await Store.connect(url, layout)
    statements = 0

    @sa.event.listens_for(worker_store.engine.sync_engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    try:
        ids = [uuid.uuid4() for _ in range(selections)]
        await host.add_contacts(
            [{"id": i, "email": f"p{n}@example.com", "name": f"P {n}"} for n, i in enumerate(ids)]
        )
        fake = Fake()
        engine = Engine(
            worker_store,
            registry=Registry(load_entry_points=False, plugins=[_Plugin(fake.spec())]),
            settings={CRM: SandboxSettings(sync_scheduler_interval_minutes=INTERVAL_MINUTES)},
        )
        runs = 0
        first_run = asyncio.Event()

        def on_report(_: Any) -> None:
            nonlocal runs
            runs += 1
            first_run.set()

        worker = Worker(engine, [CRM], on_report=on_report, wake_on_queue="auto")
        task = asyncio.create_task(worker.run(handle_signals=False))
        await first_run.wait()
        assert worker.listener is not None, "wake on queue is off"
        await worker.listener.listening.wait()

        from_commit: list[float] = []
        from_call: list[float] = []
        for contact_id in ids:
            called = time.perf_counter()
            result = await host.queue(CRM, [contact_id])
            committed = time.perf_counter()
            assert result.queued == 1, result
            arrived = await asyncio.wait_for(fake.arrived.get(), timeout=60 * INTERVAL_MINUTES)
            from_commit.append(arrived - committed)
            from_call.append(arrived - called)
        # Let the run of the last selection finish before counting the idle worker's statements.
        for _ in range(600):
            if (await worker_store.summary(CRM)).counts["Complete"] == selections:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

        before = statements
        await asyncio.sleep(idle_seconds)
        idle = statements - before
        before = statements
        report = await engine.run_once(CRM)
        per_run = statements - before
        assert report.claimed == 0
        worker.stop()
        await task
    finally:
        await host.close()
        await worker_store.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ms = 1000.0
    print(
        f"selections: {selections}, worker interval {INTERVAL_MINUTES:g} min, {runs - 1} runs after the first"
    )
    print()
    print("| selection → first CRM request | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for label, values in (("from the commit", from_commit), ("from the queue call", from_call)):
        print(
            f"| {label} | {statistics.median(values) * ms:.1f} | "
            f"{_percentile(values, 0.95) * ms:.1f} | {max(values) * ms:.1f} |"
        )
    print()
    per_minute = idle / idle_seconds * 60 + per_run / INTERVAL_MINUTES
    print(
        f"idle worker: {idle} statements in {idle_seconds:g} s idle; {per_run} statements per interval "
        f"run with nothing due; {per_minute:.1f} statements per minute in all"
    )
    print(
        f"polling every second instead (for the same ~1 s latency): {per_run * 60} statements per "
        "minute"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selections", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(run(args.selections, args.idle_seconds))


if __name__ == "__main__":
    main()
