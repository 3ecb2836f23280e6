"""The composition root: builds every part from Settings, runs them, and shuts down in stages.

Shutdown order (STYLE.md principle 6): stop originating -> follow live calls up to the grace period ->
close SSE streams -> stop HTTP -> close the PBX connection -> close the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from dialerd import __version__, heap
from dialerd.api.app import build_app
from dialerd.api.context import Services
from dialerd.api.prometheus import Telemetry
from dialerd.errors import ConfigError
from dialerd.faults import Failpoints
from dialerd.pbx.errors import AppInUse
from dialerd.ports import Pbx
from dialerd.services.auth import Authenticator
from dialerd.services.campaigns import CampaignService
from dialerd.services.dispatcher import Dispatcher
from dialerd.services.events import EventHub
from dialerd.services.metrics import Metrics
from dialerd.services.scheduler import Scheduler
from dialerd.settings import Settings
from dialerd.store.db import create_engine, migrate
from dialerd.store.repo import Store
from dialerd.systemd import SystemdNotifier

log = logging.getLogger("dialerd.daemon")


def build_pbx(settings: Settings) -> Pbx:
    """The PBX adapter the settings name (imported lazily: nothing happens at import time)."""
    if settings.pbx_driver == "ari":
        from dialerd.pbx.ari import AriPbx

        return AriPbx(settings.ari_url, settings.ari_user, settings.ari_password, settings.ari_app,
                      settings.pbx_endpoint)
    if settings.pbx_driver == "ami":
        from dialerd.pbx.ami import AmiPbx

        ami: Pbx = AmiPbx(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret,
                      settings.pbx_endpoint)
        return ami
    from dialerd.pbx.fake import FakePbx

    fake: Pbx = FakePbx()
    return fake


@dataclass
class Daemon:
    settings: Settings
    store: Store
    hub: EventHub
    pbx: Pbx
    dispatcher: Dispatcher
    scheduler: Scheduler
    campaigns: CampaignService
    app: web.Application
    stopping: asyncio.Event
    runner: web.AppRunner | None = None
    port: int = 0
    side_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    systemd: SystemdNotifier = field(default_factory=SystemdNotifier)  # no-op outside systemd
    stop_requested: bool = False  # by a signal; otherwise a crashed task set ``stopping``
    heap_frozen: bool = False  # dialerd/heap.py: started, so stop releases it

    @classmethod
    async def build(cls, settings: Settings, pbx: Pbx | None = None) -> Daemon:
        engine = create_engine(settings.database_url)
        version = await migrate(engine)
        store = Store(engine)
        for stale in await store.stale_imports():
            log.warning("removing a half-imported campaign", extra={"action": "purge_import", "campaign_id": stale})
            await store.purge_campaign(stale)
        hub = EventHub(settings.sse_queue_size)
        store.publish = hub.publish  # the store announces each transaction's events after its commit
        pbx = pbx or build_pbx(settings)
        stopping = asyncio.Event()
        faults = Failpoints(os.environ.get("DIALERD_FAILPOINTS", ""))  # fault-injection tests only
        dispatcher = Dispatcher(store, pbx, hub, on_crash=lambda _exc: stopping.set(), failpoints=faults)
        scheduler = Scheduler()
        campaigns = CampaignService(store, hub, dispatch=dispatcher, scheduler=scheduler)
        dispatcher.campaigns = campaigns
        scheduler.campaigns = campaigns
        metrics = Metrics(store, in_flight=dispatcher.calls_in_flight, pbx_connected=lambda: pbx.connected,
                          dialling_held=lambda: dispatcher.dialling_held)
        telemetry = Telemetry(CollectorRegistry(), dispatcher=dispatcher, hub=hub, pbx=pbx)  # this daemon's own

        async def health() -> dict[str, Any]:
            db_ok = await store.ping()
            status = "ok" if db_ok and pbx.connected else ("degraded" if db_ok else "error")
            return {"status": status, "version": __version__, "database": {"ok": db_ok, "schema_version": version},
                    "pbx": {"driver": settings.pbx_driver, "connected": pbx.connected,
                            "dialling_held": dispatcher.dialling_held, "last_error": dispatcher.pbx_last_error},
                    "calls_in_flight": sum(dispatcher.calls_in_flight(c) for c in list(dispatcher._runners)),
                    "sse_subscribers": hub.subscriber_count()}

        svc = Services(settings=settings, auth=Authenticator(store), campaigns=campaigns, hub=hub,
                       metrics=metrics, health=health)
        return cls(settings, store, hub, pbx, dispatcher, scheduler, campaigns, build_app(svc, telemetry), stopping)

    async def start(self) -> None:
        await self._refuse_taken_app()
        self.runner = web.AppRunner(
            # keepalive_timeout: an idle keep-alive connection is closed after 75 s (aiohttp keeps it an hour).
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0, keepalive_timeout=75.0
        )
        await self.runner.setup()
        host, port = self.settings.server_host, self.settings.server_port
        site = web.TCPSite(self.runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # e.g. EADDRINUSE: one line naming the setting (exit 78), not a traceback
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ConfigError(
                f"setting server.port: cannot listen on {host}:{port} ({reason}); stop what uses it "
                "or choose another server.port (server.host for the address)", key="server.port",
            ) from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.server_port
        await self.dispatcher.start()
        self.scheduler.start()
        await self.scheduler.load()
        task = asyncio.create_task(self._recover(), name="recover")
        task.add_done_callback(self.side_tasks.discard)
        self.side_tasks.add(task)
        log.info("dialerd listening", extra={"action": "listening", "host": self.settings.server_host,
                                             "port": self.port, "pbx_driver": self.settings.pbx_driver})
        # READY=1 waits for the PBX (the database is already migrated); _calls is what shutdown waits on.
        self.systemd.start(pbx_up=self.dispatcher.pbx_up, calls_in_flight=lambda: len(self.dispatcher._calls),
                           healthy=self.store.ping, on_crash=lambda _exc: self.stopping.set())
        heap.freeze()  # what exists now lives as long as the process: out of the GC's full passes
        self.heap_frozen = True

    async def _refuse_taken_app(self) -> None:
        """Two daemons must not fight over one ARI app: refuse before connecting (raises AppInUse)."""
        reason = await self.pbx.check_app_free()
        if reason:
            raise AppInUse(reason)

    async def _recover(self) -> None:
        await self.dispatcher.pbx_up.wait()
        found = await self.dispatcher.recover()
        if found:
            log.info("reconciling calls left in flight", extra={"action": "recover", "attempts": found})
        await self.dispatcher.resume_running()

    def request_stop(self) -> None:
        self.stop_requested = True
        self.stopping.set()

    async def wait(self) -> None:
        await self.stopping.wait()

    async def stop(self) -> None:
        log.info("shutting down", extra={"action": "shutdown"})
        await self.systemd.stopping(f"following {len(self.dispatcher._calls)} calls in flight "
                                    f"for up to {self.settings.shutdown_grace_period:g} s")
        self.scheduler.shutdown()
        await self.dispatcher.stop_originating()
        left = await self.dispatcher.wait_calls_done(self.settings.shutdown_grace_period)
        if left:
            log.warning("calls still up at the end of the grace period; they are reconciled at next start",
                        extra={"action": "shutdown", "calls_in_flight": left})
        self.hub.close_all()
        for task in list(self.side_tasks):
            task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.dispatcher.close()
        await self.systemd.close()  # the watchdog pings on the database: stop it first
        await self.store.close()
        if self.heap_frozen:
            self.heap_frozen = False
            heap.release()
        log.info("stopped", extra={"action": "stopped"})


async def serve(settings: Settings) -> int:
    daemon = await Daemon.build(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        await daemon.wait()
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    # Non-zero after a crash, so systemd's Restart=on-failure restarts the service.
    return 0 if daemon.stop_requested else 1
