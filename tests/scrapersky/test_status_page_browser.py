"""The status page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``), served by
uvicorn from the example ScraperSky app after a demo-like run on ScraperSky's table.

A screenshot of the page is saved in ``$CRMSYNC_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.ext.asyncio import AsyncEngine

from crmsync_core import Engine, Registry, Store
from crmsync_core.status import SyncStatus
from crmsync_core.testing import SandboxCrm

pytestmark = pytest.mark.postgres

TOKEN = "browser-token"
HOSTILE_NAME = "<script>document.title='owned'</script><b>Bold</b>"
CRMS = ["brevo", "hubspot"]


@pytest.fixture
def driver() -> str:
    """One database driver is enough here: asyncpg, as ScraperSky runs it."""
    return "asyncpg"


@pytest.fixture
def crms() -> dict[str, SandboxCrm]:
    # HubSpot fails some requests transiently, as a real CRM does now and then.
    return {
        "brevo": SandboxCrm(),
        "hubspot": SandboxCrm(failure_rate=0.1, seed=7),
        "mautic": SandboxCrm(),
        "n8n": SandboxCrm(),
    }


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` on a loopback port, in a thread, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the app did not start"
        assert time.monotonic() < deadline, "the app did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium through its chromedriver (never a downloaded one)."""
    binary, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and chromedriver, (
        "the browser test needs Debian's chromium and chromium-driver: "
        "apt-get install chromium chromium-driver (.ci/run installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield browser
    finally:
        browser.quit()


def console_errors(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console's errors since the last call (reading empties the log)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def tiles(browser: webdriver.Chrome, crm: str) -> dict[str, int]:
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-crm="{crm}"]')
    found = {}
    for tile in section.find_elements(By.CSS_SELECTOR, "[data-count]"):
        label = tile.get_attribute("data-count")
        assert label is not None
        found[label] = int(tile.find_element(By.TAG_NAME, "b").text.replace(",", ""))
    return found


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CRMSYNC_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def demo_run(
    db: AsyncEngine, store: Store, sync_engine: Engine, insert: Callable[..., Any]
) -> list[uuid.UUID]:
    """Like ``crmsync demo``: 120 contacts, a few with rejected or missing e-mail addresses, one with a
    hostile name, queued for Brevo and HubSpot and synced."""
    ids = [uuid.uuid4() for _ in range(120)]

    def email(n: int) -> str:
        if n % 20 == 3:
            return f"bounce{n}@rejected.invalid"
        return "" if n % 40 == 7 else f"person{n}@acme.io"

    await insert(db, ids, email=email)
    hostile = uuid.uuid4()
    await insert(db, [hostile], email=lambda n: "hostile@acme.io", name=HOSTILE_NAME)
    for crm in CRMS:
        await store.queue(crm, [*ids, hostile])
        await sync_engine.run_once(crm)
    return [*ids, hostile]


def submit(browser: webdriver.Chrome, send: Callable[[], None]) -> None:
    """Submit a form and wait for the page it answers with: a click returns before the browser has
    navigated, and the old page's elements would be read."""
    old: WebElement = browser.find_element(By.TAG_NAME, "html")
    send()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(old))


