"""Benchmarks of the core on PostgreSQL (issue 2, item 11). Each prints one markdown table row.

    .venv/bin/python -m bench.core throughput --contacts 100000   (a) engine, sandbox adapter, batches of 100
    .venv/bin/python -m bench.core baseline --contacts 10000      (b) claim 10, one request + one transaction each
    .venv/bin/python -m bench.core compare --contacts 100000      (a) and (b) in one run, and their ratio
    .venv/bin/python -m bench.core filter --contacts 1000000      (c) queue by filter over N contacts
    .venv/bin/python -m bench.core memory                         (d) peak RSS of (a) at 100,000 and 1,000,000

Each run creates its own database on the local server (CRMSYNC_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test for the admin connection) and drops it afterwards. Seeding uses
``generate_series`` and is not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import sqlalchemy as sa

from crmsync_core import ContactFilter, Engine, Layout, Registry, Store, hookimpl
from crmsync_core.history import HistorySettings
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import Event
from crmsync_core.store import Resolution
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec

ADMIN_URL = os.environ.get(
    "CRMSYNC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CRM = "sandbox"


class _Plugin:
    def __init__(self, crm: SandboxCrm) -> None:
        self.spec = sandbox_adapter_spec(crm, max_batch_size=100)

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(self.spec)


@asynccontextmanager
async def fresh_store(contacts: int, *, queued: bool) -> AsyncIterator[Store]:
    name = f"crmsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    store = await Store.connect(url, layout=Layout.default([CRM]), create=True)
    try:
        with psycopg.connect(
            sa.make_url(url).set(drivername="postgresql").render_as_string(False)
        ) as conn:
            status = "'Queued', 'Queued', now()" if queued else "'New', NULL, NULL"
            conn.execute(
                f"""
                INSERT INTO contacts (id, email, name, email_type, has_gmail, domain_id, page_id,
                                      {CRM}_sync_status, {CRM}_processing_status, {CRM}_next_attempt_at)
                SELECT gen_random_uuid(), 'person' || g || '@example' || (g %% 10) || '.com',
                       'Person ' || g, (ARRAY['SERVICE','CORPORATE','FREE','UNKNOWN'])[g %% 4 + 1],
                       g %% 7 = 0, gen_random_uuid(), gen_random_uuid(), {status}
                FROM generate_series(1, %s) AS g
                """,
                (contacts,),
            )
            conn.execute("ANALYZE contacts")
        yield store
    finally:
        await store.close()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def throughput(contacts: int, history: bool | None = None) -> dict[str, float]:
    """(a): the engine drains N due contacts through a zero-latency adapter, 100 per batch.

    ``history`` turns run history on or off (default: ``CRMSYNC_HISTORY``)."""
    async with fresh_store(contacts, queued=True) as store:
        if history is not None:
            store.history_settings = HistorySettings(history=history)
        crm = SandboxCrm(remember=False)
        engine = Engine(
            store,
            registry=Registry(load_entry_points=False, plugins=[_Plugin(crm)]),
            settings={CRM: SandboxSettings(sync_concurrency=4)},
            request_retry=NO_WAIT,
        )
        started, cpu = time.perf_counter(), time.process_time()
        report = await engine.run_once(CRM)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.synced == contacts, report.as_dict()
        database_cpu = await backends_cpu(store)
        assert (await store.summary(CRM)).due == 0
    return {
        "contacts": contacts,
        "seconds": elapsed,
        "per_second": contacts / elapsed,
        "cpu": cpu,
        "database_cpu": database_cpu,
    }


async def backends_cpu(store: Store) -> float:
    """CPU seconds the PostgreSQL backends of ``store``'s database have used so far (the server runs on
    this machine: ``/proc/<pid>/stat`` of each, read while the pool's connections are still open)."""
    async with store.engine.connect() as conn:
        pids = (
            await conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        ).scalars()
        return sum(_process_cpu(pid) for pid in pids)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used; 0 if it ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def baseline(contacts: int) -> dict[str, float]:
    """(b): the requirements' original design: claim 10, then one request and one transaction per contact."""
    async with fresh_store(contacts, queued=True) as store:
        crm = SandboxCrm(remember=False)
        adapter = _Plugin(crm).spec.factory(SandboxSettings(), _context())
        started = time.perf_counter()
        done = 0
        while True:
            claim = await store.claim(CRM, 10, now=_now())
            if not claim.contacts:
                break
            for contact in claim.contacts:
                (outcome,) = await adapter.push([contact])
                resolution = Resolution(
                    contact.id, Event.SUCCEED, remote_id=getattr(outcome, "remote_id", None)
                )
                await store.record(claim, [resolution], now=_now())
                done += 1
        elapsed = time.perf_counter() - started
        assert done == contacts
    return {"contacts": contacts, "seconds": elapsed, "per_second": contacts / elapsed}


