"""In-process fan-out of campaign events to SSE subscribers.

Publishing never waits and does no work per subscriber. Each campaign that has subscribers has one
bounded log of its recent events, each encoded once as its SSE frame; every subscriber only keeps its
position in that log. A subscriber that falls further behind than the log holds is *lagged*: its stream
catches up from the ``event`` table, which holds every transition. So a slow client can neither slow the
dispatcher nor lose an event.

Subscribers are not woken per event but per *flush*: every subscriber takes all that arrived since the
last one and writes it in one go. A campaign flushes at once after a quiet spell, and while events keep
coming, at most once per ``flush_delay``, which grows with the number of subscribers: each wake-up costs a
task step and a ``send()``, and with 1,000 streams woken per event the dispatcher, on the same event loop,
fell to a tenth of its rate (docs/benchmarks.md, section 4). Subscribers are also woken a few at a time, so
the dispatcher's callbacks run between batches instead of waiting behind all of them.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dialerd.domain.campaign import END_EVENT
from dialerd.store.tables import Event

# A wake-up and its write cost ~20-30 us per stream on loopback; 50 us of spacing per subscriber keeps a
# steady stream of events to under half of the loop whatever the count. The cap bounds the latency.
FLUSH_DELAY_PER_SUBSCRIBER = 50e-6
FLUSH_DELAY_MAX = 0.05
# Subscribers woken per loop iteration. Smaller batches let the dispatcher's database results in sooner, at
# an extra loop iteration per batch (in process, 1,000 streams: a paced coroutine doing a database read per
# event kept ~0.93 of its rate with batches of 8, ~0.85 with 25; below 8 it gained little).
WAKE_BATCH = 8


def flush_delay(subscribers: int) -> float:
    """The least time in seconds between two flushes of a campaign."""
    return min(FLUSH_DELAY_MAX, subscribers * FLUSH_DELAY_PER_SUBSCRIBER)


def event_data(ev: Event) -> dict[str, Any]:
    """An event's JSON as the SSE ``data`` line and each webhook delivery carry it."""
    return {"id": ev.id, "campaign_id": ev.campaign_id, **ev.payload}


def event_body(ev: Event) -> bytes:
    """``event_data`` as the compact JSON bytes the SSE ``data`` line holds (and a webhook's body is)."""
    return json.dumps(event_data(ev), separators=(",", ":")).encode("utf-8")


def sse_frame(event: str | None, data: Mapping[str, Any], event_id: int | None) -> bytes:
    """One Server-Sent Events message: optional ``id:`` and ``event:`` lines, then compact JSON data."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Frame:
    """One event as it goes on the wire, encoded once and shared by every subscriber."""

    id: int
    data: bytes  # the event's frame
    ends: bool  # the campaign's ``end`` event: the last of its stream

    @classmethod
    def of(cls, ev: Event) -> Frame:
        # The end is a stored event like any other (written when the campaign is over: terminal and its
        # last call ended, domain.campaign.over), so a replay from any id ends with it as the live stream
        # did. A terminal status event no longer ends the stream: a stop leaves calls up whose outcomes
        # come after it.
        assert ev.id is not None
        data = sse_frame(ev.kind, event_data(ev), ev.id)
        return cls(ev.id, data, ev.kind == END_EVENT)


class _Channel:
    """One campaign's recent frames and the subscribers reading them."""

    def __init__(self, size: int, epoch: int) -> None:
        self.epoch = epoch  # tells this channel from an earlier one of the same campaign (services/peers.py)
        self.log: deque[Frame] = deque(maxlen=size)
        self.count = 0  # frames ever appended; the log holds the last len(log) of them
        self.subs: dict[Subscription, None] = {}  # a set that wakes the oldest subscribers first
        self.flush: asyncio.TimerHandle | None = None  # armed while frames wait for a flush
        self.flushed = float("-inf")  # loop time of the last flush


class Subscription:
    def __init__(self, campaign_id: str, channel: _Channel) -> None:
        self.campaign_id = campaign_id
        self._channel = channel
        self._seen = channel.count
        self.wakeup = asyncio.Event()

    def take(self) -> list[Frame] | None:
        """The frames published since the last take, oldest first; None if some are lost, so the caller
        must catch up from the database. Either way the subscription is then level with the hub."""
        log, count = self._channel.log, self._channel.count
        missed, self._seen = count - self._seen, count
        self.wakeup.clear()
        if missed > len(log):
            return None
        return [log[i] for i in range(len(log) - missed, len(log))]


class EventHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._channels: dict[str, _Channel] = {}
        self._epochs = 0

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            channel = self._channels.get(event.campaign_id)
            if channel is None:
                continue
            channel.log.append(Frame.of(event))
            channel.count += 1
            if channel.flush is None:  # a time in the past runs at the next loop iteration
                at = channel.flushed + flush_delay(len(channel.subs))
                channel.flush = asyncio.get_running_loop().call_at(at, self._flush, channel)

    def _flush(self, channel: _Channel) -> None:
        channel.flush = None
        channel.flushed = asyncio.get_running_loop().time()
        self._wake(list(channel.subs), 0)

    def _wake(self, subs: list[Subscription], start: int) -> None:
        # Each woken stream runs in the next loop iteration; the rest are woken in the one after, behind
        # whatever became ready meanwhile (the dispatcher's database results, timers, PBX messages).
        for sub in subs[start : start + WAKE_BATCH]:
            sub.wakeup.set()
        if start + WAKE_BATCH < len(subs):
            asyncio.get_running_loop().call_soon(self._wake, subs, start + WAKE_BATCH)

    def subscribe(self, campaign_id: str) -> Subscription:
        channel = self._channels.get(campaign_id)
        if channel is None:
            self._epochs += 1
            channel = self._channels[campaign_id] = _Channel(self.queue_size, self._epochs)
        sub = Subscription(campaign_id, channel)
        channel.subs[sub] = None
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        channel = self._channels.get(sub.campaign_id)
        if channel is not None:
            channel.subs.pop(sub, None)
            if not channel.subs:
                if channel.flush is not None:
                    channel.flush.cancel()
                del self._channels[sub.campaign_id]

    def subscriber_count(self, campaign_id: str | None = None) -> int:
        if campaign_id is not None:
            channel = self._channels.get(campaign_id)
            return 0 if channel is None else len(channel.subs)
        return sum(len(c.subs) for c in self._channels.values())

    def epoch(self, campaign_id: str) -> int | None:
        """None if the campaign has no subscriber; else a number that changes only when it has had none
        in between (its channel was dropped and made again)."""
        channel = self._channels.get(campaign_id)
        return None if channel is None else channel.epoch

    def resync(self) -> None:
        """Every subscriber catches up from the ``event`` table (its next ``take`` is None), as one that
        lagged does: what was published may have a hole (services/peers.py, after its LISTEN was lost)."""
        for channel in self._channels.values():
            channel.log.clear()
            channel.count += 1  # one more than the log holds: every subscriber has missed something
            self._wake(list(channel.subs), 0)

    def close_all(self) -> None:
        """Wake every subscriber so streams can end during shutdown."""
        for channel in self._channels.values():
            for sub in channel.subs:
                sub.wakeup.set()
