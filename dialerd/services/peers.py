"""Several daemons on one PostgreSQL database: every daemon's SSE streams carry every daemon's events.

On PostgreSQL the hub (``services/events.py``) is fed from the ``event`` table only, never straight from
a commit, this daemon's own included. Per campaign that has subscribers here, ``PeerEvents`` keeps a mark,
the last id it published; when that campaign has new events (a notice from ``store/listen.py``, or this
daemon's own commit), one drain task reads the table after the mark and publishes what it finds, in id
order. One reader, one mark: local and remote events cannot interleave out of order. And since a
campaign's events commit in id order in every process (the event lock, ``store/base.py``), a read after
the mark always finds a gapless continuation.

Where a mark starts. A stream subscribes to the hub, then replays from the table (``api/events.py``), so
it needs from the hub every event committed after its replay. Notices arrive in commit order, so the
first notice handled after a campaign gains subscribers names the first of the events that its replay
may have missed: the mark starts just before it. A local commit never starts a mark (another daemon's
earlier commit may still be on its way as a notice), it only makes a read happen sooner.

The LISTEN connection lost: notices in between are gone, so on each reconnect every mark is dropped and
every stream is told to catch up from the table itself (``EventHub.resync``), after LISTEN is back; the
next notices start new marks. Meanwhile this daemon's streams wait (the listener reconnects with backoff).

Costs (docs in the module's tests, ``tests/integration/test_peer_events.py``): one indexed read per batch
of commits of a campaign with subscribers, per daemon that has some; nothing for a campaign nobody watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from dialerd.domain.campaign import CampaignStatus
from dialerd.errors import StoreError
from dialerd.services.events import EventHub
from dialerd.store.base import priority_context
from dialerd.store.listen import Notice
from dialerd.store.tables import Event
from dialerd.tasks import TaskOwner

log = logging.getLogger("dialerd.peers")

PAGE = 500  # events read per turn of a campaign
RETRY_AFTER = 1.0  # seconds before a read the store failed is tried again

ReadAfter = Callable[[str, int, int], Awaitable[list[Event]]]  # (campaign, after id, limit) -> events


class PeerEvents:
    """The hub's feed on PostgreSQL, and what other daemons' notices wake here."""

    def __init__(
        self, hub: EventHub, read_after: ReadAfter, tasks: TaskOwner, *, writer: str,
        wake_webhooks: Callable[[str], None] = lambda _c: None,
        halted: Callable[[str], None] = lambda _c: None,
    ) -> None:
        self.hub = hub
        self.read_after = read_after
        self.tasks = tasks
        self.writer = writer  # this process's name in notices (Transactions.writer)
        self.wake_webhooks = wake_webhooks
        self.halted = halted  # another daemon paused or stopped the campaign: stop dialling it now
        self._marks: dict[str, tuple[int, int]] = {}  # campaign -> (hub epoch, last id published)
        self._due: dict[str, None] = {}  # campaigns to read, oldest first
        # campaign -> the last id of a transaction that set its status, from either side: a notice older
        # than a status this daemon has seen since (its own resume, committed after another's pause whose
        # notice was still on its way) must not halt the runner that resume started.
        self._status_at: dict[str, int] = {}
        self._drain: asyncio.Task[None] | None = None
        self.reads = 0  # table reads made, for tests and measurements

    # ---- what calls for a read -------------------------------------------------------------------

    def notice(self, notice: Notice) -> None:
        """A committed transaction's events of a campaign (``EventListener``, in commit order)."""
        if notice.writer != self.writer:
            self.wake_webhooks(notice.campaign_id)
            if notice.status is not None and self._newer_status(notice.campaign_id, notice.last) \
                    and notice.status != CampaignStatus.RUNNING.value:  # paused, stopped, finished...
                self.halted(notice.campaign_id)
        self._want(notice.campaign_id, notice.first, notice.last, starts=True)

    def committed(self, events: Iterable[Event]) -> None:
        """This daemon's own commit (the store's publish, right after it): read now, not at its notice."""
        last: dict[str, int] = {}
        for ev in events:
            assert ev.id is not None
            last[ev.campaign_id] = ev.id
            if ev.kind == "campaign" and "status" in ev.payload:
                self._newer_status(ev.campaign_id, ev.id)
        for campaign_id, last_id in last.items():
            self._want(campaign_id, last_id, last_id, starts=False)

    def _newer_status(self, campaign_id: str, event_id: int) -> bool:
        if event_id <= self._status_at.get(campaign_id, 0):
            return False
        self._status_at[campaign_id] = event_id
        return True

    def reconnected(self) -> None:
        """LISTEN is back after a loss (or up for the first time): what was notified meanwhile is unknown."""
        self._marks.clear()
        self._due.clear()
        self.hub.resync()

    def _want(self, campaign_id: str, first: int, last: int, *, starts: bool) -> None:
        epoch = self.hub.epoch(campaign_id)
        if epoch is None:  # nobody here watches it
            self._marks.pop(campaign_id, None)
            return
        mark = self._marks.get(campaign_id)
        if mark is None or mark[0] != epoch:  # no mark, or one from before its streams all left
            if not starts:
                return
            mark = self._marks[campaign_id] = (epoch, first - 1)
        if last <= mark[1]:
            return  # already published
        self._due[campaign_id] = None
        if self._drain is None:
            self._drain = self.tasks.spawn("peer-events", self._run(), critical=True,
                                          context=priority_context())  # the streams' feed: no queue

    # ---- the one reader --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._due:
                campaign_id = next(iter(self._due))
                del self._due[campaign_id]
                await self._read(campaign_id)
        finally:
            self._drain = None

    async def _read(self, campaign_id: str) -> None:
        mark = self._marks.get(campaign_id)
        if mark is None or mark[0] != self.hub.epoch(campaign_id):
            return
        try:
            self.reads += 1
            page = await self.read_after(campaign_id, mark[1], PAGE)
        except StoreError as exc:
            log.warning("reading events for the streams failed; again in %s s", RETRY_AFTER,
                        extra={"action": "peer_events", "campaign_id": campaign_id, "error": str(exc)})
            await asyncio.sleep(RETRY_AFTER)
            self._due[campaign_id] = None
            return
        # A resync, or the streams all leaving, while we read: that mark is void, and the page with it.
        if self._marks.get(campaign_id) != mark or not page:
            return
        self.hub.publish(page)
        last = page[-1].id
        assert last is not None
        self._marks[campaign_id] = (mark[0], last)
        if len(page) == PAGE:
            self._due[campaign_id] = None  # more to read; other campaigns' turns first