async def test_the_status_page_in_chromium(
    scrapersky_url: str,
    db: AsyncEngine,
    store: Store,
    sync_engine: Engine,
    insert: Callable[..., Any],
    registry: Registry,
    example: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ids = await demo_run(db, store, sync_engine, insert)
    expected = {crm: await store.summary(crm) for crm in CRMS}
    assert expected["brevo"].counts[SyncStatus.ERROR] == 6
    monkeypatch.setenv("API_TOKEN", TOKEN)
    app = example.create_app(scrapersky_url, registry=registry)

    with served(app) as origin, chromium() as browser:
        page = f"{origin}/api/v3/contacts/status"

        # Without the host's credentials: refused, by the browser and by any client.
        browser.get(page)
        assert "not authenticated" in browser.find_element(By.TAG_NAME, "body").text
        assert browser.find_elements(By.CSS_SELECTOR, "section.crm") == []
        async with httpx.AsyncClient() as client:
            assert (await client.get(page)).status_code == 401
            assert (await client.post(f"{page}/brevo/pause")).status_code == 401
        console_errors(browser)  # the refused load is logged; start afresh

        # The host's bearer token on every request the browser makes, as its login would.
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}}
        )
        browser.get(page)
        assert browser.title == "crmsync status"
        assert console_errors(browser) == []
        for crm in CRMS:
            shown = tiles(browser, crm)
            summary = expected[crm]
            assert {s.value: shown[s.value] for s in SyncStatus} == {
                s.value: summary.counts[s] for s in SyncStatus
            }
            assert shown["total"] == len(ids)
            assert shown["due now"] == summary.due
            assert shown["retrying"] == summary.retrying
        assert tiles(browser, "mautic")["New"] == len(ids)
        # From run history: the chart and one recent run per synced CRM.
        for crm in CRMS:
            section = browser.find_element(By.CSS_SELECTOR, f'section[data-crm="{crm}"]')
            chart = section.find_element(By.CSS_SELECTOR, "svg.chart")
            complete = expected[crm].counts[SyncStatus.COMPLETE]
            failed = expected[crm].counts[SyncStatus.ERROR]
            assert chart.get_attribute("aria-label") == (
                f"{complete} synced and {failed} failed in the last 24 hours"
            )
            (run,) = section.find_elements(By.CSS_SELECTOR, "tbody tr:not(.failure)")
            assert run.find_elements(By.CSS_SELECTOR, "td.num")[0].text == str(complete)
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, height + 200)
        browser.save_screenshot(str(artifacts(tmp_path) / "status-page.png"))
        browser.set_window_size(1280, 1000)

        # The contact lookup, and a hostile name shown as text.
        search = browser.find_element(By.CSS_SELECTOR, "input[name=contact]")
        search.send_keys("HOSTILE@acme.io")
        submit(browser, search.submit)
        contact = browser.find_element(By.CSS_SELECTOR, "#lookup")
        assert contact.get_attribute("data-contact") == str(ids[-1])
        assert contact.find_element(By.TAG_NAME, "h2").text == HOSTILE_NAME
        assert contact.find_elements(By.TAG_NAME, "b") == []
        assert browser.title == "crmsync status"
        for crm in CRMS:
            state = (await store.states(crm, [ids[-1]]))[ids[-1]]
            row = contact.find_element(By.CSS_SELECTOR, f'tr[data-crm="{crm}"] .sync-status')
            assert row.text == state.sync_status.value
        # Brevo fails nothing transiently here: its one attempt synced the contact.
        assert "brevo synced" in contact.find_element(By.CSS_SELECTOR, "table.attempts").text

        # Retry the Error contacts of Brevo's most common reason: back in the queue.
        browser.get(page)
        brevo = browser.find_element(By.CSS_SELECTOR, 'section[data-crm="brevo"]')
        submit(browser, brevo.find_element(By.CSS_SELECTOR, "tr.failure button[name=retry]").click)
        notice = browser.find_element(By.CSS_SELECTOR, ".notice").text
        assert notice == "brevo: 6 Error contacts queued again"
        after = tiles(browser, "brevo")
        assert after["Error"] == 0
        assert after["Selected"] == 6
        assert console_errors(browser) == []
        # Pause a CRM with a reason, then resume it.
        mautic = browser.find_element(By.CSS_SELECTOR, 'section[data-crm="mautic"]')
        mautic.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("list <migration>")
        submit(browser, mautic.find_element(By.CSS_SELECTOR, "button[name=pause]").click)
        mautic = browser.find_element(By.CSS_SELECTOR, 'section[data-crm="mautic"]')
        assert mautic.find_element(By.CSS_SELECTOR, ".badge").text == "paused by a user"
        assert "list <migration>" in mautic.find_element(By.CSS_SELECTOR, ".paused-reason").text
        paused = await store.circuit("mautic")
        assert paused is not None
        assert paused.paused_by_user == "list <migration>"
        submit(browser, mautic.find_element(By.CSS_SELECTOR, "button[name=resume]").click)
        assert browser.find_element(By.CSS_SELECTOR, ".notice").text == "mautic: resumed"
        assert await store.circuit("mautic") is None
        assert console_errors(browser) == []

        bounced = [i for n, i in enumerate(ids[:-1]) if n % 20 == 3]
        states = await store.states("brevo", bounced)
        assert {s.sync_status for s in states.values()} == {SyncStatus.SELECTED}
