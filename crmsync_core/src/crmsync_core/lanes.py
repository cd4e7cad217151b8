"""Connections for requests sent side by side: one keep-alive connection per lane.

httpcore's pool, on every request it starts and every response it closes, checks each of its idle
connections for having been closed by the server (a socket poll, a ``getpeername`` and anyio's
attribute lookups per connection). With the four connections of four requests in flight that was about
a fifth of the CPU of each request on loopback, more than everything crmsync adds to a request. A
:class:`LaneTransport` keeps a small pool per lane instead and sends each request on the least busy lane,
so that each pool checks one idle connection, as a client sending one request at a time does.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import httpx


class _Lane:
    __slots__ = ("busy", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.busy = 0


class _Released(httpx.AsyncByteStream):
    """A response body that frees its lane once it is read or closed (a streamed answer holds its
    connection until then)."""

    def __init__(self, stream: httpx.AsyncByteStream, lane: _Lane) -> None:
        self._stream = stream
        self._lane: _Lane | None = lane

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._lane is not None:
                self._lane.busy -= 1
                self._lane = None


class LaneTransport(httpx.AsyncBaseTransport):
    """``lanes`` HTTP transports, each keeping one idle connection; a request goes to the lane with the
    fewest requests in flight (the first of them, so that a client sending one request at a time keeps
    reusing one connection). A lane that is given a request while busy opens another connection for it
    rather than queue it (a queued request could time out waiting for the pool), and keeps only one.
    """

    def __init__(self, lanes: int, *, verify: ssl.SSLContext | bool = True) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=1)
        self._lanes = [
            _Lane(httpx.AsyncHTTPTransport(verify=verify, limits=limits))
            for _ in range(max(1, lanes))
        ]

    @property
    def lanes(self) -> int:
        """How many lanes (each with a keep-alive connection of its own) this transport has."""
        return len(self._lanes)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lane = min(self._lanes, key=lambda candidate: candidate.busy)
        lane.busy += 1
        try:
            response = await lane.transport.handle_async_request(request)
        except BaseException:
            lane.busy -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Released(response.stream, lane),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.transport.aclose()
