"""Live figures per campaign for the SSE snapshot, cached so many subscribers cost one query."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from dialerd.store.repo import Store
from dialerd.store.tables import utcnow


class Metrics:
    def __init__(
        self,
        store: Store,
        *,
        in_flight: Callable[[str], int | None] = lambda _cid: None,
        pbx_connected: Callable[[], bool | None] = lambda: None,
        ttl: float = 0.5,
    ) -> None:
        self.store = store
        self.in_flight = in_flight
        self.pbx_connected = pbx_connected
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def snapshot(self, campaign_id: str) -> dict[str, Any] | None:
        hit = self._cache.get(campaign_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            return None
        counts = (await self.store.contact_counts([campaign_id]))[campaign_id]
        stats = await self.store.attempt_stats(campaign_id, utcnow() - timedelta(seconds=60))
        in_flight = self.in_flight(campaign_id)
        if in_flight is None:
            in_flight = counts.get("originated", 0) + counts.get("connected", 0)
        snap = {
            "type": "snapshot",
            "campaign_id": campaign_id,
            "status": campaign.status,
            "contacts": {"total": sum(counts.values()), **counts},
            "calls_in_flight": in_flight,
            "calls_per_minute": stats["calls_last_minute"],
            "answer_rate": round(stats["answered"] / stats["ended"], 4) if stats["ended"] else 0.0,
            "avg_talk_seconds": stats["avg_talk_seconds"],
            "pbx_connected": self.pbx_connected(),
            "at": utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        self._cache[campaign_id] = (now, snap)
        if len(self._cache) > 10000:
            self._cache.clear()
        return snap
