"""A loopback CRM that misbehaves on demand, for the fault-injection tests.

It speaks just enough of Brevo (``POST /v3/contacts``: 201 with a new id, 204 for a known e-mail) and of an
n8n webhook (``POST /webhook/...``: 200 with an execution id), and logs every contact it *accepted* (answered
2xx). A :class:`Fault` decides what happens to each request: answer a status (401, 403, 404, 503), trickle the
answer one byte at a time (slow-loris), never answer (hang), or refuse connections (the port is closed).
It runs on its own event loop in a thread and binds an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Fault:
    """What the server does with requests once ``after`` contacts were accepted (``None``: nothing)."""

    kind: str | None = None  # "status", "slowloris", "hang"
    status: int = 503
    after: int = 0
    #: seconds the fault lasts once it starts (``None``: until changed)
    lasts: float | None = None
    started: float | None = None

    def active(self, accepted: int) -> bool:
        if self.kind is None or accepted < self.after:
            return False
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return self.lasts is None or now - self.started < self.lasts


@dataclass
class CrmServer:
    fault: Fault = field(default_factory=Fault)
    #: e-mail -> how many times a request carrying it was accepted (2xx)
    accepted: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._listen(0))

    # -- control (from the test's thread) --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self.fault = fault

    def refuse(self) -> None:
        """Close the port: every connection is refused until :meth:`listen_again`."""
        self._call(self._close())

    def listen_again(self) -> None:
        self._call(self._listen(self.port))

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def accepted_total(self) -> int:
        with self._lock:
            return sum(self.accepted.values())

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = sock.getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # -- serving --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self._server is None:
                    return  # refusing: drop connections kept alive from before
                await self._answer(writer, method, path, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes
    ) -> None:
        if method != "POST":
            # Reads (the engine's once-per-worker field check) deliver no contact: answer them plainly.
            await self._send(writer, 200, b'{"attributes": []}')
            return
        data = json.loads(body) if body else {}
        items = data if isinstance(data, list) else [data]
        emails = [str(item.get("email", "")).lower() for item in items]
        with self._lock:
            self.requests += 1
            fault = self.fault
            active = fault.active(sum(self.accepted.values()))
        if active and fault.kind == "hang":
            await asyncio.sleep(3600)
        if active and fault.kind == "status":
            await self._send(writer, fault.status, b'{"code":"unauthorized","message":"no"}')
            return
        with self._lock:
            known = all(email in self._ids for email in emails)
            for email in emails:
                self._ids.setdefault(email, len(self._ids) + 1)
                # Accepted: whatever happens to the answer on the way back, the CRM has the contact.
                self.accepted[email] += 1
            first = self._ids[emails[0]] if emails else 0
        if path.startswith("/webhook/"):
            status, answer = 200, json.dumps({"executionId": str(first)}).encode()
        elif known:
            status, answer = 204, b""
        else:
            status, answer = 201, json.dumps({"id": first}).encode()
        await self._send(writer, status, answer, trickle=active and fault.kind == "slowloris")

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, *, trickle: bool = False
    ) -> None:
        if trickle:
            body = body or b"{}" * 20
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head)
        if trickle:
            # Headers at once, then one byte at a time: every read is quick, the whole answer is not.
            for index in range(len(body)):
                writer.write(body[index : index + 1])
                await writer.drain()
                await asyncio.sleep(0.3)
        else:
            writer.write(body)
        await writer.drain()
