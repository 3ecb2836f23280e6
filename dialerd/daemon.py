"""The composition root: builds every part from Settings, runs them, and shuts down in stages.

Shutdown order (STYLE.md principle 6): stop originating -> follow live calls up to the grace period ->
close SSE streams -> stop HTTP -> close the PBX connection -> close the database; each stage logged and
time-boxed (``dialerd/shutdown.py``) inside one budget: the grace period + SHUTDOWN_MARGIN_SECONDS.

Every background task and timer is started through the one TaskOwner built here (``dialerd/tasks.py``):
a critical task that crashes stops the daemon, which then exits 1 (EXIT_CRASHED; systemd restarts it).

``Daemon.build`` constructs every part once, in dependency order, each given what it needs: hub ->
store -> tasks -> PBX -> in-flight ledger -> campaign transitions -> dispatcher (which owns the call
follower) -> lifecycle -> scheduler -> campaign service -> app. Nothing is wired after construction
(``services/lifecycle.py`` says how the dispatcher/lifecycle pair avoids a cycle).
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
from dialerd.domain.zones import check_timezone
from dialerd.errors import ConfigError, StoreError
from dialerd.faults import Failpoints
from dialerd.pbx.errors import AppInUse
from dialerd.pbx.fence import fence_key
from dialerd.pbx.peer import AriPeer
from dialerd.ports import FenceSeat, Pbx
from dialerd.services import importer
from dialerd.services.auth import Authenticator
from dialerd.services.campaigns import CampaignService
from dialerd.services.cluster import ClusterMember, default_node_id
from dialerd.services.dispatcher import Dispatcher
from dialerd.services.events import EventHub
from dialerd.services.explain import ExplainService
from dialerd.services.lifecycle import CampaignLifecycle, CampaignTransitions
from dialerd.services.limits import CallLimits
from dialerd.services.metrics import Metrics
from dialerd.services.peers import PeerEvents
from dialerd.services.scheduler import Scheduler
from dialerd.services.slots import Slots
from dialerd.services.suppressions import SuppressionService
from dialerd.services.takeover import Takeover
from dialerd.services.webhooks import WebhookDelivery
from dialerd.settings import Settings
from dialerd.shutdown import Stage, StageResult, run_stages
from dialerd.store.db import create_engine, migrate
from dialerd.store.listen import EventListener, asyncpg_dsn
from dialerd.store.repo import Store
from dialerd.store.tables import Event
from dialerd.systemd import SystemdNotifier
from dialerd.tasks import TaskOwner

log = logging.getLogger("dialerd.daemon")

# The whole shutdown takes at most the grace period plus this (docs/operations.md: systemd's
# TimeoutStopSec=90 must stay above it; 60 s of grace by default leaves 10 s to spare). Within it,
# each stage has its own box (below): a stage cut short is logged and the next one runs.
SHUTDOWN_MARGIN_SECONDS = 20.0
STOP_ORIGINATING_SECONDS = 10.0  # in-progress originate requests (each bounded by the PBX request timeout)
CLOSE_SSE_SECONDS = 2.0
STOP_WEBHOOKS_SECONDS = 3.0  # the workers are cancelled (1 s at most), then the cursors written
STOP_HTTP_SECONDS = 5.0  # aiohttp's own shutdown_timeout is 1 s
CLOSE_PBX_SECONDS = 15.0  # also lets the call events already received land (APPLY_GRACE_SECONDS = 10)
CLOSE_DATABASE_SECONDS = 8.0  # cancel what tasks are left (3 s), then close the pool
CANCEL_TASKS_SECONDS = 3.0
LISTEN_FIRST_SECONDS = 10.0  # start waits this long at most for the event listener's first connection


def build_pbx(settings: Settings, tasks: TaskOwner | None = None, fence: FenceSeat | None = None) -> Pbx:
    """The PBX adapter the settings name (imported lazily: nothing happens at import time). ``fence``: ARI
    dials through the PBX fence armed by it (several daemons, ``[cluster] fence``, docs/fencing.md)."""
    if settings.pbx_driver == "ari":
        from dialerd.pbx.ari import AriPbx

        return AriPbx(settings.ari_url, settings.ari_user, settings.ari_password, settings.ari_app,
                      settings.pbx_endpoint, tasks=tasks, fence=fence)
    if settings.pbx_driver == "ami":
        from dialerd.pbx.ami import AmiPbx

        ami: Pbx = AmiPbx(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret,
                      settings.pbx_endpoint, tasks=tasks)
        return ami
    from dialerd.pbx.fake import FakePbx

    fake: Pbx = FakePbx(tasks=tasks)
    return fake


@dataclass
class Daemon:
    settings: Settings
    store: Store
    hub: EventHub
    pbx: Pbx
    dispatcher: Dispatcher
    slots: Slots  # the in-flight ledger the dispatcher and its follower share
    scheduler: Scheduler
    campaigns: CampaignService
    app: web.Application
    stopping: asyncio.Event
    tasks: TaskOwner  # every background task and timer; a critical one crashing sets ``stopping``
    systemd: SystemdNotifier  # no-op outside systemd
    faults: Failpoints = field(default_factory=Failpoints)
    webhooks: WebhookDelivery | None = None  # the campaigns' webhook workers (services/webhooks.py)
    cluster: ClusterMember | None = None  # PostgreSQL: this daemon's seat among several (services/cluster.py)
    takeover: Takeover | None = None  # PostgreSQL and ARI: takes lapsed daemons' calls over (services/takeover.py)
    listener: EventListener | None = None  # PostgreSQL: the other daemons' commits (store/listen.py)
    runner: web.AppRunner | None = None
    port: int = 0
    stop_requested: bool = False  # by a signal; otherwise a crashed task set ``stopping``
    heap_frozen: bool = False  # dialerd/heap.py: started, so stop releases it
    stopped: list[StageResult] | None = None  # what the last stop() did, stage by stage
    _recovering: asyncio.Task[None] | None = None

    @classmethod
    async def build(cls, settings: Settings, pbx: Pbx | None = None) -> Daemon:
        engine = create_engine(settings.database_url)
        version = await migrate(engine)
        hub = EventHub(settings.sse_queue_size)
        shared = engine.dialect.name == "postgresql"  # several daemons may write to it (issue 13)

        def publish(events: list[Event]) -> None:  # each transaction's events, announced after its commit
            if shared:
                peers.committed(events)  # the hub is fed from the table there, in id order for all daemons
            else:
                hub.publish(events)  # one process: its commit order is the id order
            webhooks.notify(events)  # built below, before any transaction publishes

        store = Store(engine, publish=publish)
        for stale in await store.stale_imports():
            log.warning("removing a half-imported campaign", extra={"action": "purge_import", "campaign_id": stale})
            await store.purge_campaign(stale)  # appends no event: nothing is published
        stopping = asyncio.Event()
        tasks = TaskOwner(on_crash=lambda _name, _exc: stopping.set())
        webhooks = WebhookDelivery(store.webhooks, tasks, allow_private=settings.webhooks_allow_private,
                                   timeout=settings.webhooks_timeout, retry_for=settings.webhooks_retry_for,
                                   lease_seconds=settings.webhooks_lease_seconds,
                                   user_agent=f"dialerd/{__version__} (webhooks)")
        faults = Failpoints(os.environ.get("DIALERD_FAILPOINTS", ""))  # fault-injection tests only
        slots = Slots(store)
        transitions = CampaignTransitions(store)
        node_id = settings.cluster_node_id or default_node_id(
            settings.pbx_driver, settings.ari_app, _pbx_address(settings), settings.server_port)
        # Several daemons with ARI dial through the PBX fence, armed by their seat (docs/fencing.md).
        fenced = store.cluster is not None and settings.cluster_fence and pbx is None and settings.pbx_driver == "ari"
        cluster = None if store.cluster is None else ClusterMember(
            store.cluster, tasks, node_id=node_id, pbx=_pbx_address(settings),
            heartbeat_interval=settings.cluster_heartbeat_interval, lapse=settings.cluster_lapse,
            status=lambda: (dispatcher.dialling_held, slots.total()),
            fence_key=fence_key(node_id) if fenced else None, fence_formats=settings.cluster_fence_formats,
        )
        pbx = pbx or build_pbx(settings, tasks, fence=None if cluster is None else cluster.fencing())
        dispatcher = Dispatcher(store, pbx, slots, transitions, tasks=tasks, failpoints=faults, cluster=cluster,
                                max_channels=settings.pbx_max_channels)
        # A lapsed daemon's calls are reconciled on its PBX over ARI (an AMI daemon's wait for its restart).
        takeover = None if cluster is None or store.cluster is None or settings.pbx_driver != "ari" else Takeover(
            store.cluster, dispatcher.follower, tasks, node_id=cluster.node_id, lapse=settings.cluster_lapse,
            peer=lambda url: AriPeer(url, settings.ari_user, settings.ari_password),
        )
        lifecycle = CampaignLifecycle(transitions, dispatcher)

        def halted_elsewhere(campaign_id: str) -> None:  # the runner would see it at its next re-read (<= 1 s)
            if campaign_id in dispatcher.running_campaigns():
                dispatcher.campaign_halted(campaign_id)

        peers = PeerEvents(hub, store.events_after, tasks, writer=store.tx.writer, wake_webhooks=webhooks.wake,
                           halted=halted_elsewhere)
        listener = EventListener(asyncpg_dsn(engine.url), peers.notice, peers.reconnected) if shared else None
        scheduler = Scheduler(store, lifecycle)
        campaigns = CampaignService(store, hub, lifecycle, in_flight=slots.calls_in_flight, scheduler=scheduler,
                                    default_timezone=check_timezone(settings.compliance_default_timezone),
                                    webhooks=webhooks)
        metrics = Metrics(store, in_flight=slots.calls_in_flight, pbx_connected=lambda: pbx.connected,
                          dialling_held=lambda: dispatcher.dialling_held)
        telemetry = Telemetry(CollectorRegistry(), dispatcher=dispatcher, hub=hub, pbx=pbx,  # this daemon's own
                              caller_ids=metrics.caller_id_counts, webhooks=webhooks)

        async def health() -> dict[str, Any]:
            db_ok = await store.ping()
            status = "ok" if db_ok and pbx.connected else ("degraded" if db_ok else "error")
            shared: dict[str, Any] = {}
            if cluster is not None and db_ok:
                with contextlib.suppress(StoreError):
                    shared["cluster"] = await cluster.view()
            database: dict[str, Any] = {"ok": db_ok, "schema_version": version}
            if listener is not None:  # the other daemons' events reach this one's streams while it listens
                database["listening"] = listener.connected.is_set()
            return {**shared, "status": status, "version": __version__, "database": database,
                    "pbx": {"driver": settings.pbx_driver, "connected": pbx.connected,
                            "dialling_held": dispatcher.dialling_held, "last_error": dispatcher.pbx_last_error},
                    "calls_in_flight": sum(slots.calls_in_flight(c) for c in dispatcher.running_campaigns()),
                    "sse_subscribers": hub.subscriber_count()}

        svc = Services(settings=settings, auth=Authenticator(store), campaigns=campaigns,
                       explain=ExplainService(store, dispatcher), hub=hub,
                       metrics=metrics, limits=CallLimits(store, in_flight=slots.tenant_in_flight), health=health,
                       suppressions=SuppressionService(store))
        return cls(settings, store, hub, pbx, dispatcher, slots, scheduler, campaigns, build_app(svc, telemetry),
                   stopping, tasks, SystemdNotifier(tasks=tasks), faults, webhooks, cluster, takeover, listener)

    async def start(self) -> None:
        await self._refuse_taken_app()
        if self.cluster is not None:
            await self.cluster.join()  # before the API: a campaign started through it claims under the seat
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
        addresses = self.runner.addresses
        self.port = addresses[0][1] if addresses else self.settings.server_port
        if self.listener is not None:  # before anything is dialled, so the streams miss nothing of it
            self.tasks.spawn("event-listener", self.listener.run(), critical=True)
            try:
                await asyncio.wait_for(self.listener.connected.wait(), LISTEN_FIRST_SECONDS)
            except TimeoutError:  # it goes on trying (logged); the streams here wait for it
                log.warning("event listener not connected yet", extra={"action": "listen"})
        await self.dispatcher.start()
        if self.webhooks is not None:
            await self.webhooks.start()  # what a previous run left undelivered goes out first
        self.scheduler.start()
        await self.scheduler.load()
        self._recovering = self.tasks.spawn("recover", self._recover(), critical=True)
        log.info("dialerd listening", extra={"action": "listening", "host": self.settings.server_host,
                                             "port": self.port, "pbx_driver": self.settings.pbx_driver})
        # READY=1 waits for the PBX (the database is already migrated); the ledger's calls are what
        # shutdown waits on.
        self.systemd.start(pbx_up=self.dispatcher.pbx_up, calls_in_flight=self.slots.total,
                           healthy=self.store.ping)
        heap.freeze()  # what exists now lives as long as the process: out of the GC's full passes
        self.heap_frozen = True

    async def _refuse_taken_app(self) -> None:
        """Two daemons must not fight over one ARI app: refuse before connecting (raises AppInUse)."""
        reason = await self.pbx.check_app_free()
        if reason:
            raise AppInUse(reason)

    async def _recover(self) -> None:
        await self.dispatcher.pbx_up.wait()
        self.faults.hit("recover_crash")
        found = await self.dispatcher.recover()
        if found:
            log.info("reconciling calls left in flight", extra={"action": "recover", "attempts": found})
        await self.dispatcher.resume_running()
        if self.cluster is not None:
            # Campaigns started on other daemons; lapsed daemons' calls.
            self.cluster.adopt(self.dispatcher.resume_running, None if self.takeover is None else self.takeover.sweep)

    def request_stop(self) -> None:
        self.stop_requested = True
        self.stopping.set()

    async def wait(self) -> None:
        await self.stopping.wait()

    async def stop(self) -> list[StageResult]:
        """The staged shutdown; never raises (every stage is boxed and logged, see dialerd/shutdown.py)."""
        grace = self.settings.shutdown_grace_period
        budget = grace + SHUTDOWN_MARGIN_SECONDS
        log.info("shutting down", extra={"action": "shutdown", "budget_seconds": budget})
        self.stopped = await run_stages(self.stages(), budget)
        if self.heap_frozen:  # after every stage, whatever each did (a plain call: it cannot hang)
            self.heap_frozen = False
            heap.release()
        log.info("stopped", extra={"action": "stopped", "ok": all(r.ok for r in self.stopped)})
        return self.stopped

    def stages(self) -> list[Stage]:
        grace = self.settings.shutdown_grace_period
        return [
            Stage("stop_originating", self._stop_originating, STOP_ORIGINATING_SECONDS),
            Stage("follow_calls", lambda: self._follow_calls(grace), grace + 2.0),
            Stage("close_sse", self._close_sse, CLOSE_SSE_SECONDS),
            Stage("stop_webhooks", self._stop_webhooks, STOP_WEBHOOKS_SECONDS),
            Stage("stop_http", self._stop_http, STOP_HTTP_SECONDS),
            Stage("close_pbx", self.dispatcher.close, CLOSE_PBX_SECONDS),
            Stage("close_database", self._close_database, CLOSE_DATABASE_SECONDS),
        ]

    async def _stop_originating(self) -> None:
        if self._recovering is not None:
            self._recovering.cancel()  # recovery after a restart reruns at the next start
        await self.systemd.stopping(f"following {self.slots.total()} calls in flight "
                                    f"for up to {self.settings.shutdown_grace_period:g} s")
        self.scheduler.shutdown()
        await self.dispatcher.stop_originating()

    async def _follow_calls(self, grace: float) -> None:
        left = await self.dispatcher.wait_calls_done(grace)
        if left:
            log.warning("calls still up at the end of the grace period; they are reconciled at next start",
                        extra={"action": "shutdown", "calls_in_flight": left})

    async def _stop_webhooks(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()

    async def _close_sse(self) -> None:
        self.hub.close_all()

    async def _stop_http(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await asyncio.to_thread(importer.shutdown_pool)  # no request imports any more: stop the CSV workers

    async def _close_database(self) -> None:
        await self.systemd.close()  # the watchdog pings on the database: stop it first
        if self.takeover is not None:
            await self.takeover.close()
        if self.cluster is not None:
            await self.cluster.leave()  # its row says stopped: the others know at once
        await self.tasks.cancel_all(CANCEL_TASKS_SECONDS)  # nothing left may touch the database
        await self.store.close()


def _pbx_address(settings: Settings) -> str:
    """The PBX this daemon drives, as its cluster row names it (no credentials)."""
    if settings.pbx_driver == "ari":
        return settings.ari_url
    if settings.pbx_driver == "ami":
        return f"ami://{settings.ami_host}:{settings.ami_port}"
    return settings.pbx_driver


async def serve(settings: Settings) -> int:
    daemon = await Daemon.build(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        await daemon.wait()
    finally:
        await daemon.stop()  # never raises: a failing stage is logged and the later ones still run
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    # Non-zero after a crash, so systemd's Restart=on-failure restarts the service.
    return 0 if daemon.stop_requested else 1
