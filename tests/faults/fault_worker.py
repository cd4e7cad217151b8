"""A crmsync worker in its own process, for the fault-injection tests.

``python fault_worker.py DATABASE_URL CRM forever|once``: the installed adapters (entry points) with
settings from the environment, as in production, but with inside-request retries scaled down to
milliseconds. ``forever`` runs :class:`~crmsync_core.Worker` (SIGINT/SIGTERM stop it) and prints each run
report as a JSON line; ``once`` runs one pass and exits 1 when the run stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys

from crmsync_core import Engine, Layout, RequestRetry, RunReport, Store, Worker

SCALED = RequestRetry(attempts=3, initial_wait=0.05, max_wait=0.2, max_rate_limit_wait=5.0)


async def main(url: str, crm: str, mode: str) -> int:
    store = await Store.connect(url, layout=Layout.default())
    engine = Engine(store, request_retry=SCALED)

    def on_report(report: RunReport) -> None:
        print(json.dumps(report.as_dict()), flush=True)

    print("ready", flush=True)
    try:
        if mode == "once":
            report = await engine.run_once(crm)
            on_report(report)
            return 1 if report.stopped else 0
        worker = Worker(engine, [crm], interval=0.1, on_report=on_report)
        await worker.run()
        print("abandoned" if worker.abandoned else "stopped cleanly", flush=True)
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3])))
