"""A thin ARI client on aiohttp: REST over a warm keep-alive pool, events over one reconnecting websocket.

The PyPI ARI clients do not survive a websocket drop (see ``shared/asterisk.md``), so this is all we use.
It knows nothing about calls; :mod:`dialerd.pbx.ari` builds the dialer behaviour on top.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.tasks import TaskOwner, child_of

_ID_SEGMENT = re.compile(r"^/(channels|applications|bridges|playbacks|recordings/live)/(?!create$)[^/]+")


def route_of(path: str) -> str:
    """A request's route with the id left out (``/channels/{id}/continue``): a label of bounded cardinality."""
    return _ID_SEGMENT.sub(r"/\1/{id}", path)


log = logging.getLogger("dialerd.pbx.ari")

JsonObject = dict[str, Any]
Params = Mapping[str, str | int]

# Asterisk closes idle HTTP keep-alive sessions after 15 s (http.conf session_keep_alive). Dropping ours
# earlier avoids reusing a socket the server is closing, which would turn an originate into "maybe dialled".
_KEEPALIVE_S = 10.0
_BACKOFF_BASE_S = 0.5
_STABLE_AFTER_S = 5.0  # a websocket that lived this long resets the backoff


def describe_error(exc: BaseException, url: str) -> str:
    """One human sentence for why the ARI connection failed (shown as ``/health`` ``pbx.last_error``)."""
    # PbxRequestError: the PBX's status (its own ``status`` is the HTTP status dialerd would answer).
    status = exc.pbx_status if isinstance(exc, PbxRequestError) else getattr(exc, "status", None)
    if status == 401:
        return "ARI 401: check DIALERD_ARI_PASSWORD and ari.conf"
    if status == 403:
        return "ARI 403: the ARI user is read-only; set read_only = no in ari.conf"
    if isinstance(exc, aiohttp.WSServerHandshakeError) and status:
        return f"ARI {status} on the event websocket: check DIALERD_ARI_URL and http.conf ({exc.message})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"ARI unreachable at {url}: {reason}; check DIALERD_ARI_URL, http.conf and that Asterisk runs"
    if isinstance(exc, TimeoutError):
        return f"ARI at {url} did not answer in time"
    return f"ARI connection failed: {str(exc) or type(exc).__name__}"


