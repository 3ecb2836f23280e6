"""PostgreSQL ``LISTEN`` on the event channel: the notices other daemons' (and this one's) commits send.

Every transaction that appends events notifies ``EVENT_CHANNEL`` (``store/base.py``); PostgreSQL delivers
the notices at commit, in commit order, to each listening connection. ``EventListener`` keeps one such
connection of its own (asyncpg, outside the engine's pool: a pooled connection is handed to others between
uses and would lose its LISTEN), hands each notice to ``on_notice``, and when the connection is lost
connects again with backoff. A notice sent while it was away is lost for good, so after each (re)connect,
once LISTEN is in place, it calls ``on_connect``: the consumer catches up from the ``event`` table there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from dialerd.store.base import EVENT_CHANNEL

log = logging.getLogger("dialerd.listen")

BACKOFF_FIRST = 0.1  # seconds before the first reconnection, doubling up to BACKOFF_MAX
BACKOFF_MAX = 5.0
# A connection cut without a FIN (a host gone, a partition) is noticed by a probe this often; one that is
# closed (pg_terminate_backend, a server restart) at once, through asyncpg's termination callback.
PROBE_EVERY = 5.0
PROBE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Notice:
    """One transaction's events of one campaign: ids ``first``..``last`` (all of that campaign's events in
    between are its), written by ``writer``; ``status``: the campaign's status if the transaction set it."""

    campaign_id: str
    first: int
    last: int
    writer: str
    status: str | None = None

    @classmethod
    def parse(cls, payload: str) -> Notice | None:
        try:
            raw: dict[str, Any] = json.loads(payload)
            status = raw.get("s")
            return cls(str(raw["c"]), int(raw["f"]), int(raw["l"]), str(raw["w"]),
                       None if status is None else str(status))
        except (ValueError, KeyError, TypeError):
            return None


def asyncpg_dsn(url: URL) -> str:
    """The engine's URL as asyncpg's own DSN (``postgresql://``, password included)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class EventListener:
    """One LISTEN connection, kept up for as long as ``run`` runs."""

    def __init__(self, dsn: str, on_notice: Callable[[Notice], None], on_connect: Callable[[], None]) -> None:
        self.dsn = dsn
        self.on_notice = on_notice
        self.on_connect = on_connect
        self.connected = asyncio.Event()
        self.connects = 0  # successful (re)connections, for tests and /metrics
        self.backend_pid: int | None = None  # the server process of the LISTEN connection (tests cut it)

    async def run(self) -> None:
        """Listen until cancelled, connecting again after each loss."""
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._session()
                delay = BACKOFF_FIRST  # it was up: the next loss starts the backoff again
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("event listener: connection failed; retrying in %.1f s", delay,
                            extra={"action": "listen", "error": f"{exc.__class__.__name__}: {exc}"})
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    async def _session(self) -> None:
        # Named, so an operator (or a test) finds it in pg_stat_activity: "dialerd-listen <pid>".
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                     server_settings={"application_name": f"dialerd-listen {os.getpid()}"})
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(EVENT_CHANNEL, self._received)
            self.backend_pid = conn.get_server_pid()
            self.connects += 1
            self.connected.set()
            log.info("event listener connected", extra={"action": "listen", "connects": self.connects})
            # LISTEN is in place: whatever commits from now on is notified; what came before, the
            # consumer reads from the table.
            self.on_connect()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), PROBE_EVERY)
                except TimeoutError:
                    await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT)
            log.warning("event listener: connection lost", extra={"action": "listen"})
        finally:
            self.connected.clear()
            self.backend_pid = None
            if not conn.is_closed():
                conn.terminate()  # no goodbye round trip: it may be gone already

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        notice = Notice.parse(payload)
        if notice is None:
            log.warning("event listener: unreadable notice ignored", extra={"action": "listen"})
            return
        self.on_notice(notice)
