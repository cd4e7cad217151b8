"""LaneTransport: requests sent side by side each keep a connection of their own, over real loopback TCP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx

from crmsync_core.lanes import LaneTransport
from crmsync_core.testing.server import serve_handler


class Counted:
    """A TCP relay in front of a server that counts the connections clients open through it."""

    def __init__(self) -> None:
        self.connections = 0


@contextlib.asynccontextmanager
async def served(delay: float = 0.0) -> AsyncIterator[tuple[str, Counted]]:
    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay)
        return httpx.Response(200, json={"path": request.url.path})

    counted = Counted()
    async with serve_handler(handle) as origin:
        port = int(origin.rsplit(":", 1)[1])

        relays: set[asyncio.Task[object]] = set()
        writers: list[asyncio.StreamWriter] = []

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            counted.connections += 1
            task = asyncio.current_task()
            assert task is not None
            relays.add(task)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writers.extend((writer, up_writer))

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError):
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        relay_port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{relay_port}", counted
        finally:
            server.close()
            # Closed, not cancelled: each relay ends at end of file, before the loop closes.
            for writer in writers:
                writer.close()
            if relays:
                await asyncio.wait(relays, timeout=2)


@contextlib.asynccontextmanager
async def through_lanes(
    lanes: int, delay: float = 0.0
) -> AsyncIterator[tuple[httpx.AsyncClient, Counted]]:
    """A client on a :class:`LaneTransport` of ``lanes``, and the count of connections it opened."""
    async with (
        served(delay) as (origin, counted),
        httpx.AsyncClient(base_url=origin, transport=LaneTransport(lanes), timeout=5) as client,
    ):
        yield client, counted


async def test_requests_side_by_side_keep_one_connection_per_lane() -> None:
    async with through_lanes(3, 0.01) as (client, counted):
        for _ in range(5):
            answers = await asyncio.gather(*(client.get(f"/c/{n}") for n in range(3)))
            assert [a.status_code for a in answers] == [200, 200, 200]
    assert counted.connections == 3


async def test_one_request_at_a_time_reuses_one_connection() -> None:
    async with through_lanes(4) as (client, counted):
        for n in range(10):
            assert (await client.get(f"/c/{n}")).json() == {"path": f"/c/{n}"}
    assert counted.connections == 1


async def test_more_requests_than_lanes_are_sent_at_once_not_queued() -> None:
    async with through_lanes(2, 0.05) as (client, counted):
        answers = await asyncio.gather(*(client.get(f"/c/{n}") for n in range(5)))
        assert [a.json()["path"] for a in answers] == [f"/c/{n}" for n in range(5)]
        # The overflow's extra connections are not kept: two lanes, two requests, no new connection.
        before = counted.connections
        await asyncio.gather(*(client.get("/again") for _ in range(2)))
        assert counted.connections == before
    assert counted.connections == 5


async def test_a_streamed_answer_read_and_closed_frees_its_lane() -> None:
    # As CrmClient reads every answer: streamed, read to the end (or to its cap), then closed.
    async with through_lanes(2) as (client, counted):
        for n in range(4):
            response = await client.send(client.build_request("GET", f"/c/{n}"), stream=True)
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
            await response.aclose()
            assert json.loads(body) == {"path": f"/c/{n}"}
    # Each request found the first lane free again: had a lane stayed busy, the next request would
    # have gone to the other lane and opened its connection.
    assert counted.connections == 1
