"""Rate limits at the ceiling (issue 12), against loopback fakes that enforce the vendor's window and answer
429 over it. Each command prints its figures as markdown.

    .venv/bin/python -m bench.ratelimit one --seconds 65        one worker, Brevo 10/s, default settings
    .venv/bin/python -m bench.ratelimit fleet --seconds 40      3 worker processes: Brevo 10/s, HubSpot 100/10 s
    .venv/bin/python -m bench.ratelimit polls --seconds 72      4 imports in flight, ``other`` 100/h scaled to 100/36 s
    .venv/bin/python -m bench.ratelimit single --contacts 2000  zero-limit fake: engine vs a plain httpx loop,
                                                                on ScraperSky's table (--fake separate|in-process|both)

Each run creates its own database on the local server (CRMSYNC_BENCH_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test) and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import psycopg
import sqlalchemy as sa

from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_core import Engine, Layout, RateLimit, Store
from crmsync_core.ratelimit import Bucket, Limiter, RateLimits
from crmsync_hubspot import FakeHubspot, HubspotSettings

ADMIN_URL = os.environ.get(
    "CRMSYNC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CRMS = ["brevo", "hubspot"]


@contextlib.contextmanager
def empty_database() -> Iterator[str]:
    """A new, empty database on the local server, dropped afterwards; yields its ``postgresql://`` URL."""
    name = f"crmsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def database(contacts: int, crm: str, *, domain: str = "example.com") -> AsyncIterator[str]:
    with empty_database() as plain:
        url = plain.replace("postgresql://", "postgresql+psycopg://", 1)
        store = await Store.connect(url, layout=Layout.default(CRMS), create=True)
        await store.close()
        with psycopg.connect(plain) as conn:
            conn.execute(
                f"""
                INSERT INTO contacts (id, email, name, {crm}_sync_status, {crm}_processing_status)
                SELECT gen_random_uuid(), 'person' || g || '@{domain}', 'Person ' || g,
                       'Queued', 'Queued'
                FROM generate_series(1, %s) AS g
                """,
                (contacts,),
            )
        yield url


class Logged:
    """A fake behind a loopback port, logging when each request arrived and how it was answered."""

    def __init__(
        self, handle: Callable[[httpx.Request], Awaitable[httpx.Response]], base: str
    ) -> None:
        self._handle = handle
        self.base_path = base
        self.arrivals: list[tuple[float, str, int]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        arrived = time.monotonic()
        response = await self._handle(request)
        self.arrivals.append((arrived, request.url.path, response.status_code))
        return response

    def serve(self) -> Any:
        # FakeBrevo's loopback server only needs ``handle`` and ``base_path``.
        return FakeBrevo.serve(cast(Any, self))


def most_in_any_window(times: Sequence[float], period: float) -> int:
    ordered = sorted(times)
    best, low = 0, 0
    for high, t in enumerate(ordered):
        while ordered[low] <= t - period:
            low += 1
        best = max(best, high - low + 1)
    return best


def settings_for(crm: str, url: str, **extra: Any) -> Any:
    if crm == "brevo":
        return BrevoSettings(api_key=FakeBrevo().api_key, api_base_url=url, **extra)
    return HubspotSettings(api_key="pat-na1-fake-0000-hubspot-token", api_base_url=url, **extra)


async def drain(
    db: str,
    crm: str,
    settings: Any,
    *,
    limiter: Any = None,
    deadline: float,
    layout: Layout | None = None,
) -> tuple[int, Any]:
    store = await Store.connect(db, layout=layout or Layout.default(CRMS))
    engine = Engine(
        store,
        settings={crm: settings},
        rate_limiters={crm: limiter} if limiter is not None else None,
    )
    synced = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), stop.set)
    try:
        while not stop.is_set():
            report = await engine.run_once(crm, stop=stop)
            synced += report.synced
            if report.claimed == 0:
                break
        return synced, engine._limiters.get(crm)
    finally:
        await store.close()


# -- one worker ------------------------------------------------------------------------------------------


