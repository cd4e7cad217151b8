"""The adapter SDK (crmsync_core.sdk.BatchAdapter) against a CRM faked at the HTTP transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from crmsync_core.adapter import AdapterContext, ReportedOutcomes, collect_outcomes
from crmsync_core.contacts import Contact, Outcome, PermanentFailure, Skipped, Synced
from crmsync_core.errors import AuthenticationError, ConfigurationError, FatalError
from crmsync_core.sdk import BatchAdapter, Sent, cut, json_bytes
from crmsync_core.settings import SyncSettings


class DemoSettings(SyncSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")
    api_key: SecretStr | None = SecretStr("demo-secret-key")
    base_url: str | None = "https://demo.test/api"


class DemoAdapter(BatchAdapter[DemoSettings]):
    crm, path, batch_size = "demo", "/upsert", 3
    base_url_setting, api_key_setting = "DEMO_BASE_URL", "DEMO_API_KEY"

    def item(self, contact: Contact) -> Any:
        return {"email": contact.email}

    def outcomes(self, response: httpx.Response, sent: Sequence[Sent]) -> list[Outcome]:
        answer = self.client.json(response)
        by_email = self.by_email(sent)
        found: list[Outcome] = []
        for result in answer["results"]:
            item = by_email[result["email"]]
            if "id" in result:
                found.append(Synced(item.contact.id, str(result["id"])))
            else:
                found.append(PermanentFailure(item.contact.id, f"demo: {result['error']}"))
        return found


class Bisecting(DemoAdapter):
    bisect_rejections = True
    bisection_requests = 8


def people(count: int) -> list[Contact]:
    return [Contact(id=i, email=f"p{i}@example.com") for i in range(count)]


def accept_all(request: httpx.Request) -> httpx.Response:
    items = json.loads(request.content)
    return httpx.Response(200, json={"results": [{"email": i["email"], "id": 7} for i in items]})


Handler = Callable[[httpx.Request], httpx.Response]


async def push(
    handler: Handler,
    contacts: Sequence[Contact],
    *,
    adapter: type[DemoAdapter] = DemoAdapter,
    settings: DemoSettings | None = None,
) -> tuple[list[Outcome], ReportedOutcomes, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    context = AdapterContext.for_testing(httpx.MockTransport(record))
    instance = adapter(settings or DemoSettings(), context)
    reported = ReportedOutcomes(contacts)
    try:
        outcomes = await collect_outcomes(instance, contacts, crm="demo", reported=reported)
    finally:
        await instance.aclose()
    return outcomes, reported, seen


async def test_contacts_sharing_an_email_are_sent_once_and_share_its_outcome() -> None:
    contacts = [
        Contact(id=1, email="ada@example.com"),
        Contact(id=2, email=" ADA@Example.com "),
        Contact(id=3, email="not an address"),
        Contact(id=4, email="bob@example.com"),
    ]
    outcomes, reported, seen = await push(accept_all, contacts)
    assert [json.loads(r.content) for r in seen] == [
        [{"email": "ada@example.com"}, {"email": "bob@example.com"}]
    ]
    by_id = {o.contact_id: o for o in outcomes}
    assert by_id[1] == Synced(1, "7")
    assert by_id[2] == Synced(2, "7")
    assert isinstance(by_id[3], Skipped)
    assert {o.contact_id for o in reported.outcomes()} == {1, 2, 3, 4}


async def test_batches_are_cut_to_the_batch_size_with_the_bearer_key() -> None:
    _, _, seen = await push(accept_all, people(7))
    assert sorted(len(json.loads(r.content)) for r in seen) == [1, 3, 3]
    assert {r.headers["authorization"] for r in seen} == {"Bearer demo-secret-key"}
    assert {str(r.url) for r in seen} == {"https://demo.test/api/upsert"}


async def test_partial_answers_give_each_contact_its_own_outcome() -> None:
    def some_refused(request: httpx.Request) -> httpx.Response:
        results = [
            {"email": i["email"], "error": "blocked"}
            if i["email"] == "p1@example.com"
            else {"email": i["email"], "id": 9}
            for i in json.loads(request.content)
        ]
        return httpx.Response(200, json={"results": results})

    outcomes, _, _ = await push(some_refused, people(3))
    assert outcomes[0] == Synced(0, "9")
    assert outcomes[1] == PermanentFailure(1, "demo: blocked")
    assert outcomes[2] == Synced(2, "9")


async def test_a_contact_the_answer_leaves_out_is_retried() -> None:
    def forgets(request: httpx.Request) -> httpx.Response:
        first = json.loads(request.content)[0]["email"]
        return httpx.Response(200, json={"results": [{"email": first, "id": 1}]})

    outcomes, _, _ = await push(forgets, people(2))
    assert isinstance(outcomes[0], Synced)
    assert outcomes[1].__class__.__name__ == "TransientFailure"
    assert "no result" in getattr(outcomes[1], "reason", "")


async def test_a_fatal_answer_keeps_what_a_concurrent_request_had_accepted() -> None:
    """Two requests in flight at once; one is refused: the other's contacts stay accepted (reported),
    the refused request's contacts get no outcome (they go back to the queue untouched)."""
    both_arrived = asyncio.Event()
    arrived = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_arrived.set()
        if b"p0@" in request.content:
            await both_arrived.wait()  # answered only once the other request is in flight too
            return httpx.Response(401, json={"error": "revoked"})
        return accept_all(request)

    context = AdapterContext.for_testing(httpx.MockTransport(handle))
    adapter = DemoAdapter(DemoSettings(sync_concurrency=2), context)
    contacts = people(6)
    reported = ReportedOutcomes(contacts)
    with pytest.raises(AuthenticationError, match="check the API key setting DEMO_API_KEY"):
        await collect_outcomes(adapter, contacts, crm="demo", reported=reported)
    await adapter.aclose()
    assert {o.contact_id: o for o in reported.outcomes()} == {i: Synced(i, "7") for i in (3, 4, 5)}


