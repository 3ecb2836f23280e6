"""Several daemons on one database (issue 13): the caps judged across all of them, the global pace, and
a daemon's liveness. Pure: the store gathers the figures under the tenant's row lock and asks here.

The figures are the database's, not one process's: the attempts in flight of the campaign and of the
tenant on every daemon (an attempt is committed before its originate leaves and leaves flight only once
the PBX reported the call's end, so these counts are never below the channels on all PBXs together), the
tenant's starts in the last 60 s and its pace, and today's usage when a daily cap is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dialerd.domain.caps import DailyCaps, daily_holds
from dialerd.domain.rules import BlockReason, Hold

RATE_WINDOW = timedelta(seconds=60)
# A cap that is full lifts when some call ends, on any daemon; no daemon is told, so the claimer looks
# again after this long (the local ledger wakes it at once for its own calls' ends).
FULL_RECHECK = timedelta(seconds=0.25)


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    """What the store read for one claim, in the claim's transaction, under the tenant's row lock."""

    max_concurrent_calls: int  # the campaign's
    concurrent_max: int  # the tenant's
    calls_per_minute: int  # the tenant's
    campaign_in_flight: int  # the campaign's attempts in flight, every daemon
    tenant_in_flight: int  # the tenant's attempts in flight, every daemon
    tenant_last_minute: int  # the tenant's attempts created in the last RATE_WINDOW
    oldest_in_minute: datetime | None  # the earliest of those (when the window frees a start)
    pace_at: datetime | None  # the tenant's theoretical next start (GCRA); None: never paced
    daily: DailyCaps = DailyCaps()
    calls_today: int = 0
    minutes_today: float = 0.0


def pace_interval(calls_per_minute: int) -> timedelta:
    return RATE_WINDOW / max(1, calls_per_minute)


def cluster_hold(f: ClusterFigures, now: datetime, today: datetime | None = None) -> Hold | None:
    """Whether a claim at ``now`` must wait, and until when (``Hold.until``); None: it may start.
    ``today``: the instant whose calendar day the daily caps count (default ``now``; the ledger's wall
    clock, which tests move past midnight).

    Checked in the order a user reads them in ``explain``: the campaign's cap, the tenant's, the day's,
    then the pace (even spacing, GCRA on ``pace_at``) and the hard 60 s window (``calls_per_minute``
    starts at most in any window, as the single-daemon pacer).
    """
    if f.campaign_in_flight >= f.max_concurrent_calls:
        return Hold(BlockReason.CAMPAIGN_CONCURRENCY, now + FULL_RECHECK,
                    {"max_concurrent_calls": f.max_concurrent_calls, "in_flight": f.campaign_in_flight})
    if f.tenant_in_flight >= f.concurrent_max:
        return Hold(BlockReason.TENANT_CONCURRENCY, now + FULL_RECHECK,
                    {"concurrent_max": f.concurrent_max, "in_flight": f.tenant_in_flight})
    daily = daily_holds(f.daily, calls_today=f.calls_today, minutes_today=f.minutes_today,
                        now=now if today is None else today)
    if daily:
        return daily[0]
    until: datetime | None = None
    if f.pace_at is not None and f.pace_at > now:
        until = f.pace_at
    if f.tenant_last_minute >= f.calls_per_minute and f.oldest_in_minute is not None:
        window_free = f.oldest_in_minute + RATE_WINDOW + timedelta(milliseconds=1)
        until = window_free if until is None else max(until, window_free)
    if until is not None and until > now:
        return Hold(BlockReason.TENANT_RATE, until, {"calls_per_minute": f.calls_per_minute})
    return None


def next_pace(pace_at: datetime | None, now: datetime, calls_per_minute: int) -> datetime:
    """The tenant's ``pace_at`` after a start at ``now`` (GCRA: no burst after an idle spell)."""
    base = now if pace_at is None or pace_at < now else pace_at
    return base + pace_interval(calls_per_minute)


class Fenced(Exception):
    """This daemon's epoch moved on: another process registered under its id or took its work over.

    Nothing may be claimed or dialled under the old epoch; the daemon stops (and systemd restarts it,
    under a new epoch)."""

    def __init__(self, node_id: str, epoch: int, current: int | None) -> None:
        super().__init__(f"daemon {node_id} is fenced: its epoch {epoch} was replaced by {current}")
        self.node_id = node_id
        self.epoch = epoch
        self.current = current


@dataclass(frozen=True, slots=True)
class Seat:
    """A daemon's place in the cluster: its id and the epoch it registered with."""

    node_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class NodeView:
    """A daemon as its row says (for ``/health`` and the takeover's choice)."""

    node_id: str
    epoch: int
    pbx: str
    state: str
    held_reason: str | None
    calls_in_flight: int
    heartbeat_at: datetime
    fence_key: str | None = None  # its PBX fences its originates under this key (None: no fence)


def alive(node: NodeView, now: datetime, lapse: timedelta) -> bool:
    """Whether the daemon's heartbeat is recent enough (a clean stop says so at once)."""
    return node.state == "up" and now - node.heartbeat_at <= lapse
