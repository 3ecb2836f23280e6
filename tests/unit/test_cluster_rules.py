"""domain/cluster.py: the caps judged across daemons, the global pace (GCRA) and a daemon's liveness."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dialerd.domain.caps import DailyCaps
from dialerd.domain.cluster import (
    FULL_RECHECK,
    ClusterFigures,
    NodeView,
    alive,
    cluster_hold,
    next_pace,
    pace_interval,
)
from dialerd.domain.rules import BlockReason

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
FREE = ClusterFigures(max_concurrent_calls=3, concurrent_max=5, calls_per_minute=60, campaign_in_flight=0,
                      tenant_in_flight=0, tenant_last_minute=0, oldest_in_minute=None, pace_at=None)


def test_nothing_holds_a_free_tenant() -> None:
    assert cluster_hold(FREE, NOW) is None


def test_the_campaign_cap_comes_first_then_the_tenants() -> None:
    both = replace(FREE, campaign_in_flight=3, tenant_in_flight=5)
    hold = cluster_hold(both, NOW)
    assert hold is not None and hold.reason == BlockReason.CAMPAIGN_CONCURRENCY
    assert hold.until == NOW + FULL_RECHECK and hold.detail == {"max_concurrent_calls": 3, "in_flight": 3}
    hold = cluster_hold(replace(FREE, tenant_in_flight=5), NOW)
    assert hold is not None and hold.reason == BlockReason.TENANT_CONCURRENCY
    assert hold.detail == {"concurrent_max": 5, "in_flight": 5}
    assert cluster_hold(replace(FREE, campaign_in_flight=2, tenant_in_flight=4), NOW) is None


def test_the_daily_cap_holds_until_the_tenants_midnight() -> None:
    f = replace(FREE, daily=DailyCaps(calls_max=10, timezone="America/New_York"), calls_today=10)
    hold = cluster_hold(f, NOW)
    assert hold is not None and hold.reason == BlockReason.DAILY_CALLS_MAX
    assert hold.until == datetime(2026, 12, 5, 5, 0, tzinfo=UTC)  # midnight in New York
    assert cluster_hold(replace(f, calls_today=9), NOW) is None


def test_the_pace_holds_until_its_instant_and_then_lets_one_start() -> None:
    later = NOW + timedelta(milliseconds=400)
    hold = cluster_hold(replace(FREE, pace_at=later), NOW)
    assert hold is not None and hold.reason == BlockReason.TENANT_RATE and hold.until == later
    assert cluster_hold(replace(FREE, pace_at=later), later) is None
    assert cluster_hold(replace(FREE, pace_at=NOW - timedelta(seconds=1)), NOW) is None


def test_the_hard_window_holds_until_the_oldest_start_leaves_it() -> None:
    oldest = NOW - timedelta(seconds=50)
    full = replace(FREE, calls_per_minute=6, tenant_last_minute=6, oldest_in_minute=oldest)
    hold = cluster_hold(full, NOW)
    assert hold is not None and hold.reason == BlockReason.TENANT_RATE
    assert hold.until == oldest + timedelta(seconds=60, milliseconds=1)
    # The later of the pace and the window.
    hold = cluster_hold(replace(full, pace_at=NOW + timedelta(seconds=20)), NOW)
    assert hold is not None and hold.until == NOW + timedelta(seconds=20)
    assert cluster_hold(replace(full, tenant_last_minute=5), NOW) is None


def test_next_pace_spaces_starts_evenly_without_a_burst_after_idling() -> None:
    assert pace_interval(60) == timedelta(seconds=1)
    assert next_pace(None, NOW, 60) == NOW + timedelta(seconds=1)
    # Idle for an hour: the next start is one interval after now, not a backlog of allowed starts.
    assert next_pace(NOW - timedelta(hours=1), NOW, 60) == NOW + timedelta(seconds=1)
    # Started early on a pace still ahead: the pace moves on from where it was.
    ahead = NOW + timedelta(milliseconds=300)
    assert next_pace(ahead, NOW, 120) == ahead + timedelta(milliseconds=500)
    # N starts at the pace take (N - 1) intervals: the rate is exact.
    pace, t = None, NOW
    for _ in range(600):
        hold = cluster_hold(replace(FREE, calls_per_minute=600, pace_at=pace), t)
        if hold is not None:
            assert hold.until is not None
            t = hold.until
        pace = next_pace(pace, t, 600)
    assert t - NOW == timedelta(seconds=59.9)


def test_a_daemon_is_alive_while_its_heartbeat_is_recent_and_it_has_not_stopped() -> None:
    node = NodeView("pbx1/dialerd", 3, "http://127.0.0.1:8088", "up", None, 0, NOW - timedelta(seconds=4))
    lapse = timedelta(seconds=5)
    assert alive(node, NOW, lapse)
    assert not alive(replace(node, heartbeat_at=NOW - timedelta(seconds=6)), NOW, lapse)
    assert not alive(replace(node, state="stopped"), NOW, lapse)
