"""A daemon dies: another takes its calls over (issue 13, item 3).

At each heartbeat every daemon looks for daemons whose heartbeat lapsed (``[cluster] lapse``). One of them
wins the takeover of each (``ClusterStore.take_over``: one conditional UPDATE raises the lapsed daemon's
epoch, so it can claim nothing more even if it was only stalled, and marks it ``taken``). The winner then
reconciles every attempt the lapsed daemon left in flight against that daemon's PBX, the way a restart
does (``CallFollower.reconcile``): a channel still up is followed until it ends (polled: its events go to
the other daemon's ARI app, which nobody reads now), a channel that ended has its hangup record applied,
an accepted call the PBX no longer knows is recorded as lost (never redialled). Each attempt ended this way
leaves flight, so the capacity it held in the shared counts is free again.

A *dialling* attempt the PBX does not know is the one case that needs more than timing: its sender may be
stalled between the commit and the originate (SIGSTOP, a long GC pause) and send it later. It is given back
for another dial only once the other daemon's PBX refuses that daemon's originates: when its row names a
fence key (it dials through ``[dialerd-fence]``, ``pbx/fence.py``), the winner first sets that PBX's fence
to the epoch ``take_over`` raised (``fence_out``, read back), and only then reads the attempts to
reconcile (docs/fencing.md has the argument). Without a fence (the daemon runs with ``[cluster] fence =
false``, or setting it failed: retried each pass) such an attempt stays in flight, its contact is not
redialled, and it is looked at again at each pass, until the daemon rejoins (its own restart reconciles
it: a restarted process has no stalled sender left) or the fence is in place.

If the other PBX does not answer, its calls wait for a later pass: nothing is decided blind. A daemon that
restarts under the same id rejoins with a new epoch and reconciles what is still in flight itself; both may
apply the same end, which the guarded transitions make harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from dialerd.domain.cluster import NodeView
from dialerd.errors import PbxUnavailable, StoreError
from dialerd.ports import PeerPbx
from dialerd.services.following import CallFollower
from dialerd.store.cluster import ClusterStore
from dialerd.store.repo import priority_context
from dialerd.tasks import TaskOwner
from dialerd.timestamps import utcnow

log = logging.getLogger("dialerd.cluster")

PASS_SECONDS = 1.0  # between two passes over a taken daemon's calls still up
UNREACHABLE_SECONDS = 5.0  # before the next pass when its PBX did not answer


class Takeover:
    """Finds lapsed daemons, takes each over once, and reconciles its calls on its PBX."""

    def __init__(
        self,
        cluster: ClusterStore,
        follower: CallFollower,
        tasks: TaskOwner,
        *,
        node_id: str,
        lapse: float,
        peer: Callable[[str], PeerPbx],
    ) -> None:
        self.cluster = cluster
        self.follower = follower
        self.tasks = tasks
        self.node_id = node_id
        self.lapse = timedelta(seconds=lapse)
        self.peer = peer
        self._working: dict[str, asyncio.Task[None]] = {}
        self.taken: list[str] = []  # the daemons this one took over, in order (for tests and metrics)

    async def sweep(self) -> list[str]:
        """One look at the daemons' rows; start reconciling each lapsed one this daemon wins."""
        now = utcnow()
        won = []
        for node in await self.cluster.nodes():
            if (node.node_id == self.node_id or node.state not in ("up", "taken")
                    or now - node.heartbeat_at <= self.lapse or node.node_id in self._working):
                continue
            if not await self.cluster.take_over(node, self.node_id, now, self.lapse):
                continue
            log.warning("took over a daemon whose heartbeat lapsed", extra={
                "action": "takeover", "node_id": node.node_id, "epoch": node.epoch, "pbx": node.pbx})
            self.taken.append(node.node_id)
            won.append(node.node_id)
            self._working[node.node_id] = self.tasks.spawn(
                f"takeover-{node.node_id}", self._reconcile(node), critical=False, context=priority_context())
        return won

    async def close(self) -> None:
        for task in self._working.values():
            task.cancel()
        await asyncio.gather(*self._working.values(), return_exceptions=True)

    async def _reconcile(self, node: NodeView) -> None:
        peer = self.peer(node.pbx)
        fenced = False
        epoch = node.epoch + 1  # the one take_over wrote
        try:
            while True:
                try:
                    if not fenced and node.fence_key is not None:
                        fenced = await self._fence_out(peer, node, epoch)
                    attempts = await self.cluster.attempts_of(node.node_id)
                    if not await self.cluster.touch_taken(node.node_id, epoch, utcnow(), done=not attempts):
                        log.info("the taken-over daemon is back (or taken by another); leaving its calls to it",
                                 extra={"action": "takeover_left", "node_id": node.node_id})
                        return
                    if not attempts:
                        log.info("a taken-over daemon's calls are all reconciled",
                                 extra={"action": "takeover_done", "node_id": node.node_id})
                        return
                    for attempt in attempts:
                        await self.follower.reconcile(attempt.channel_id, on=peer, fenced=fenced)
                    await asyncio.sleep(PASS_SECONDS)
                except (PbxUnavailable, StoreError) as exc:
                    log.warning("cannot reconcile a taken-over daemon's calls yet: %s", exc,
                                extra={"action": "takeover_wait", "node_id": node.node_id})
                    # Within the lapse: its row must be touched again before another daemon would retake it.
                    await asyncio.sleep(min(UNREACHABLE_SECONDS, self.lapse.total_seconds() / 2))
        finally:
            with contextlib.suppress(Exception):
                await peer.close()
            self._working.pop(node.node_id, None)

    @staticmethod
    async def _fence_out(peer: PeerPbx, node: NodeView, epoch: int) -> bool:
        """Set the lapsed daemon's PBX fence past its epoch; False (retried next pass) if that failed."""
        assert node.fence_key is not None
        try:
            await peer.fence_out(node.fence_key, epoch)
        except PbxUnavailable as exc:
            log.warning("cannot fence a taken-over daemon's PBX yet: %s", exc,
                        extra={"action": "fence_out_failed", "node_id": node.node_id})
            return False
        log.info("fenced a taken-over daemon's PBX", extra={"action": "fence_out", "node_id": node.node_id,
                                                             "epoch": epoch})
        return True