async def test_no_request_starts_after_a_fatal_answer() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, json={"error": "revoked"}) if calls == 2 else accept_all(request)

    context = AdapterContext.for_testing(httpx.MockTransport(handle))
    adapter = DemoAdapter(DemoSettings(sync_concurrency=1), context)
    contacts = people(9)
    reported = ReportedOutcomes(contacts)
    with pytest.raises(AuthenticationError):
        await collect_outcomes(adapter, contacts, crm="demo", reported=reported)
    await adapter.aclose()
    assert calls == 2, "the third request must not be sent after the fatal answer"
    assert {o.contact_id for o in reported.outcomes()} == {0, 1, 2}


async def test_a_wrong_base_url_names_its_setting() -> None:
    with pytest.raises(FatalError, match="check the base URL setting DEMO_BASE_URL") as raised:
        await push(lambda r: httpx.Response(404, text="no such route"), people(1))
    assert "demo-secret-key" not in str(raised.value)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [(None, "set DEMO_BASE_URL"), ("demo.test", "DEMO_BASE_URL must be an http")],
    ids=["missing", "no-scheme"],
)
def test_the_base_url_is_checked_before_any_request(base_url: str | None, message: str) -> None:
    context = AdapterContext.for_testing(httpx.MockTransport(accept_all))
    with pytest.raises(ConfigurationError, match=message):
        DemoAdapter(DemoSettings(base_url=base_url), context)


def test_a_missing_key_names_its_setting() -> None:
    context = AdapterContext.for_testing(httpx.MockTransport(accept_all))
    with pytest.raises(ConfigurationError, match="set DEMO_API_KEY"):
        DemoAdapter(DemoSettings(api_key=None), context)


