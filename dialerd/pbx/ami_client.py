"""A thin layer over panoramisk: actions under a timeout, a watchdog, and an honest ``connected`` flag.

Measured panoramisk traps this works around (``shared/asterisk.md``): an action in flight when the
connection drops never resolves and is re-sent after the reconnect (so every action here is forgettable
and awaited under a timeout), and its ping never notices a dead connection (so a watchdog pings under a
timeout and aborts the transport, after which panoramisk reconnects by itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action

from dialerd.pbx.errors import PbxError, PbxRequestError
from dialerd.tasks import TaskOwner, child_of

log = logging.getLogger("dialerd.pbx.ami")

# Never re-sent after a reconnect: a re-sent Originate would dial twice.
FORGETTABLE = ("ping", "login", "logoff", "originate", "filter", "coreshowchannels", "dbget", "dbdel", "getvar")


class AmiTimeout(PbxError):
    """An action got no answer in time (the connection may be dead, or the action may have run)."""


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager, minus reconnecting after :meth:`AmiClient.close`."""

    closing = False
    last_error: str | None = "AMI not connected yet"

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closing:
            return None
        return super().connect(*args, **kwargs)

    def connection_made(self, f: Any) -> None:
        if not f.cancelled() and isinstance(f.exception(), OSError):
            exc = f.exception()
            host, port = self.config["host"], self.config["port"]
            self.last_error = (f"AMI unreachable at {host}:{port}: {exc.strerror or exc}; check "
                               "DIALERD_AMI_HOST, DIALERD_AMI_PORT, manager.conf and that Asterisk runs")
        super().connection_made(f)

    def login(self, future: Any) -> bool:
        ok = bool(super().login(future))
        if not ok:
            message = getattr(future.result(), "message", "") or "refused"
            self.last_error = (f"AMI login failed ({message}): check DIALERD_AMI_USER, DIALERD_AMI_SECRET "
                               "and manager.conf")
            log.error(self.last_error, extra={"action": "ami_login_failed"})
        return ok