async def one(seconds: float) -> None:
    # Brevo's default settings; the window kind the fake enforces is the strictest (sliding).
    fake = FakeBrevo(rate_limit=RateLimit(10, 1.0), window="sliding")
    logged = Logged(fake.handle, fake.base_path)
    contacts = int(seconds * 10 + 50)
    async with database(contacts, "brevo") as db, logged.serve() as url:
        started = time.monotonic()
        synced, limiter = await drain(
            db, "brevo", settings_for("brevo", url), deadline=started + seconds + 30
        )
    times = [t for t, path, status in logged.arrivals if "/contacts" in path]
    steady = [t for t in times if t >= times[0] + 5]  # after the first 5 s
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    late_429 = sum(1 for t, _, s in logged.arrivals if s == 429 and t >= times[0] + 5)
    print("| one worker, Brevo 10/s sliding, default settings | value |\n|---|---|")
    print(f"| contacts synced | {synced} in {times[-1] - times[0]:.1f} s |")
    print(f"| steady-state contacts/s (after 5 s) | {rate:.2f} = {rate / 10:.1%} of the ceiling |")
    print(f"| 429s (all / steady state) | {fake.rate_limited} / {late_429} |")
    print(f"| most requests in any 1 s window | {most_in_any_window(times, 1.0)} |")
    print(f"| database statements per request | {limiter.statements / len(times):.3f} |")
    print(f"| slots that expired unused (the event loop woke too late) | {limiter.expired} |")


# -- a fleet ---------------------------------------------------------------------------------------------


def worker(crm: str, url: str, db: str, seconds: float) -> None:
    extra = {"sync_scheduler_batch_size": 10 if crm == "brevo" else 1}
    synced, limiter = asyncio.run(
        drain(db, crm, settings_for(crm, url, **extra), deadline=time.monotonic() + seconds)
    )
    print(f"{synced} {limiter.statements if limiter else 0}", flush=True)


async def fleet_one(crm: str, seconds: float) -> None:
    if crm == "brevo":
        limit = RateLimit(10, 1.0)
        brevo = FakeBrevo(rate_limit=limit, window="sliding")
        logged = Logged(brevo.handle, brevo.base_path)
    else:
        limit = RateLimit(100, 10.0)
        hubspot = FakeHubspot(rate_limit=limit, clock=time.monotonic)
        logged = Logged(hubspot.handle, "")
    contacts = int(seconds * limit.per_second + 20)
    async with database(contacts, crm) as db, logged.serve() as url:
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.ratelimit",
                "worker",
                crm,
                url,
                db,
                str(seconds),
                stdout=subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outputs = [await p.communicate() for p in processes]
    counts = [out.decode().split() for out, _ in outputs]
    times = [t for t, path, _ in logged.arrivals]
    answered_429 = sum(1 for *_, s in logged.arrivals if s == 429)
    statements = sum(int(c[1]) for c in counts)
    span = times[-1] - times[0]
    print(
        f"| {crm} {limit.requests}/{limit.period_seconds:g} s sliding | "
        f"{'+'.join(c[0] for c in counts)} | {len(times)} in {span:.1f} s = "
        f"{len(times) / span / limit.per_second:.1%} of the ceiling | "
        f"{most_in_any_window(times, limit.period_seconds)} | {answered_429} | "
        f"{statements / len(times):.3f} |"
    )


async def fleet(seconds: float) -> None:
    print(
        "| 3 worker processes | contacts per worker | requests the fake saw | most in any window "
        "| 429s | statements per request |\n|---|---|---|---|---|---|"
    )
    await fleet_one("brevo", seconds)
    await fleet_one("hubspot", seconds)


# -- import polls ----------------------------------------------------------------------------------------


async def polls(seconds: float) -> None:
    # Brevo's ``other`` bucket (100 per hour) scaled 100x: 100 per 36 s, on both sides. Imports take
    # 20 s at the fake, and the adapter polls from 0.05 s: the bucket alone holds the polls back.
    scaled = RateLimit(100, 36.0)
    fake = FakeBrevo(
        rate_limit=RateLimit(10, 1.0), other_rate_limit=scaled, import_delay_seconds=20.0
    )
    logged = Logged(fake.handle, fake.base_path)
    async with database(4000, "brevo") as db, logged.serve() as url:
        settings = settings_for(
            "brevo",
            url,
            list_id=2,
            sync_scheduler_batch_size=200,
            sync_concurrency=4,
            import_poll_interval_seconds=0.05,
            other_rate_limit_per_hour=10000,  # the same scaling for the adapter's poll spacing
        )
        store = await Store.connect(db, layout=Layout.default(CRMS))
        limits = RateLimits(
            (
                Bucket("contacts", 10, 1.0, paths=("/contacts",)),
                Bucket("other", scaled.requests, scaled.period_seconds),
            )
        )
        limiter = Limiter(limits, store.rate_ledger(), crm="brevo")
        await store.close()
        started = time.monotonic()
        await drain(db, "brevo", settings, limiter=limiter, deadline=started + seconds)
    processes = [t for t, path, _ in logged.arrivals if "/processes/" in path]
    rejected = sum(1 for _, path, s in logged.arrivals if "/processes/" in path and s == 429)
    imports = sum(1 for _, path, _ in logged.arrivals if path.endswith("/contacts/import"))
    span = processes[-1] - processes[0]
    print("| 4 imports in flight, `other` = 100 per 36 s (1 h scaled 100x) | value |\n|---|---|")
    print(f"| imports started | {imports} |")
    print(
        f"| polls | {len(processes)} in {span:.1f} s = {len(processes) / span * 36:.1f} per scaled hour |"
    )
    print(f"| most polls in any 36 s window | {most_in_any_window(processes, 36.0)} |")
    print(f"| polls answered 429 | {rejected} |")


