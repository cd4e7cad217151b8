"""Serve an in-process fake CRM over real HTTP on a loopback port (for CLI and subprocess tests).

A fake's ``handle(request) -> response`` coroutine (an ``httpx.MockTransport`` handler) becomes an
HTTP/1.1 server on ``127.0.0.1`` and an ephemeral port::

    async with serve_handler(fake.handle) as origin:      # in an event loop
        ...                                                # origin == "http://127.0.0.1:40123"

    with serve_in_thread(fake.handle) as origin:           # from synchronous code (a subprocess test)
        subprocess.run([..., "crmsync", "check"], env={"HUBSPOT_API_BASE_URL": origin, ...})

The server runs on its own event loop in a daemon thread in the second form; the fake's state is shared
with the test (inspect ``fake.requests`` afterwards). h11 is httpx's own HTTP/1.1 engine, so nothing new
is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@contextlib.asynccontextmanager
async def serve_handler(
    handle: Handler, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``handle`` on ``host`` and ``port`` (0: an ephemeral one); yields ``http://host:port``.

    A handler that raises :class:`httpx.TransportError` drops the connection, as a failing server does.
    """
    import h11

    open_connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        task = asyncio.current_task()
        if task is not None:
            open_connections[task] = writer
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if not isinstance(event, h11.Request):
                    return
                head, body = event, bytearray()
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Data):
                        body += event.data
                request = httpx.Request(
                    head.method.decode(),
                    f"http://{host}:{bound}{head.target.decode()}",
                    headers=[(k.decode(), v.decode()) for k, v in head.headers],
                    content=bytes(body),
                )
                try:
                    response = await handle(request)
                    content = await response.aread()
                except httpx.TransportError:
                    return  # the fake drops the connection (an injected failure)
                # The body is sent whole, so its framing is ours, whatever the fake's response said.
                headers = [
                    (k, v)
                    for k, v in response.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding")
                ]
                headers.append(("content-length", str(len(content))))
                writer.write(
                    conn.send(h11.Response(status_code=response.status_code, headers=headers))
                    or b""
                )
                writer.write(conn.send(h11.Data(data=content)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, h11.LocalProtocolError, ConnectionError):
            return
        finally:
            if task is not None:
                open_connections.pop(task, None)
            writer.close()

    server = await asyncio.start_server(connection, host, port)
    bound = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.close()
        # Close the connections clients kept alive, so that their handlers end at EOF rather than be
        # cancelled when the event loop closes (which asyncio reports as an error in a callback).
        for writer in list(open_connections.values()):
            writer.close()
        if open_connections:
            await asyncio.wait(list(open_connections), timeout=1.0)
        await server.wait_closed()


@contextlib.contextmanager
def serve_in_thread(handle: Handler, host: str = "127.0.0.1") -> Iterator[str]:
    """:func:`serve_handler` on an event loop of its own in a daemon thread; yields the origin."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with serve_handler(handle, host) as origin:
                ready.set_result(origin)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    origin = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=30)
    try:
        yield origin
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


async def _wait(future: asyncio.Future[str]) -> str:
    return await future