class AmiClient:
    """One AMI session that panoramisk keeps reconnecting; ``connected`` means logged in and answering."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        secret: str,
        *,
        action_timeout: float = 5.0,
        ping_interval: float = 5.0,
        reconnect_delay: int = 1,
        tasks: TaskOwner | None = None,
    ) -> None:
        self.requests: Counter[str] = Counter()  # actions sent, by name: /metrics
        self._config: dict[str, Any] = {
            "host": host,
            "port": int(port),
            "username": user,
            "secret": secret,
            "events": "call",  # call-class events only; the event filter narrows further
            "reconnect_timeout": reconnect_delay,
            "ping_delay": 86400,  # panoramisk's own ping cannot detect a dead peer; the watchdog does
            "ping_interval": 86400,
            "forgetable_actions": FORGETTABLE,
            "log": logging.getLogger("dialerd.pbx.ami.panoramisk"),
        }
        self.timeout = action_timeout
        self._ping_interval = ping_interval
        self._manager: _Manager | None = None
        self._connected = False
        self._on_state: Callable[[bool], None] = lambda up: None
        self._event_filter = ""
        self._tasks = child_of(tasks, "client")
        self.logins = 0

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def last_error(self) -> str | None:
        """Why the session is not up (login refused, connection lost), as one sentence."""
        if self._connected:
            return None
        if self._manager is None:
            return "AMI not started"
        return self._manager.last_error

    def start(
        self,
        events: Mapping[str, Callable[[Any], None]],
        on_state: Callable[[bool], None],
        event_filter: str = "",
    ) -> None:
        """Connect in the background and keep the session up until :meth:`close`.

        ``events`` maps AMI event names to handlers (they must return at once). ``event_filter`` is
        a server-side ``Filter`` regex added after every login.
        """
        self._on_state, self._event_filter = on_state, event_filter
        manager = self._manager = _Manager(
            loop=asyncio.get_running_loop(),
            on_login=lambda _m: self._tasks.spawn("ami-login", self._after_login(), critical=False),
            on_disconnect=self._on_disconnect,
            **self._config,
        )
        for name, handler in events.items():
            manager.register_event(name, lambda _m, event, handler=handler: handler(event))
        manager.connect()
        self._tasks.spawn("ami-watchdog", self._watchdog(), critical=False)

    async def close(self) -> None:
        await self._tasks.cancel_all()
        if self._manager is not None:
            self._manager.closing = True
            self._manager.close()
        self._set_connected(False)

    def action(self, fields: Mapping[str, Any]) -> Action:
        """Build an action now, so its ActionID is known before it is sent."""
        return Action(dict(fields))

    async def send(self, action: Action, *, first_only: bool = False) -> list[Any]:
        """Send under the timeout; return the reply messages. ``first_only``: do not wait for a list
        (Async Originate, whose OriginateResponse must reach the event handlers)."""
        manager = self._manager
        if manager is None or not self._connected:
            raise PbxError("AMI is not connected")
        name = action.get("Action")
        self.requests[str(name)] += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await manager.send_action(action, as_list=False if first_only else None)
        except TimeoutError as exc:
            raise AmiTimeout(f"AMI {name}: no answer in {self.timeout}s") from exc
        return reply if isinstance(reply, list) else [reply]

    async def request(self, fields: Mapping[str, Any]) -> list[Any]:
        """Send one action; raise PbxRequestError for an error reply other than "not found"."""
        replies = await self.send(self.action(fields))
        first = replies[0] if replies else None
        if first is not None and first.get("Response") == "Error" and "not found" not in str(first.message):
            raise PbxRequestError(f"AMI {fields['Action']}: {first.message}", body=str(first.message))
        return replies

    async def _after_login(self) -> None:
        manager = self._manager
        if manager is None:
            return
        if self._event_filter:
            try:
                async with asyncio.timeout(self.timeout):
                    await manager.send_action(
                        Action({"Action": "Filter", "Operation": "Add", "Filter": self._event_filter})
                    )
            except TimeoutError:
                log.warning("AMI event filter not acknowledged", extra={"action": "ami_filter"})
        if not manager.authenticated or getattr(manager.protocol, "closed", True):
            return  # lost again meanwhile; the next login tries again
        self.logins += 1
        manager.last_error = None
        log.info("AMI connected", extra={"action": "ami_connected", "attempt": self.logins})
        self._set_connected(True)

    def _on_disconnect(self, manager: Any, exc: Any) -> None:
        log.warning("AMI connection lost: %s", exc, extra={"action": "ami_disconnected"})
        if not str(manager.last_error).startswith("AMI login failed"):  # the cause, not the symptom
            manager.last_error = (f"AMI connection to {self._config['host']}:{self._config['port']} lost"
                                  f"{f': {exc}' if exc else ''}; check DIALERD_AMI_HOST/PORT and that Asterisk runs")
        self._set_connected(False)

    def _set_connected(self, up: bool) -> None:
        if up != self._connected:
            self._connected = up
            self._on_state(up)

    async def _watchdog(self) -> None:
        """Ping under a timeout; a silent connection is aborted so panoramisk reconnects."""
        unauthenticated = 0
        while True:
            await asyncio.sleep(self._ping_interval)
            manager = self._manager
            protocol = getattr(manager, "protocol", None)
            if manager is None or protocol is None or getattr(protocol, "closed", True):
                continue  # panoramisk is reconnecting
            # Connected but not logged in on two ticks running (bad secret, lost Login reply): start over.
            unauthenticated = 0 if manager.authenticated else unauthenticated + 1
            try:
                if unauthenticated >= 2:
                    raise TimeoutError
                if manager.authenticated:
                    async with asyncio.timeout(self.timeout):
                        await manager.send_action(Action({"Action": "Ping"}))
            except TimeoutError:
                unauthenticated = 0
                log.warning("AMI ping unanswered; reconnecting", extra={"action": "ami_ping_failed"})
                self._set_connected(False)
                protocol.transport.abort()  # -> connection_lost -> panoramisk reconnects
