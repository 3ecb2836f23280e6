"""A loopback TCP proxy a test controls: forward, drop every connection, refuse new ones.

It cuts dialerd's connection to Asterisk without touching Asterisk itself, which other test sessions
share. Point dialerd's ARI URL (or AMI port) at :attr:`TcpProxy.port`; the proxy forwards to the real
port until told otherwise:

* :meth:`drop` resets every open connection, on both sides (dialerd's and Asterisk's);
* :meth:`refuse` resets each new connection as soon as it is accepted (the client sees "connection
  reset" at once), and counts it, so a test can tell a bounded backoff from a reconnect spin;
* :meth:`arm` sets a trap: the next request containing given bytes still reaches the server, but from
  that instant nothing reaches the clients any more (the reply is lost, as when a link dies mid-request);
  a test then cuts, and the client cannot know whether its request took effect;
* :meth:`forward` goes back to forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Accepted:
    """One connection the proxy accepted: when (``time.monotonic()``) and whether it was refused."""

    at: float
    refused: bool


@dataclass(eq=False)  # identity hash: pairs live in a set
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.refusing = False
        self.silenced = False  # set by a fired trap: server -> client data is dropped
        self.accepted: list[Accepted] = []
        self._trigger: bytes | None = None
        self._fired = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: an ARI base URL through the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def refuse(self) -> None:
        self.refusing = True

    def forward(self) -> None:
        self.refusing = False
        self.silenced = False

    def arm(self, trigger: bytes) -> asyncio.Event:
        """Trap the next client chunk containing ``trigger`` (see the module docstring); the returned
        event is set once it has been sent on to the server."""
        self._trigger = trigger
        self._fired = asyncio.Event()
        return self._fired

    def drop(self) -> int:
        """Reset every open connection on both sides; return how many there were."""
        pairs = list(self._pairs)
        for pair in pairs:
            self._close(pair)
        return len(pairs)

    def cut(self) -> int:
        """Refuse new connections, then drop the open ones (in that order: nothing slips in between)."""
        self.refuse()
        return self.drop()

    def attempts(self, since: float = 0.0, until: float | None = None, *, refused: bool | None = None) -> int:
        """Connections accepted in [since, until] (monotonic clock), optionally only refused ones."""
        end = float("inf") if until is None else until
        return sum(
            1 for a in self.accepted if since <= a.at <= end and (refused is None or a.refused == refused)
        )

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ---- internals ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(Accepted(time.monotonic(), self.refusing))
        if self.refusing:
            _reset(writer)
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            self._close(pair)
            return
        if pair not in self._pairs:  # dropped while connecting upstream
            _reset(up_writer)
            return
        pair.upstream = up_writer
        pair.pumps = [
            self._spawn(self._pump(reader, up_writer, pair, upstream=True), "proxy-up"),
            self._spawn(self._pump(up_reader, writer, pair, upstream=False), "proxy-down"),
        ]

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair, *, upstream: bool
    ) -> None:
        try:
            while True:
                data = await src.read(_CHUNK)
                if not data:
                    break
                if upstream and self._trigger is not None and self._trigger in data:
                    # Silenced before the write: no reply to this request can get through.
                    self.silenced, self._trigger = True, None
                    self._fired.set()
                elif not upstream and self.silenced:
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side finished: end the whole pair, like a real connection loss would.
            if pair in self._pairs:
                self._pairs.discard(pair)
                for w in (pair.client, pair.upstream):
                    if w is not None:
                        with contextlib.suppress(OSError, RuntimeError):
                            w.close()

    def _close(self, pair: _Pair) -> None:
        self._pairs.discard(pair)
        for task in pair.pumps:
            task.cancel()
        _reset(pair.client)
        if pair.upstream is not None:
            _reset(pair.upstream)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), the way a dead peer or a cut link looks to the other side."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
