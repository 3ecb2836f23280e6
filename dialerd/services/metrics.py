"""Live figures per campaign for the SSE snapshot, cached so many subscribers cost one query."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from dialerd.domain.caller_id import CallerIdStat
from dialerd.store.repo import Store
from dialerd.timestamps import rfc3339, utcnow

CALLER_ID_METRICS_HOURS = 24  # an ended campaign's caller id series stay on /metrics this long


class Metrics:
    def __init__(
        self,
        store: Store,
        *,
        in_flight: Callable[[str], int | None] = lambda _cid: None,
        pbx_connected: Callable[[], bool | None] = lambda: None,
        dialling_held: Callable[[], str | None] = lambda: None,
        ttl: float = 1.0,
    ) -> None:
        self.store = store
        self.in_flight = in_flight
        self.pbx_connected = pbx_connected
        self.dialling_held = dialling_held
        # Load test (tests/load/test_load.py): with 200 SSE streams, a 0.5 s TTL and no sharing of
        # a query in progress, nearly every snapshot of every stream ran its three queries (~85/s), which
        # starved the dispatcher of database connections. Now a campaign's figures are read at most once
        # per TTL, however many streams ask, and the live parts below are never stale.
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._loading: dict[str, asyncio.Task[dict[str, Any] | None]] = {}

    async def caller_id_counts(self) -> dict[str, list[CallerIdStat]]:
        """For /metrics: per caller id figures of the campaigns running or paused, or ended within
        CALLER_ID_METRICS_HOURS (one grouped read of their attempts)."""
        return await self.store.caller_id_counts(ended_since=utcnow() - timedelta(hours=CALLER_ID_METRICS_HOURS))

    async def snapshot(self, campaign_id: str) -> dict[str, Any] | None:
        figures = await self._figures(campaign_id)
        if figures is None:
            return None
        # Cheap and live (in memory): computed per call, so a snapshot never shows a stale PBX state.
        in_flight = self.in_flight(campaign_id)
        if in_flight is None:
            in_flight = figures["contacts"].get("originated", 0) + figures["contacts"].get("connected", 0)
        return {
            "type": "snapshot",
            "campaign_id": campaign_id,
            "status": figures["status"],
            "contacts": figures["contacts"],
            "calls_in_flight": in_flight,
            "calls_per_minute": figures["calls_per_minute"],
            "answer_rate": figures["answer_rate"],
            "avg_talk_seconds": figures["avg_talk_seconds"],
            "pbx_connected": self.pbx_connected(),
            "dialling_held": self.dialling_held(),  # None, "pbx_down" or "ari_app_replaced"
            "at": rfc3339(utcnow()),
        }

    async def _figures(self, campaign_id: str) -> dict[str, Any] | None:
        hit = self._cache.get(campaign_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        task = self._loading.get(campaign_id)
        if task is None:
            # One query in flight per campaign; every stream that asks meanwhile waits for it.
            task = asyncio.create_task(self._load(campaign_id), name=f"metrics-{campaign_id}")
            self._loading[campaign_id] = task
            task.add_done_callback(lambda t: self._loaded(campaign_id, t))
        # Shielded: one stream going away must not cancel the query the others wait for.
        return await asyncio.shield(task)

    def _loaded(self, campaign_id: str, task: asyncio.Task[dict[str, Any] | None]) -> None:
        self._loading.pop(campaign_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure reaches the waiters, not the loop's "never retrieved"

    async def _load(self, campaign_id: str) -> dict[str, Any] | None:
        started = time.monotonic()
        campaign = await self.store.get_campaign(campaign_id)
        figures: dict[str, Any] | None = None
        if campaign is not None:
            counts = (await self.store.contact_counts([campaign_id]))[campaign_id]
            stats = await self.store.attempt_stats(campaign_id, utcnow() - timedelta(seconds=60))
            figures = {
                "status": campaign.status,
                "contacts": {"total": sum(counts.values()), **counts},
                "calls_per_minute": stats["calls_last_minute"],
                "answer_rate": round(stats["answered"] / stats["ended"], 4) if stats["ended"] else 0.0,
                "avg_talk_seconds": stats["avg_talk_seconds"],
            }
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[campaign_id] = (started, figures)
        return figures