class AriConnectionError(PbxError):
    """The request did not complete (timeout, refused, connection dropped)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent  # False only when the TCP connection could not even be opened


class AriClient:
    """REST calls (:meth:`request`) plus an owned task that keeps the event websocket connected."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        app: str,
        *,
        request_timeout: float = 5.0,
        max_connections: int = 16,
        reconnect_max_delay: float = 10.0,
        heartbeat: float = 5.0,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.app = app
        self._tasks = child_of(tasks, "client")
        self._base = url.rstrip("/") + "/ari"
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}  # aiohttp.BasicAuth is deprecated in 3.12+
        self._timeout = request_timeout
        self.requests: Counter[str] = Counter()  # sent, by method and route (ids as {id}): /metrics
        self._max_connections = max_connections
        self._max_delay = max(reconnect_max_delay, _BACKOFF_BASE_S)
        self._heartbeat = heartbeat
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._connected_since: float | None = None
        self._url = url
        self._next_delay: float | None = None  # set by reconnect_after(): the next retry waits this long
        self.last_error: str | None = None  # why the websocket is not up, as one sentence; None while up

    @property
    def connected(self) -> bool:
        return self._connected

    async def open(self) -> None:
        """Create the HTTP session (inside the running loop)."""
        if self._session is None:
            # +1: the websocket holds one connection of the pool for its whole life.
            connector = aiohttp.TCPConnector(limit=self._max_connections + 1, keepalive_timeout=_KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
            )

    def start_events(
        self,
        on_event: Callable[[JsonObject], None],
        on_state: Callable[[bool], None],
        on_open: Callable[[], Awaitable[None]],
        before_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run the websocket loop in an owned task until :meth:`close`.

        ``on_open`` runs after each connect and before ``connected`` turns True (e.g. to set the event
        filter); if it raises, the socket is dropped and retried. ``on_event`` gets every decoded event
        and must return at once: Asterisk drops a consumer that stalls for 100 ms. ``before_connect``
        runs before every connect attempt after the first and may wait (connecting registers the app,
        taking it from whoever holds it).
        """
        if self._task is not None:
            raise RuntimeError("events already started")
        # Critical: without this loop no event arrives and the connection is never restored.
        self._task = self._tasks.spawn(
            f"ari-events-{self.app}", self._run(on_event, on_state, on_open, before_connect), critical=True
        )

    def reconnect_after(self, delay: float, why: str) -> None:
        """Drop the websocket at once (before the next event is read) and reconnect in ``delay`` s.

        For a websocket that stays open but no longer carries the app (``ApplicationReplaced``).
        """
        self._next_delay = max(0.0, delay)
        self.last_error = why

    async def close(self) -> None:
        """Stop the websocket task and close the pool. Live calls are left alone."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drop_websocket(self) -> None:
        """Close the current websocket (the loop reconnects). For tests and operator tooling."""
        if self._ws is not None:
            await self._ws.close()

    async def touch_app(self, app: str) -> None:
        """Register ``app`` with a websocket and drop it at once (Asterisk then cleans up unused apps)."""
        if self._session is None:
            raise AriConnectionError("ARI client is not open", sent=False)
        try:
            async with asyncio.timeout(self._timeout):
                ws = await self._session.ws_connect(self._base + "/events", params={"app": app})
                await ws.close()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AriConnectionError(describe_error(exc, self._url), sent=False) from exc

    async def request(
        self, method: str, path: str, *, params: Params | None = None, body: JsonObject | None = None
    ) -> Any:
        """Call ``/ari{path}``; return the decoded JSON (None for an empty body).

        Raise :class:`PbxRequestError` for an HTTP error status and :class:`AriConnectionError` when no
        answer came within ``request_timeout``.
        """
        if self._session is None:
            raise AriConnectionError("ARI client is not open", sent=False)
        self.requests[f"{method} {route_of(path)}"] += 1
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.request(method, self._base + path, params=params, json=body) as resp,
            ):
                text = await resp.text()
                status = resp.status
        except TimeoutError as exc:
            raise AriConnectionError(f"ARI {method} {path}: no answer in {self._timeout}s", sent=True) from exc
        except aiohttp.ClientConnectorError as exc:
            raise AriConnectionError(f"ARI {method} {path}: cannot connect: {exc}", sent=False) from exc
        except aiohttp.ClientError as exc:
            raise AriConnectionError(f"ARI {method} {path}: {exc!r}", sent=True) from exc
        if status >= 300:
            raise PbxRequestError(f"ARI {method} {path}: HTTP {status}", status=status, body=text)
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PbxRequestError(f"ARI {method} {path}: invalid JSON", status=status, body=text) from exc

    async def _run(
        self,
        on_event: Callable[[JsonObject], None],
        on_state: Callable[[bool], None],
        on_open: Callable[[], Awaitable[None]],
        before_connect: Callable[[], Awaitable[None]] | None,
    ) -> None:
        attempt = 0
        while True:
            error: BaseException | None = None
            try:
                await self._connect_once(on_event, on_state, on_open)
            except (aiohttp.ClientError, OSError, TimeoutError, PbxError) as exc:
                error = exc
                self.last_error = describe_error(exc, self._url)
            up_since = self._connected_since
            if up_since is not None and time.monotonic() - up_since >= _STABLE_AFTER_S:
                attempt = 0
            attempt += 1
            cap = min(self._max_delay, _BACKOFF_BASE_S * 2 ** (attempt - 1))
            # Jitter over the upper half: never zero, so a server that accepts and closes at once cannot
            # make us spin, and many clients do not retry in step.
            delay = random.uniform(cap / 2, cap)
            if self._next_delay is not None:
                delay, self._next_delay = self._next_delay, None
            log.warning(
                "ARI websocket %s; retry %d in %.1f s",
                "closed" if error is None else f"failed: {str(error) or type(error).__name__}",
                attempt,
                delay,
                extra={"action": "ari_ws_retry", "app": self.app, "attempt": attempt},
            )
            await asyncio.sleep(delay)
            if before_connect is not None:
                await before_connect()

    async def _connect_once(
        self,
        on_event: Callable[[JsonObject], None],
        on_state: Callable[[bool], None],
        on_open: Callable[[], Awaitable[None]],
    ) -> None:
        if self._session is None:
            raise AriConnectionError("ARI client is not open", sent=False)
        self._connected_since = None
        async with asyncio.timeout(self._timeout):
            ws = await self._session.ws_connect(
                self._base + "/events",
                params={"app": self.app, "subscribeAll": "false"},
                heartbeat=self._heartbeat,
            )
        self._ws = ws
        try:
            await on_open()
            self._connected = True
            self._connected_since = time.monotonic()
            self.last_error = None
            log.info("ARI websocket connected", extra={"action": "ari_ws_connected", "app": self.app})
            on_state(True)
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(msg.data, on_event)
                    if self._next_delay is not None:
                        break  # reconnect_after() was called by the handler
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    raise aiohttp.ClientError(f"websocket error: {ws.exception()!r}")
        finally:
            self._ws = None
            was_connected, self._connected = self._connected, False
            if was_connected:
                on_state(False)
            # Shielded: a cancelled close must not leave the socket open.
            await asyncio.shield(ws.close())

    def _dispatch(self, data: str, on_event: Callable[[JsonObject], None]) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("ARI sent a non-JSON frame", extra={"action": "ari_bad_frame"})
            return
        if not isinstance(event, dict):
            return
        try:
            on_event(event)
        except Exception:  # one bad event must not cost the connection
            log.exception("ARI event handler failed", extra={"action": "ari_event_failed"})
