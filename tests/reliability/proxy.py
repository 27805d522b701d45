"""A loopback TCP proxy the tests control: forward to a broker, cut every connection, restore.

Kafka clients connect to the address a broker *advertises* in metadata, so the broker
behind this proxy must advertise the proxy's address (EmbeddedBroker(advertised=...)).
While cut, existing connections are reset and new ones are accepted and closed at once,
which is what a client sees when a broker host or network path goes away.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Optional

CHUNK = 256 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self._up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self.connections_total = 0
        self.refused_total = 0

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    # --- control (called from the test thread) ---------------------------------------------
    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._start_server())
        return self

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore``."""
        self._call(self._cut())

    def restore(self) -> None:
        self._up = True

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coro: "asyncio.Future[None] | object") -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # --- the proxy (runs on the loop thread) -----------------------------------------------
    async def _start_server(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen, reuse_address=True)

    async def _cut(self) -> None:
        self._up = False
        for w in list(self._writers):
            _abort(w)
        self._writers.clear()

    async def _stop(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if not self._up:
            self.refused_total += 1
            _abort(client_w)
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(client_w)
            return
        self.connections_total += 1
        pair = {client_w, upstream_w}
        self._writers |= pair
        await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        for w in pair:
            _abort(w)
        self._writers -= pair

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while self._up:
                data = await reader.read(CHUNK)
                if not data or not self._up:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    # RST rather than FIN: the peer sees the connection die, as with a lost host.
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
