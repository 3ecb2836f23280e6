"""``GET /api/v1/call-limits``: the caller's tenant limits and its live usage (issue 11, item 6).

The limits are the tenant row's (0 = no limit; ``timezone`` "UTC" when unset). The usage: ``in_flight``
from the in-flight ledger (calls holding a slot now), ``calls_last_minute`` (attempts started in the last
60 s), ``calls_today`` and ``minutes_today`` from the store, counted as the daily caps count them
(``domain/caps.py``): the attempts started within the tenant's calendar day (an attempt counts for the day
it started in), and the answered talk minutes of those of them that have ended (a call still up counts
once it ends).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from dialerd.domain.caps import tenant_day
from dialerd.errors import NotFound
from dialerd.services.auth import Principal
from dialerd.store.tables import Tenant
from dialerd.timestamps import utcnow

RATE_WINDOW = timedelta(seconds=60)


class LimitsStore(Protocol):
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenant_day_usage(self, tenant_id: str, start: datetime, end: datetime) -> tuple[int, float]: ...


class CallLimits:
    def __init__(self, store: LimitsStore, *, in_flight: Callable[[str], int],
                 wall: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.in_flight = in_flight  # the tenant's calls holding a slot (Slots.tenant_in_flight)
        self.wall = wall

    async def get(self, who: Principal) -> dict[str, Any]:
        """The body of GET /api/v1/call-limits (api/schemas.py's CallLimits)."""
        tenant = await self.store.get_tenant(who.tenant_id)
        if tenant is None:  # a key outlives no tenant (tenants are never deleted); be explicit anyway
            raise NotFound("the key's tenant does not exist", error_id="tenant_not_found")
        now = self.wall()
        start, end = tenant_day(now, tenant.timezone or None)
        calls_today, talk = await self.store.tenant_day_usage(tenant.id, start, end)
        last_minute, _ = await self.store.tenant_day_usage(tenant.id, now - RATE_WINDOW, now + RATE_WINDOW)
        return {
            "limits": {
                "concurrent_max": tenant.concurrent_max,
                "calls_per_minute": tenant.calls_per_minute,
                "daily_calls_max": tenant.daily_calls_max,
                "daily_minutes_max": tenant.daily_minutes_max,
                "max_attempts_per_number": tenant.max_attempts_per_number,
                "frequency_window_hours": tenant.frequency_window_hours,
                "timezone": tenant.timezone or "UTC",
            },
            "usage": {
                "in_flight": self.in_flight(tenant.id),
                "calls_last_minute": last_minute,
                "calls_today": calls_today,
                "minutes_today": round(talk / 60.0, 2),
            },
        }
