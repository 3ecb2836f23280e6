"""This daemon as one of several on one PostgreSQL database (issue 13): its seat, its heartbeat, its peers.

At start the daemon registers under its node id (``[cluster] node_id``) and gets a new epoch; every claim
it makes is checked against that epoch in the claim's transaction (``store/cluster.py``), so once
another process has registered under the same id (or, later, taken its work over) nothing more is
claimed under the old one. The heartbeat writes the row every ``heartbeat_interval`` seconds with why
the daemon is not dialling (``held_reason``, e.g. ``pbx_down``) and its calls up; a heartbeat that finds
the epoch moved on raises ``Fenced`` in a critical task: the daemon stops and exits non-zero, and
systemd starts it again under a new epoch (a fenced process never dials again; the HBase region server's
"you are dead" abort is the same rule).

Every beat also starts a runner for each campaign running in the database that has none here (started,
resumed or appended on another daemon), after recovery has run (``adopt``).

With the PBX fence (``[cluster] fence``, ARI; docs/fencing.md) the member also arms it: at each websocket
connect the ARI adapter calls :meth:`ClusterMember.arm`, which takes a new epoch by compare-and-set from
the one this process holds, sets the PBX's fence global to it, and reads the epoch back from the database.
A compare-and-set that fails means a taker raised the epoch: the daemon is fenced and stops. Claims and
heartbeats use the new epoch from then on; one that meets the old epoch while an arming is under way is
retried (:meth:`ClusterMember.seat_moved`), not taken for a fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dialerd.domain.cluster import Fenced, Seat, alive
from dialerd.errors import StoreError
from dialerd.ports import FenceSeat
from dialerd.store.cluster import ClusterStore
from dialerd.tasks import TaskOwner
from dialerd.timestamps import rfc3339, utcnow

log = logging.getLogger("dialerd.cluster")


def default_node_id(pbx_driver: str, ari_app: str, pbx: str, server_port: int) -> str:
    """HOST/APP for ARI (two daemons on one PBX need distinct apps anyway); for AMI, HOST/ami@PBX; for the
    fake PBX, HOST/fake:PORT (its HTTP port). Two daemons under one id fence each other in turn."""
    host = socket.gethostname()
    if pbx_driver == "ari":
        return f"{host}/{ari_app}"
    if pbx_driver == "ami":
        return f"{host}/ami@{pbx.removeprefix('ami://')}"
    return f"{host}/{pbx_driver}:{server_port}"


class ClusterMember:
    """This daemon's seat among the daemons of one PostgreSQL database (see the module docstring)."""

    def __init__(
        self,
        store: ClusterStore,
        tasks: TaskOwner,
        *,
        node_id: str,
        pbx: str,
        heartbeat_interval: float = 1.0,
        lapse: float = 5.0,
        status: Callable[[], tuple[str | None, int]] = lambda: (None, 0),
        fence_key: str | None = None,
        fence_formats: str = "ulaw",
    ) -> None:
        """``fence_key``: this daemon dials through its PBX's fence under that key (its row says so, so a
        taker fences it out and may give its unsent attempts back); None: no fence."""
        self.store = store
        self.tasks = tasks
        self.node_id = node_id
        self.pbx = pbx
        self.interval = heartbeat_interval
        self.lapse = timedelta(seconds=lapse)
        self.status = status  # (why not dialling, calls up) for the heartbeat
        self._seat: Seat | None = None
        self._adopt: Callable[[], Awaitable[None]] | None = None
        self._sweep: Callable[[], Awaitable[object]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dialling_nodes = 1  # daemons alive and able to dial, as the last beat read them (this one too)
        self.key = fence_key  # the PBX fence's key and codec (FenceSeat, through fencing())
        self.formats = fence_formats
        self._arming = asyncio.Lock()

    @property
    def seat(self) -> Seat:
        if self._seat is None:
            raise RuntimeError("the daemon has not joined its cluster yet")
        return self._seat

    @property
    def joined(self) -> bool:
        return self._seat is not None

    async def join(self) -> Seat:
        self._seat = await self.store.register(self.node_id, self.pbx, utcnow(), fence_key=self.key)
        log.info("joined the cluster", extra={"action": "cluster_join", "node_id": self.node_id,
                                              "epoch": self._seat.epoch})
        self._task = self.tasks.spawn("cluster-heartbeat", self._beat(), critical=True)
        return self._seat

    async def arm(self, set_fence: Callable[[int], Awaitable[None]]) -> int:
        """``FenceSeat.arm`` (docs/fencing.md, "arming", steps 2-4): a new epoch by compare-and-set from the
        one held, ``set_fence`` (the PBX's global set to it and read back), the epoch read again from the
        database. Once per epoch: when ``set_fence`` fails, the next arming takes a new one."""
        if self.key is None:
            raise RuntimeError("this daemon dials without the PBX fence")
        async with self._arming:
            seat = self.seat
            new = await self.store.rearm(seat)
            if new is None:
                log.critical("fenced: another daemon took this one over; stopping", extra={
                    "action": "fenced", "node_id": seat.node_id, "epoch": seat.epoch})
                raise Fenced(seat.node_id, seat.epoch, None)
            self._seat = new  # claims and heartbeats from here on; nothing is sent before the arm returns
            await set_fence(new.epoch)
            current = await self.store.epoch_of(new.node_id)
            if current != new.epoch:
                log.critical("fenced while arming the PBX fence; stopping", extra={
                    "action": "fenced", "node_id": new.node_id, "epoch": new.epoch})
                raise Fenced(new.node_id, new.epoch, current)
            return new.epoch

    def fencing(self) -> FenceSeat | None:
        """What the ARI adapter dials through the fence with (None: this daemon dials without it)."""
        return None if self.key is None else _Arming(self, self.key, self.formats)

    def seat_moved(self, seat: Seat) -> bool:
        """Whether ``seat`` is no longer this daemon's because it armed the fence anew (or is arming now): a
        claim or heartbeat refused under it is retried under the new seat, not taken for a fence."""
        return self._arming.locked() or self._seat != seat

    def adopt(self, runners: Callable[[], Awaitable[None]],
              sweep: Callable[[], Awaitable[object]] | None = None) -> None:
        """From now on, each beat calls ``runners`` (start one for each running campaign without one) and
        ``sweep`` (take over the daemons whose heartbeat lapsed: ``services/takeover.py``)."""
        self._adopt = runners
        self._sweep = sweep

    async def leave(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._seat is not None:
            try:
                await self.store.leave(self._seat, utcnow())
            except StoreError as exc:
                log.warning("could not mark this daemon stopped: %s", exc, extra={"action": "cluster_leave"})

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            seat = self.seat  # arming the fence moves it on
            held, calls = self.status()
            try:
                current = await self.store.heartbeat(seat, utcnow(), held_reason=held, calls_in_flight=calls)
            except StoreError as exc:
                log.warning("heartbeat failed: %s", exc, extra={"action": "cluster_heartbeat"})
                continue
            if current:
                with contextlib.suppress(StoreError):
                    now = utcnow()
                    self.dialling_nodes = max(1, sum(1 for n in await self.store.nodes()
                                                     if alive(n, now, self.lapse) and n.held_reason is None))
            if not current and self.seat_moved(seat):
                continue
            if not current:
                log.critical("fenced: another process holds this daemon's id under a newer epoch; stopping",
                             extra={"action": "fenced", "node_id": seat.node_id, "epoch": seat.epoch})
                raise Fenced(seat.node_id, seat.epoch, None)
            for step in (self._adopt, self._sweep):
                if step is None:
                    continue
                try:
                    await step()
                except StoreError as exc:
                    log.warning("cluster step failed: %s", exc, extra={"action": "cluster_step"})

    def fair_share(self, cap: int) -> int:
        """This daemon's even share of a campaign's ``cap`` among the daemons able to dial (at least 1).

        A freed slot wakes the daemon whose call ended at once, and the others only when they look again;
        left alone, the first daemon to dial a campaign would keep every slot of it. Past its share a
        daemon lets one recheck interval pass before claiming again (``Dispatcher._step``), so the others
        take their share and the campaign spreads over every PBX; what they leave, it still takes."""
        return max(1, math.ceil(cap / self.dialling_nodes))

    async def view(self) -> dict[str, Any]:
        """This daemon's seat and every daemon's row, for ``/health``."""
        now = utcnow()
        nodes = await self.store.nodes()
        return {
            "node_id": self.node_id,
            "epoch": None if self._seat is None else self._seat.epoch,
            "nodes": [
                {"node_id": n.node_id, "pbx": n.pbx, "state": n.state, "alive": alive(n, now, self.lapse),
                 "epoch": n.epoch, "held_reason": n.held_reason, "calls_in_flight": n.calls_in_flight,
                 "heartbeat_at": rfc3339(n.heartbeat_at)}
                for n in nodes
            ],
        }


@dataclass(frozen=True)
class _Arming:
    """``FenceSeat`` for the ARI adapter: the member's arming under its key and codec."""

    member: ClusterMember
    key: str
    formats: str

    async def arm(self, set_fence: Callable[[int], Awaitable[None]]) -> int:
        return await self.member.arm(set_fence)
