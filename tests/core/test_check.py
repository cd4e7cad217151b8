"""The check API: the core's table checks (real SQLite and PostgreSQL), an adapter's declared check, and
a third party's ``check_crm`` hook in a few lines; the same results through the router's ``GET check``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crmsync_core import CheckResult, Layout, Registry, Store, hookimpl, run_checks
from crmsync_core.check import CheckContext
from crmsync_core.ratelimit import Bucket, WindowKind
from crmsync_core.testing import SandboxSettings, sandbox_adapter_spec
from crmsync_core.web import sync_router

from .conftest import AdapterPlugin

LIMITED = SandboxSettings(sync_rate_limit_requests=10, sync_rate_limit_period_seconds=1.0)


async def _account_check(settings: SandboxSettings, context: CheckContext) -> list[CheckResult]:
    fields = [CheckResult("field NAME", "ok", "exists")]
    if context.scope == "fields":
        return fields
    return [CheckResult("credentials", "ok", "accepted"), *fields]


def registry(*plugins: object) -> Registry:
    spec = dataclasses.replace(sandbox_adapter_spec(), check=_account_check)
    return Registry(load_entry_points=False, plugins=[AdapterPlugin(spec), *plugins])


def statuses(results: list[CheckResult]) -> dict[str, str]:
    return {r.name: r.status for r in results}


async def test_the_table_and_the_shared_rate_limit_table_on_postgresql(postgres_url: str) -> None:
    store = await Store.connect(postgres_url, Layout.default(["sandbox"]), create=True)
    try:
        checked = await run_checks(
            ["sandbox"], registry=registry(), database=store, settings={"sandbox": LIMITED}
        )
        found = statuses(checked["sandbox"])
        assert found["table"] == "ok" and found["credentials"] == "ok"
        assert found["shared rate limit"] == "problem"
        [shared] = [r for r in checked["sandbox"] if r.name == "shared rate limit"]
        assert "CREATE TABLE crmsync_rate_slots" in shared.fix
        # The check created nothing; the first shared reservation does.
        assert (
            statuses(
                (
                    await run_checks(
                        ["sandbox"],
                        registry=registry(),
                        database=store,
                        settings={"sandbox": LIMITED},
                    )
                )["sandbox"]
            )["shared rate limit"]
            == "problem"
        )
        await store.rate_ledger().lease(
            "sandbox", Bucket("sandbox", 10, 1.0, WindowKind.SLIDING), 1, [], 0.0
        )
        again = await run_checks(
            ["sandbox"], registry=registry(), database=postgres_url, settings={"sandbox": LIMITED}
        )
        assert all(r.ok for r in again["sandbox"]), again
    finally:
        await store.close()


async def test_a_table_without_the_crms_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    await (await Store.connect(url, Layout.default(["other"]), create=True)).close()
    checked = await run_checks(
        ["sandbox"], registry=registry(), database=url, layout=Layout.default(["sandbox"])
    )
    [table] = [r for r in checked["sandbox"] if r.name == "table"]
    assert table.status == "problem"
    assert "sandbox_sync_status" in table.detail and "crmsync schema" in table.fix
    assert statuses(checked["sandbox"])["shared rate limit"] == "info"  # SQLite: one worker


async def test_a_third_party_adds_checks_in_a_few_lines() -> None:
    class ListCheck:
        @hookimpl
        def check_crm(self, crm: str, settings: Any, context: CheckContext) -> Any:
            return [CheckResult("house rule", "problem", "no list", fix="set one")]

    class AsyncCheck:
        @hookimpl
        def check_crm(self, crm: str, settings: Any, context: CheckContext) -> Any:
            async def later() -> list[CheckResult]:
                return [CheckResult("async rule", "ok", "fine")]

            return later()

    class Broken:
        @hookimpl
        def check_crm(self, crm: str, settings: Any, context: CheckContext) -> Any:
            raise RuntimeError("oops")

    checked = await run_checks(["sandbox"], registry=registry(ListCheck(), AsyncCheck(), Broken()))
    found = statuses(checked["sandbox"])
    assert found["house rule"] == "problem" and found["async rule"] == "ok"
    assert any(name.startswith("plugin ") and status == "problem" for name, status in found.items())


async def test_an_unknown_crm_is_one_problem_line() -> None:
    checked = await run_checks(["nope"], registry=registry())
    [only] = checked["nope"]
    assert only.status == "problem" and "no adapter" in only.detail


async def test_the_router_serves_the_checks(sqlite_url: str) -> None:
    store = await Store.connect(sqlite_url, Layout.default(["sandbox"]), create=True)
    app = FastAPI()
    app.include_router(sync_router(store, registry=registry()))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            answer = await client.get("/api/v3/contacts/sandbox/check")
    finally:
        await store.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["crm"] == "sandbox" and body["ready"] is True
    assert {c["name"] for c in body["checks"]} >= {"settings", "table", "credentials", "field NAME"}


@pytest.fixture(autouse=True)
def _no_sandbox_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SANDBOX_API_KEY",):
        monkeypatch.delenv(name, raising=False)