# -- single-contact throughput ---------------------------------------------------------------------------


VARIANTS = (
    ("fleet-wide", "engine, default settings (fleet-wide limiter on PostgreSQL, at 1,000/s)"),
    ("in-process", "engine, in-process limiter at 1,000/s"),
    ("in-process-1", "engine, in-process limiter, `BREVO_SYNC_CONCURRENCY=1`"),
    ("plain", "plain keep-alive httpx loop, same fake"),
    ("plain-4", "plain httpx, 4 tasks on one client (as the engine's 4 lanes)"),
)
SCRAPERSKY_SQL = Path(__file__).resolve().parents[1] / "examples" / "scrapersky" / "contacts.sql"


@asynccontextmanager
async def scrapersky_database(
    contacts: int, *, domain: str, driver: str = "psycopg"
) -> AsyncIterator[str]:
    """A new database holding ScraperSky's own ``contacts`` table, with ``contacts`` queued for Brevo;
    yields its URL for ``driver`` (``psycopg`` or ScraperSky's ``asyncpg``)."""
    with empty_database() as plain:
        with psycopg.connect(plain) as conn:
            conn.execute(SCRAPERSKY_SQL.read_text())
            conn.execute(
                f"""
                INSERT INTO contacts (id, domain_id, page_id, email, name,
                                      brevo_sync_status, brevo_processing_status)
                SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
                       'person' || g || '@{domain}', 'Person ' || g, 'Queued', 'Queued'
                FROM generate_series(1, %s) AS g
                """,
                (contacts,),
            )
        yield plain.replace("postgresql://", f"postgresql+{driver}://", 1)


async def plain_loop(url: str, api_key: str, contacts: int, tasks: int, tag: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"api-key": api_key}) as client:

        async def loop(lane: int) -> None:
            for n in range(lane, contacts, tasks):
                body = {
                    "email": f"{tag}-{n}@example.com",
                    "attributes": {"FIRSTNAME": "X"},
                    "updateEnabled": True,
                }
                response = await client.post("/contacts", json=body)
                assert response.status_code in (201, 204)

        await asyncio.gather(*(loop(lane) for lane in range(tasks)))


def serve_fake() -> None:
    """The zero-limit Brevo fake in a process of its own, as a CRM is: prints its URL and API key, then
    answers each ``arrivals`` line on stdin with the arrival times (``time.monotonic``, which every
    process of the machine shares) of the contact upserts since the last one, as JSON."""

    async def run() -> None:
        fake = FakeBrevo(rate_limit=None, other_rate_limit=None)
        logged = Logged(fake.handle, fake.base_path)
        loop = asyncio.get_running_loop()
        async with logged.serve() as url:
            print(url, fake.api_key, flush=True)
            while (line := await loop.run_in_executor(None, sys.stdin.readline)) != "":
                if line.strip() == "arrivals":
                    times = [t for t, path, _ in logged.arrivals if path.endswith("/contacts")]
                    logged.arrivals.clear()
                    print(json.dumps(times), flush=True)

    asyncio.run(run())


class Fake:
    """Where the single-contact benchmark's fake runs: its own process, or this one (``in_process``)."""

    def __init__(self, in_process: bool) -> None:
        self.in_process = in_process
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> tuple[str, str]:
        if self.in_process:
            fake = FakeBrevo(rate_limit=None, other_rate_limit=None)
            self._logged = Logged(fake.handle, fake.base_path)
            url = await self._stack.enter_async_context(self._logged.serve())
            return url, fake.api_key
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.ratelimit",
            "fake",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=1 << 24,  # a line of arrival times can be long
        )
        assert self._process.stdout is not None
        url, api_key = (await self._process.stdout.readline()).decode().split()
        return url, api_key

    async def arrivals(self) -> list[float]:
        if self.in_process:
            times = [t for t, path, _ in self._logged.arrivals if path.endswith("/contacts")]
            self._logged.arrivals.clear()
            return times
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(b"arrivals\n")
        await self._process.stdin.drain()
        return cast(list[float], json.loads(await self._process.stdout.readline()))

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        if not self.in_process:
            assert self._process.stdin is not None
            self._process.stdin.close()
            await self._process.wait()