async def queue_by_filter(contacts: int) -> list[dict[str, Any]]:
    """(c): queue-by-filter calls over N contacts, each timed on its own."""
    results = []
    async with fresh_store(contacts, queued=False) as store:
        for label, contact_filter in (
            ("email_type=FREE", ContactFilter(email_type="FREE")),
            ("email_contains=@example3", ContactFilter(email_contains="@example3")),
            (
                "has_gmail=true, name_contains=person 9",
                ContactFilter(has_gmail=True, name_contains="person 9"),
            ),
        ):
            started = time.perf_counter()
            result = await store.queue_where(CRM, contact_filter)
            results.append(
                {"filter": label, "seconds": time.perf_counter() - started, "queued": result.queued}
            )
    return results


def _context() -> Any:
    from crmsync_core.adapter import AdapterContext

    return AdapterContext.for_testing()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def history_cost(contacts: int, rounds: int) -> None:
    """Issue 15: (a) with run history off and on, alternating in one process, so that the load of a
    shared machine falls on both alike; the medians and the cost of history, in wall time and in CPU
    (this process's, and this process's with the database's: CPU depends far less on the load)."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for round_ in range(rounds):
        for on in (False, True) if round_ % 2 == 0 else (True, False):
            runs[on].append(await throughput(contacts, history=on))

    def median(on: bool, figure: str) -> float:
        if figure == "total_cpu":
            return statistics.median(r["cpu"] + r["database_cpu"] for r in runs[on])
        return statistics.median(r[figure] for r in runs[on])

    print(
        "| history | runs | median s | median contacts/s | best contacts/s "
        "| median CPU s | median CPU + database CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for on in (False, True):
        seconds = median(on, "seconds")
        best = min(r["seconds"] for r in runs[on])
        print(
            f"| {'on' if on else 'off'} | {rounds} | {seconds:.2f} | {contacts / seconds:,.0f} | "
            f"{contacts / best:,.0f} | {median(on, 'cpu'):.2f} | {median(on, 'total_cpu'):.2f} |"
        )
    costs = {
        figure: 100 * (median(True, figure) - median(False, figure)) / median(False, figure)
        for figure in ("seconds", "cpu", "total_cpu")
    }
    print(
        f"\nhistory costs {costs['seconds']:+.1f} % of the median run time, {costs['cpu']:+.1f} % of "
        f"this process's CPU, {costs['total_cpu']:+.1f} % of its CPU with the database's"
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory() -> None:
    """(d): peak RSS of (a), each size in a fresh process."""
    print("| contacts | seconds | contacts/s | peak RSS (MB) |\n|---:|---:|---:|---:|")
    for size in (100_000, 1_000_000):
        out = subprocess.run(
            [sys.executable, "-m", "bench.core", "throughput", "--contacts", str(size), "--rss"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.core")
    parser.add_argument(
        "what", choices=["throughput", "baseline", "compare", "filter", "memory", "history"]
    )
    parser.add_argument("--rounds", type=int, default=6, help="history: runs with each setting")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--baseline-contacts", type=int, default=10_000)
    parser.add_argument("--rss", action="store_true", help="print peak RSS too")
    args = parser.parse_args()
    if args.what == "memory":
        memory()
        return
    if args.what == "history":
        asyncio.run(history_cost(args.contacts, args.rounds))
        return
    if args.what == "throughput":
        r = asyncio.run(throughput(args.contacts))
        row = f"| {r['contacts']:,.0f} | {r['seconds']:.2f} | {r['per_second']:,.0f} |"
        print(row + (f" {peak_rss_mb():.0f} |" if args.rss else ""))
    elif args.what == "baseline":
        r = asyncio.run(baseline(args.contacts))
        print(f"| baseline | {r['contacts']:,.0f} | {r['seconds']:.2f} | {r['per_second']:,.0f} |")
    elif args.what == "compare":
        a = asyncio.run(throughput(args.contacts))
        b = asyncio.run(baseline(args.baseline_contacts))
        print("| design | contacts | seconds | contacts/s |\n|---|---:|---:|---:|")
        print(
            f"| crmsync engine, batches of 100 | {a['contacts']:,.0f} | {a['seconds']:.2f} | {a['per_second']:,.0f} |"
        )
        print(
            f"| original: claim 10, 1 request + 1 transaction each | {b['contacts']:,.0f} | {b['seconds']:.2f} | {b['per_second']:,.0f} |"
        )
        print(f"\nratio (a)/(b): {a['per_second'] / b['per_second']:.1f}x")
    else:
        print(f"over {args.contacts:,} contacts\n\n| filter | seconds | queued |\n|---|---:|---:|")
        for r in asyncio.run(queue_by_filter(args.contacts)):
            print(f"| {r['filter']} | {r['seconds']:.2f} | {r['queued']:,} |")


if __name__ == "__main__":
    main()
