"""In-process fan-out of campaign events to SSE subscribers.

Publishing never waits: each subscriber has a bounded queue, and a subscriber that falls behind is
marked ``lagged`` and its queue dropped; its stream then catches up from the ``event`` table, which
holds every transition. So a slow client can neither slow the dispatcher nor lose an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dialerd.store.tables import Event


class Subscription:
    def __init__(self, campaign_id: str, size: int) -> None:
        self.campaign_id = campaign_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.lagged = False
        self.wakeup = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            while not self.queue.empty():
                self.queue.get_nowait()
        self.wakeup.set()

    def drain(self) -> list[Event]:
        items: list[Event] = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        self.wakeup.clear()
        return items


class EventHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for sub in self._subs.get(event.campaign_id, ()):
                sub.offer(event)

    def subscribe(self, campaign_id: str) -> Subscription:
        sub = Subscription(campaign_id, self.queue_size)
        self._subs.setdefault(campaign_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.campaign_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.campaign_id]

    def subscriber_count(self, campaign_id: str | None = None) -> int:
        if campaign_id is not None:
            return len(self._subs.get(campaign_id, ()))
        return sum(len(s) for s in self._subs.values())

    def close_all(self) -> None:
        """Wake every subscriber so streams can end during shutdown."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wakeup.set()