async def single_run(contacts: int, in_process: bool, rounds: int, driver: str) -> list[str]:
    """Each variant ``rounds`` times, interleaved (the machine's load changes during a run); the
    table's rows, with the median of each figure."""
    # Per variant: contacts/s between the first and the last contact the fake received (the steady
    # rate), over the whole run from before the client (or the engine's store) existed, and the CPU
    # this process spent per contact (the fake's share included when it runs here).
    steady: dict[str, list[float]] = {}
    whole: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    statements = 0
    fake = Fake(in_process)
    async with fake as (url, api_key):
        for round_ in range(rounds):
            for variant, _ in VARIANTS if round_ % 2 == 0 else reversed(VARIANTS):
                await fake.arrivals()  # forget anything before this variant
                if variant.startswith("plain"):
                    started = time.perf_counter(), time.process_time()
                    tasks = 4 if variant == "plain-4" else 1
                    await plain_loop(url, api_key, contacts, tasks, f"{variant}{round_}")
                    done = contacts
                else:
                    # Brevo's buckets stay on, at 1,000/s so that nothing waits: the limiter's cost.
                    settings = settings_for(
                        "brevo",
                        url,
                        sync_rate_limit_requests=1000,
                        sync_rate_limit_period_seconds=1,
                        sync_shared_rate_limit=variant == "fleet-wide",
                        sync_concurrency=1 if variant == "in-process-1" else 4,
                    )
                    async with scrapersky_database(
                        contacts, domain=f"{variant}{round_}.com", driver=driver
                    ) as db:
                        started = time.perf_counter(), time.process_time()
                        done, limiter = await drain(
                            db,
                            "brevo",
                            settings,
                            deadline=time.monotonic() + 600,
                            layout=Layout.scrapersky(),
                        )
                        if variant == "fleet-wide":
                            statements += limiter.statements
                elapsed = time.perf_counter() - started[0]
                times = await fake.arrivals()
                steady.setdefault(variant, []).append((len(times) - 1) / (times[-1] - times[0]))
                whole.setdefault(variant, []).append(done / elapsed)
                cpu.setdefault(variant, []).append((time.process_time() - started[1]) / done * 1e6)
    rows = []
    for variant, label in VARIANTS:
        s, w, c = (statistics.median(figures[variant]) for figures in (steady, whole, cpu))
        plain_s, plain_w, plain_c = (
            statistics.median(figures["plain"]) for figures in (steady, whole, cpu)
        )
        rows.append(
            f"| {label} | {s:.0f} | {s / plain_s:.0%} | {w:.0f} | {w / plain_w:.0%} | {c:.0f} "
            f"| {plain_c / c:.0%} |"
        )
    rows.append(
        f"| ledger statements per request (default settings) | {statements / (rounds * contacts):.3f} "
        "| | | | | |"
    )
    return rows


async def single(contacts: int, harness: str, rounds: int, driver: str) -> None:
    heading = (
        "| steady contacts/s | vs plain | whole run, contacts/s | vs plain | CPU µs per contact "
        "| plain's CPU / this |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for in_process in {"separate": (False,), "in-process": (True,), "both": (False, True)}[harness]:
        where = "in this process" if in_process else "in its own process"
        print(
            f"| {contacts} contacts, {driver}, fake {where}, median of {rounds} interleaved {heading}"
        )
        print("\n".join(await single_run(contacts, in_process, rounds, driver)))
        print()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.ratelimit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, default in (("one", 65.0), ("fleet", 40.0), ("polls", 72.0)):
        sub.add_parser(name).add_argument("--seconds", type=float, default=default)
    single_parser = sub.add_parser("single")
    single_parser.add_argument("--contacts", type=int, default=2000)
    single_parser.add_argument("--rounds", type=int, default=3)
    single_parser.add_argument(
        "--driver",
        choices=("psycopg", "asyncpg"),
        default="psycopg",
        help="ScraperSky's is asyncpg",
    )
    single_parser.add_argument(
        "--fake",
        choices=("separate", "in-process", "both"),
        default="both",
        help="where the fake runs: its own process (as a CRM does), the benchmark's, or each in turn",
    )
    sub.add_parser("fake")
    w = sub.add_parser("worker")
    for arg in ("crm", "url", "db"):
        w.add_argument(arg)
    w.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.crm, args.url, args.db, args.seconds)
    elif args.command == "single":
        asyncio.run(single(args.contacts, args.fake, args.rounds, args.driver))
    elif args.command == "fake":
        serve_fake()
    else:
        asyncio.run({"one": one, "fleet": fleet, "polls": polls}[args.command](args.seconds))


if __name__ == "__main__":
    main()
