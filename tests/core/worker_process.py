"""A worker in its own process, for the crash and shutdown tests: ``python worker_process.py URL MODE``.

MODE ``hang`` claims one batch and hangs in the CRM call (to be killed); MODE ``slow`` runs a worker whose
CRM answers each batch after half a second (to be stopped with SIGTERM).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from crmsync_core import Engine, Layout, Registry, Store, Worker, hookimpl
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec


class Plugin:
    def __init__(self, latency: float) -> None:
        self.spec = sandbox_adapter_spec(SandboxCrm(latency_seconds=latency), max_batch_size=10)

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(self.spec)


async def main(url: str, mode: str) -> None:
    store = await Store.connect(url, layout=Layout.default(["sandbox"]))
    latency = 3600.0 if mode == "hang" else 0.5
    engine = Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[Plugin(latency)]),
        settings={"sandbox": SandboxSettings(sync_concurrency=2)},
        request_retry=NO_WAIT,
    )
    print("ready", flush=True)
    if mode == "hang":
        await engine.run_once("sandbox")
    else:
        await Worker(engine, ["sandbox"], interval=0.1).run()
    await store.close()
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
