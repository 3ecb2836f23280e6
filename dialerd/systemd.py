"""systemd integration (``Type=notify``): readiness, status lines, stopping, and the watchdog keep-alive.

The protocol is sd_notify(3): one datagram of ``KEY=VALUE`` lines to the unix socket named by
``NOTIFY_SOCKET`` (a path, or an abstract socket written with a leading ``@``). Without that variable,
as when dialerd is run by hand or under tests, every call here is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from dialerd.tasks import TaskOwner

log = logging.getLogger("dialerd.systemd")

STATUS_INTERVAL = 5.0  # seconds between STATUS refreshes while running (only changes are sent)


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # the abstract namespace: a leading NUL instead of "@"
    if raw.startswith("/"):
        return raw
    return None  # unset, or a transport we do not speak (vsock: is for VMs)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` lines) to systemd; False if not under systemd or failed."""
    env = os.environ if environ is None else environ
    address = _address(env.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop on a full socket buffer: a lost message is resent next tick.
            sock.setblocking(False)
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed", extra={"action": "sd_notify", "error": str(exc)})
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None if systemd expects none."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked or exec'd by the main process)
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Reports the daemon's state to systemd from two owned tasks: ``systemd-status`` and ``systemd-watchdog``.

    ``READY=1`` is sent once, when the PBX connection first comes up (the database is migrated before
    :meth:`start` runs); until then STATUS says the daemon waits for the PBX.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, tasks: TaskOwner | None = None) -> None:
        self._tasks = TaskOwner() if tasks is None else tasks  # both tasks are critical: a crash stops the daemon
        self._environ = dict(os.environ if environ is None else environ)
        self.enabled = _address(self._environ.get("NOTIFY_SOCKET", "")) is not None
        self.watchdog_interval = watchdog_interval(self._environ) if self.enabled else None
        self.ready = False
        self._status: str | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None

    def notify(self, state: str) -> bool:
        return notify(state, self._environ)

    def status(self, text: str) -> None:
        """Set the line ``systemctl status`` shows; sent only when it changes."""
        if text != self._status:
            self._status = text
            self.notify(f"STATUS={text}")

    def start(
        self,
        *,
        pbx_up: asyncio.Event,
        calls_in_flight: Callable[[], int],
        healthy: Callable[[], Awaitable[bool]],
    ) -> None:
        """Start reporting: status (and READY=1 once ``pbx_up`` is set) and, if asked for, watchdog pings."""
        if not self.enabled:
            return
        self._status_task = self._tasks.spawn("systemd-status", self._report(pbx_up, calls_in_flight),
                                              critical=True)
        if self.watchdog_interval is not None:
            self._watchdog_task = self._tasks.spawn(
                "systemd-watchdog", self._watchdog(self.watchdog_interval, healthy), critical=True
            )

    async def stopping(self, detail: str = "") -> None:
        """Shutdown began: STOPPING=1. Status reporting ends; the watchdog keeps pinging until :meth:`close`."""
        await _cancel(self._status_task)
        self._status = "stopping" + (f": {detail}" if detail else "")
        self.notify(f"STOPPING=1\nSTATUS={self._status}")

    async def close(self) -> None:
        await _cancel(self._status_task)
        await _cancel(self._watchdog_task)

    # ---- tasks -------------------------------------------------------------------------------------

    async def _report(self, pbx_up: asyncio.Event, calls_in_flight: Callable[[], int]) -> None:
        while True:
            if not pbx_up.is_set():
                self.status(
                    "waiting for the PBX" if not self.ready else "PBX connection lost; waiting for the PBX"
                )
                await pbx_up.wait()
            text = f"dialling: {calls_in_flight()} calls in flight"
            if not self.ready:
                # One datagram, so systemd never shows "active" with a stale "waiting" status.
                self.ready = True
                self._status = text
                self.notify(f"READY=1\nSTATUS={text}")
                log.info("ready (told systemd)", extra={"action": "sd_ready"})
            else:
                self.status(text)
            # A PBX drop is noticed within one interval; pbx_up has no "cleared" signal to wait on.
            await asyncio.sleep(STATUS_INTERVAL)

    async def _watchdog(self, interval: float, healthy: Callable[[], Awaitable[bool]]) -> None:
        # The ping comes from a task on the daemon's own loop, so a blocked loop stops it; healthy()
        # (a database round trip) must also answer within half an interval. Pings follow a fixed
        # schedule, so a slow check never stretches the gap between two pings beyond 1.5 intervals.
        was_healthy = True
        next_tick = time.monotonic()
        while True:
            lag = time.monotonic() - next_tick
            if lag > interval:
                log.warning("event loop was blocked", extra={"action": "loop_blocked", "seconds": round(lag, 3)})
            try:
                async with asyncio.timeout(interval / 2):
                    ok = await healthy()
            except TimeoutError:
                ok = False
            if ok:
                self.notify("WATCHDOG=1")
            if ok != was_healthy:
                if ok:
                    log.info("healthy again; watchdog pings resumed", extra={"action": "watchdog_resumed"})
                else:
                    log.error(
                        "health check failed; withholding watchdog pings (systemd restarts us if it lasts)",
                        extra={"action": "watchdog_withheld"},
                    )
                was_healthy = ok
            next_tick = max(next_tick + interval, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
