"""The explain answer (``dialerd/domain/explain.py``): reasons, their order, and ``dialling``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.explain import CONTACT_ORDER, STOPS, THROTTLES, Blocker, Tally, explain, tally
from dialerd.domain.rules import PER_CONTACT, BlockReason, Hold

B = BlockReason
S = CampaignStatus
NOW = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)

# The reason names are the API's contract (issue 11).
CONTRACT = [
    "paused", "scheduled", "pbx_disconnected", "campaign_concurrency", "tenant_concurrency", "tenant_rate",
    "daily_calls_max", "daily_minutes_max", "outside_calling_hours", "no_timezone", "retry_delay",
    "frequency_cap", "no_pending_contacts",
]


def test_the_reasons_are_exactly_the_contract() -> None:
    assert sorted(r.value for r in BlockReason) == sorted(CONTRACT)
    placed = [*STOPS, *THROTTLES, *CONTACT_ORDER, B.NO_PENDING_CONTACTS]
    assert sorted(placed) == sorted(BlockReason)  # every reason has its place in the order, once
    assert set(CONTACT_ORDER) == PER_CONTACT == {r for r in BlockReason if r.per_contact}


def run(**kwargs: Any) -> Any:
    args: dict[str, Any] = {"campaign_id": "c1", "status": S.RUNNING, "pending": 10, "eligible_now": 0,
                            "in_flight": 0}
    args.update(kwargs)
    return explain(**args)


def reasons(**kwargs: Any) -> list[str]:
    return [b.reason.value for b in run(**kwargs).blocked_by]


def test_a_running_campaign_with_eligible_contacts_is_dialling() -> None:
    answer = run(eligible_now=10)
    assert answer.dialling and answer.blocked_by == ()
    assert answer.as_json() == {
        "campaign_id": "c1", "status": "running", "dialling": True, "pending": 10, "eligible_now": 10,
        "blocked_by": [],
    }


# One row per reason explain must name: the situation, then the first reason of blocked_by.
SITUATIONS: list[tuple[dict[str, Any], str]] = [
    ({"status": S.PAUSED, "eligible_now": 10}, "paused"),
    ({"status": S.SCHEDULED, "eligible_now": 10, "scheduled_at": LATER}, "scheduled"),
    ({"eligible_now": 10, "campaign_holds": [Hold(B.PBX_DISCONNECTED)]}, "pbx_disconnected"),
    ({"eligible_now": 10, "in_flight": 5, "campaign_holds": [Hold(B.CAMPAIGN_CONCURRENCY)]}, "campaign_concurrency"),
    ({"eligible_now": 10, "campaign_holds": [Hold(B.TENANT_CONCURRENCY)]}, "tenant_concurrency"),
    ({"eligible_now": 10, "campaign_holds": [Hold(B.TENANT_RATE, until=NOW)]}, "tenant_rate"),
    ({"eligible_now": 10, "campaign_holds": [Hold(B.DAILY_CALLS_MAX, until=LATER)]}, "daily_calls_max"),
    ({"eligible_now": 10, "campaign_holds": [Hold(B.DAILY_MINUTES_MAX, until=LATER)]}, "daily_minutes_max"),
    ({"contact_holds": {B.OUTSIDE_CALLING_HOURS: Tally(10, LATER)}}, "outside_calling_hours"),
    ({"contact_holds": {B.NO_TIMEZONE: Tally(10)}}, "no_timezone"),
    ({"contact_holds": {B.RETRY_DELAY: Tally(10, LATER)}}, "retry_delay"),
    ({"contact_holds": {B.FREQUENCY_CAP: Tally(10, LATER)}}, "frequency_cap"),
    ({"pending": 0}, "no_pending_contacts"),
]


@pytest.mark.parametrize(("situation", "reason"), SITUATIONS, ids=[r for _, r in SITUATIONS])
def test_each_situation_names_its_reason(situation: dict[str, Any], reason: str) -> None:
    assert reasons(**situation) == [reason]
    # Only a campaign at its own concurrency, its calls up, is still dialling.
    assert run(**situation).dialling is (reason == "campaign_concurrency")


def test_campaign_wide_reasons_come_first_stops_before_throttles() -> None:
    holds = [Hold(B.TENANT_RATE), Hold(B.CAMPAIGN_CONCURRENCY), Hold(B.DAILY_MINUTES_MAX), Hold(B.TENANT_CONCURRENCY),
             Hold(B.DAILY_CALLS_MAX), Hold(B.PBX_DISCONNECTED)]
    contacts = {B.RETRY_DELAY: Tally(9, LATER)}
    assert reasons(status=S.PAUSED, campaign_holds=holds, contact_holds=contacts) == [
        "paused", "pbx_disconnected", "daily_calls_max", "daily_minutes_max", "tenant_concurrency",
        "campaign_concurrency", "tenant_rate", "retry_delay",
    ]


def test_per_contact_reasons_by_how_many_contacts_they_hold_back() -> None:
    contacts = {
        B.RETRY_DELAY: Tally(2, LATER),
        B.OUTSIDE_CALLING_HOURS: Tally(5, LATER),
        B.FREQUENCY_CAP: Tally(3, LATER),
        B.NO_TIMEZONE: Tally(0),  # holds nobody: left out
    }
    answer = run(pending=12, eligible_now=2, contact_holds=contacts)
    assert [(b.reason.value, b.contacts) for b in answer.blocked_by] == [
        ("outside_calling_hours", 5), ("frequency_cap", 3), ("retry_delay", 2),
    ]
    assert answer.dialling  # two contacts may be dialled now


def test_ties_keep_the_fixed_order() -> None:
    contacts = {B.FREQUENCY_CAP: Tally(3), B.RETRY_DELAY: Tally(3), B.NO_TIMEZONE: Tally(3),
                B.OUTSIDE_CALLING_HOURS: Tally(3)}
    assert reasons(contact_holds=contacts) == ["outside_calling_hours", "no_timezone", "retry_delay", "frequency_cap"]


def test_nothing_pending_comes_first() -> None:
    assert reasons(status=S.PAUSED, pending=0) == ["no_pending_contacts", "paused"]
    # Its last calls still up: it is dialling them.
    assert run(pending=0, in_flight=2).dialling
    assert not run(pending=0).dialling


@pytest.mark.parametrize("status", [S.DRAFT, S.COMPLETED, S.FAILED])
def test_statuses_without_a_reason_of_their_own(status: CampaignStatus) -> None:
    answer = run(status=status, eligible_now=10)
    assert not answer.dialling and answer.blocked_by == ()


@pytest.mark.parametrize(
    ("holds", "in_flight", "eligible", "dialling"),
    [
        ([], 0, 0, False),  # running, nothing eligible, nothing up
        ([], 3, 0, True),  # its calls are up
        ([Hold(B.TENANT_RATE)], 0, 5, False),  # throttled with nothing of its own up
        ([Hold(B.TENANT_RATE)], 1, 5, True),
        ([Hold(B.TENANT_CONCURRENCY)], 0, 5, False),  # the tenant's other campaigns hold every slot
        ([Hold(B.DAILY_CALLS_MAX)], 3, 5, False),  # calls still up, but no new one may start today
        ([Hold(B.PBX_DISCONNECTED)], 3, 5, False),
    ],
)
def test_dialling(holds: list[Hold], in_flight: int, eligible: int, dialling: bool) -> None:
    assert run(campaign_holds=holds, in_flight=in_flight, eligible_now=eligible).dialling is dialling


def test_as_json() -> None:
    answer = run(
        status=S.SCHEDULED, scheduled_at=LATER, pending=7, eligible_now=3,
        campaign_holds=[Hold(B.DAILY_CALLS_MAX, until=LATER, detail={"limit": 100, "used": 100, "timezone": "UTC"})],
        contact_holds={B.NO_TIMEZONE: Tally(4)},
    )
    assert answer.as_json() == {
        "campaign_id": "c1", "status": "scheduled", "dialling": False, "pending": 7, "eligible_now": 3,
        "blocked_by": [
            {"reason": "scheduled", "next_at": "2026-03-02T18:00:00.000Z", "detail": {}},
            {"reason": "daily_calls_max", "next_at": "2026-03-02T18:00:00.000Z",
             "detail": {"limit": 100, "used": 100, "timezone": "UTC"}},
            {"reason": "no_timezone", "contacts": 4, "next_at": None, "detail": {}},
        ],
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"campaign_holds": [Hold(B.RETRY_DELAY)]}, "retry_delay is not a campaign-wide limit"),
        ({"campaign_holds": [Hold(B.PAUSED)]}, "paused is not a campaign-wide limit the caller gives"),
        ({"campaign_holds": [Hold(B.NO_PENDING_CONTACTS)]}, "no_pending_contacts is not"),
        ({"campaign_holds": [Hold(B.TENANT_RATE), Hold(B.TENANT_RATE)]}, "tenant_rate given twice"),
        ({"contact_holds": {B.TENANT_RATE: Tally(1)}}, "tenant_rate is not a per-contact reason"),
    ],
)
def test_reasons_in_the_wrong_place_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(**kwargs)


def test_tally_counts_holds_and_keeps_the_earliest_time() -> None:
    holds = [
        None,
        Hold(B.RETRY_DELAY, until=LATER),
        Hold(B.RETRY_DELAY, until=NOW),
        Hold(B.RETRY_DELAY),
        Hold(B.NO_TIMEZONE),
        None,
        Hold(B.OUTSIDE_CALLING_HOURS, until=LATER),
    ]
    assert tally(holds) == {
        B.RETRY_DELAY: Tally(3, NOW),
        B.NO_TIMEZONE: Tally(1, None),
        B.OUTSIDE_CALLING_HOURS: Tally(1, LATER),
    }
    assert tally([]) == {}


def test_blocker_json_omits_contacts_for_campaign_wide_reasons() -> None:
    assert Blocker(B.TENANT_RATE).as_json() == {"reason": "tenant_rate", "next_at": None, "detail": {}}
    assert Blocker(B.RETRY_DELAY, 0).as_json()["contacts"] == 0


def test_a_deferred_scheduled_start_says_so_in_its_detail() -> None:
    deferred = {"reason": "tenant_concurrency_exceeded", "since": "2026-03-02T17:00:00.000Z", "detail": "..."}
    answer = run(status=S.SCHEDULED, eligible_now=10, scheduled_at=NOW, scheduled_detail={"start_deferred": deferred})
    assert answer.blocked_by == (Blocker(B.SCHEDULED, None, NOW, {"start_deferred": deferred}),)