async def test_a_whole_batch_rejection_is_bisected_down_to_the_bad_contact() -> None:
    def refuses_p4(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        if any(i["email"] == "p4@example.com" for i in items):
            return httpx.Response(400, json={"message": "p4 is invalid"})
        return accept_all(request)

    outcomes, _, _ = await push(refuses_p4, people(6), adapter=Bisecting)
    by_id = {o.contact_id: o for o in outcomes}
    assert isinstance(by_id[4], PermanentFailure)
    assert "p4 is invalid" in by_id[4].reason
    assert all(isinstance(by_id[i], Synced) for i in (0, 1, 2, 3, 5))


async def test_without_bisection_a_whole_batch_rejection_fails_its_contacts() -> None:
    outcomes, _, seen = await push(
        lambda r: httpx.Response(422, json={"message": "bad batch"}), people(2)
    )
    assert len(seen) == 1
    assert all(isinstance(o, PermanentFailure) and "bad batch" in o.reason for o in outcomes)


class EveryRow(DemoAdapter):
    def item_key(self, contact: Contact) -> str:
        return str(contact.id)

    def outcomes(self, response: httpx.Response, sent: Sequence[Sent]) -> list[Outcome]:
        return [Synced(s.contact.id, "7") for s in sent]  # a webhook: one answer for all


async def test_an_item_key_of_the_contact_id_sends_every_row() -> None:
    contacts = [Contact(id=1, email="ada@example.com"), Contact(id=2, email="ADA@example.com")]
    outcomes, _, seen = await push(accept_all, contacts, adapter=EveryRow)
    assert [json.loads(r.content) for r in seen] == [
        [{"email": "ada@example.com"}, {"email": "ADA@example.com"}]
    ]
    assert outcomes == [Synced(1, "7"), Synced(2, "7")]


async def test_a_token_in_the_base_urls_query_never_shows_in_errors() -> None:
    settings = DemoSettings(base_url="https://demo.test/api?sig=s3cr3t-signature")
    with pytest.raises(FatalError) as raised:
        await push(
            lambda r: httpx.Response(404, text=f"no route {r.url}"), people(1), settings=settings
        )
    assert "s3cr3t-signature" not in str(raised.value)


def test_cut_keeps_each_run_within_the_size_and_the_budget() -> None:
    words = ["aaaa", "bb", "cc", "dddddddd", "e", "f", "g"]
    assert cut(words, 3) == [["aaaa", "bb", "cc"], ["dddddddd", "e", "f"], ["g"]]
    # 6 "bytes" a run: a word over the budget goes alone
    assert cut(words, 10, budget=6, cost=len) == [
        ["aaaa", "bb"],
        ["cc"],
        ["dddddddd"],
        ["e", "f", "g"],
    ]


class Bulk(DemoAdapter):
    """Above 4 items a push goes to a bulk endpoint in one request; a refused bulk request falls back
    to the ordinary batches."""

    async def deliver(self, items: Sequence[Sent]) -> list[Outcome]:
        if len(items) <= 4:
            return await super().deliver(items)
        return await self.send_all([items], self.bulk)

    async def bulk(self, sent: Sequence[Sent]) -> list[Outcome]:
        body = {"emails": [s.item["email"] for s in sent]}
        response = await self.client.request("POST", "/bulk", content=json_bytes(body))
        if response.status_code == 400:
            return await super().deliver(sent)
        return [Synced(s.contact.id, "bulk") for s in sent]


async def test_a_push_can_take_another_route_and_fall_back() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/bulk"):
            refused = b"p9@" in request.content
            return httpx.Response(400 if refused else 202)
        return accept_all(request)

    outcomes, reported, seen = await push(handle, people(5), adapter=Bulk)
    assert [r.url.path for r in seen] == ["/api/bulk"]
    assert outcomes == [Synced(i, "bulk") for i in range(5)]
    assert {o.contact_id for o in reported.outcomes()} == set(range(5))

    outcomes, _, seen = await push(handle, people(10), adapter=Bulk)
    assert [r.url.path for r in seen] == ["/api/bulk"] + ["/api/upsert"] * 4
    assert outcomes == [Synced(i, "7") for i in range(10)]
