"""Brevo: bulk import against single upserts, through the engine, at Brevo's real rate limit.

    .venv/bin/python -m bench.brevo_import [--contacts 10000] [--sample 200] [--import-delay 5]

10,000 due contacts in a SQLite store are pushed to the fake Brevo, which enforces 10 requests/s with
its ``x-sib-ratelimit-*`` headers, while the engine's own limiter allows Brevo's 10/s. Import mode runs
in full, in real time; each import process takes ``--import-delay`` seconds to complete at the fake
(an assumption: Brevo does not publish import latencies). Single mode (one ``POST /contacts`` per
contact) is measured on ``--sample`` contacts and extrapolated linearly: at 10 requests/s it is bound by
the rate limit, not by anything that grows with the batch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import crmsync_brevo.plugin
from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_brevo.fake import SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core import Engine, Layout, Store, SyncStatus
from crmsync_core.plugins import Registry
from crmsync_core.ratelimit import RateLimit
from crmsync_core.testing import contact_rows

KEY = "xkeysib-bench-0123456789abcdef"
BREVO_LIMIT = RateLimit(10, 1.0)


async def run(mode: str, count: int, *, import_delay: float, workdir: Path) -> dict[str, Any]:
    store = await Store.connect(
        f"sqlite+aiosqlite:///{workdir / f'{mode}.sqlite3'}",
        layout=Layout.default(["brevo"]),
        create=True,
    )
    try:
        rows = list(contact_rows(count, seed=42))
        await store.add_contacts(rows)
        await store.queue("brevo", [row["id"] for row in rows])
        fake = FakeBrevo(api_key=KEY, rate_limit=BREVO_LIMIT, import_delay_seconds=import_delay)
        settings = BrevoSettings(
            api_key=KEY,
            list_id=SANDBOX_LIST_ID,
            api_base_url=SANDBOX_BASE_URL,
            # single mode: never import; import mode: the default threshold (100)
            import_threshold=10**9 if mode == "single" else 100,
        )
        engine = Engine(
            store,
            registry=Registry(load_entry_points=False, plugins=[crmsync_brevo.plugin]),
            settings={"brevo": settings},
            transports={"brevo": fake.transport()},
        )
        started = time.perf_counter()
        report = await engine.run_once("brevo")
        seconds = time.perf_counter() - started
        summary = await store.summary("brevo")
        return {
            "mode": mode,
            "contacts": count,
            "seconds": seconds,
            "complete": summary.counts.get(SyncStatus.COMPLETE, 0),
            "requests": len(fake.requests),
            "imports": len(fake.requests_to("POST", "/contacts/import")),
            "answered_429": fake.rate_limited,
            "stopped": report.stopped,
        }
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--import-delay", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        bulk = await run("import", args.contacts, import_delay=args.import_delay, workdir=Path(tmp))
        single = await run("single", args.sample, import_delay=args.import_delay, workdir=Path(tmp))

    extrapolated = single["seconds"] * args.contacts / args.sample
    print(
        f"contacts: {args.contacts}, rate limit: {BREVO_LIMIT.requests}/s, "
        f"import delay at the fake: {args.import_delay:g} s"
    )
    print("| mode | contacts run | wall time | Complete | requests | imports | 429 answers |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in (bulk, single):
        print(
            f"| {result['mode']} | {result['contacts']} | {result['seconds']:.1f} s | "
            f"{result['complete']} | {result['requests']} | {result['imports']} | "
            f"{result['answered_429']} |"
        )
        assert result["stopped"] is None, result["stopped"]
        assert result["complete"] == result["contacts"], result
    print(
        f"\nsingle mode for {args.contacts} contacts (extrapolated from {args.sample}): "
        f"{extrapolated:.0f} s; import mode: {bulk['seconds']:.1f} s; "
        f"ratio {extrapolated / bulk['seconds']:.0f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
