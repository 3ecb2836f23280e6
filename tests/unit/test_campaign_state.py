"""The campaign lifecycle and the contact statuses, checked cell by cell against tables written here.

(The moves of a call's attempt, the state machine that runs, are checked in ``test_call.py``.)
"""

from __future__ import annotations

import itertools

import pytest

from dialerd.domain.campaign import (
    VISIBLE,
    CampaignAction,
    CampaignStatus,
    Decision,
    TransitionRefused,
    decide,
    initial_status,
)
from dialerd.domain.contact import ContactStatus, FailureReason, will_retry

# Rows: current status; columns: action. A status name is the new status, "=" an accepted no-op
# (changed False, status unchanged), "gone" a delete that goes through (status None), "x" a refusal.
CAMPAIGN_TABLE = """
            start      pause      resume     stop       delete     schedule_due  finish     fail
draft       running    x          x          completed  gone       x             x          x
scheduled   running    x          x          completed  gone       running       x          failed
running     x          paused     x          completed  x          x             completed  failed
paused      running    x          running    completed  gone       x             x          failed
completed   x          x          x          =          gone       x             x          x
failed      x          x          x          =          gone       x             x          x
importing   x          x          x          x          gone       x             x          x
"""


def _parse_table(text: str) -> dict[tuple[CampaignStatus, CampaignAction], str]:
    header, *rows = [line.split() for line in text.strip().splitlines()]
    actions = [CampaignAction(name) for name in header]
    table: dict[tuple[CampaignStatus, CampaignAction], str] = {}
    for status_name, *cells in rows:
        assert len(cells) == len(actions), f"row {status_name} has {len(cells)} cells"
        for action, cell in zip(actions, cells, strict=True):
            table[(CampaignStatus(status_name), action)] = cell
    return table


EXPECTED = _parse_table(CAMPAIGN_TABLE)
ALL_PAIRS = list(itertools.product(CampaignStatus, CampaignAction))


def _cases(kind: str) -> list[tuple[CampaignStatus, CampaignAction, str]]:
    def matches(cell: str) -> bool:
        if kind == "refused":
            return cell == "x"
        if kind == "no-op":
            return cell == "="
        if kind == "delete":
            return cell == "gone"
        return cell not in ("x", "=", "gone")

    return [(s, a, cell) for (s, a), cell in EXPECTED.items() if matches(cell)]


def test_expected_table_covers_every_status_and_action() -> None:
    assert set(EXPECTED) == set(ALL_PAIRS)
    assert len(EXPECTED) == len(CampaignStatus) * len(CampaignAction)


@pytest.mark.parametrize(("status", "action", "new"), _cases("allowed"))
def test_allowed_transition_moves_to_new_status(status: CampaignStatus, action: CampaignAction, new: str) -> None:
    assert decide(status, action) == Decision(status=CampaignStatus(new), changed=True)


@pytest.mark.parametrize(("status", "action", "_cell"), _cases("no-op"))
def test_idempotent_action_changes_nothing(status: CampaignStatus, action: CampaignAction, _cell: str) -> None:
    assert decide(status, action) == Decision(status=status, changed=False)


@pytest.mark.parametrize(("status", "action", "_cell"), _cases("delete"))
def test_delete_goes_through_outside_running(status: CampaignStatus, action: CampaignAction, _cell: str) -> None:
    assert decide(status, action) == Decision(status=None, changed=True)


@pytest.mark.parametrize(("status", "action", "_cell"), _cases("refused"))
def test_refused_transition_says_why(status: CampaignStatus, action: CampaignAction, _cell: str) -> None:
    with pytest.raises(TransitionRefused) as info:
        decide(status, action)
    refused = info.value
    assert (refused.status, refused.action) == (status, action)
    assert refused.reason, "a refusal must carry a reason"
    assert str(refused) == refused.reason
    assert status.value in refused.reason or "already" in refused.reason, refused.reason


def test_every_case_is_checked_by_exactly_one_kind() -> None:
    kinds = ("allowed", "no-op", "delete", "refused")
    checked = [(s, a) for kind in kinds for s, a, _ in _cases(kind)]
    assert sorted(checked) == sorted(ALL_PAIRS)


def test_delete_while_running_tells_the_operator_what_to_do() -> None:
    with pytest.raises(TransitionRefused) as info:
        decide(CampaignStatus.RUNNING, CampaignAction.DELETE)
    assert "running" in info.value.reason
    assert "stop" in info.value.reason or "pause" in info.value.reason


def test_repeated_start_and_pause_say_already() -> None:
    with pytest.raises(TransitionRefused, match="already"):
        decide(CampaignStatus.RUNNING, CampaignAction.START)
    with pytest.raises(TransitionRefused, match="already"):
        decide(CampaignStatus.PAUSED, CampaignAction.PAUSE)


@pytest.mark.parametrize("status", [CampaignStatus.COMPLETED, CampaignStatus.FAILED])
def test_terminal_statuses_are_terminal(status: CampaignStatus) -> None:
    assert status.terminal
    moves = [a for a in CampaignAction if a not in (CampaignAction.STOP, CampaignAction.DELETE)]
    for action in moves:
        with pytest.raises(TransitionRefused):
            decide(status, action)


def test_only_completed_and_failed_are_terminal() -> None:
    assert {s for s in CampaignStatus if s.terminal} == {CampaignStatus.COMPLETED, CampaignStatus.FAILED}


def test_initial_status() -> None:
    assert initial_status(scheduled=False) is CampaignStatus.DRAFT
    assert initial_status(scheduled=True) is CampaignStatus.SCHEDULED


@pytest.mark.parametrize("status", list(CampaignStatus))
def test_only_running_campaigns_dispatch(status: CampaignStatus) -> None:
    assert status.dispatching is (status is CampaignStatus.RUNNING)


def test_importing_is_a_status_the_api_never_shows() -> None:
    assert CampaignStatus("importing") is CampaignStatus.IMPORTING
    assert not CampaignStatus.IMPORTING.terminal
    assert CampaignStatus.IMPORTING not in VISIBLE
    assert set(VISIBLE) | {CampaignStatus.IMPORTING} == set(CampaignStatus)


# ---- contacts ---------------------------------------------------------------------------------------

C = ContactStatus
RETRYABLE = {"busy", "no_answer", "congestion", "unreachable", "machine"}
NEVER_RETRIED = {"invalid_number", "rejected", "originate_error", "app_unavailable"}


@pytest.mark.parametrize("status", list(ContactStatus))
def test_final_statuses(status: ContactStatus) -> None:
    assert status.final is (status in {C.COMPLETED, C.FAILED, C.CANCELLED, C.SKIPPED})


@pytest.mark.parametrize("status", list(ContactStatus))
def test_in_flight_statuses(status: ContactStatus) -> None:
    assert status.in_flight is (status in {C.ORIGINATED, C.CONNECTED})


def test_failure_reasons_are_split_into_retryable_and_not() -> None:
    assert {r.value for r in FailureReason} == RETRYABLE | NEVER_RETRIED
    assert {r.value for r in FailureReason if r.retryable} == RETRYABLE


@pytest.mark.parametrize("reason", list(FailureReason))
def test_will_retry_every_reason_attempts_and_retries(reason: FailureReason) -> None:
    for retries, attempts in itertools.product(range(6), range(1, 8)):
        expected = reason.value in RETRYABLE and attempts <= retries
        assert will_retry(reason, attempts, retries) is expected, (reason, attempts, retries)


def test_no_retries_means_one_attempt_and_n_retries_mean_n_plus_one() -> None:
    assert not will_retry(FailureReason.BUSY, attempts=1, retries_per_contact=0)
    assert will_retry(FailureReason.BUSY, attempts=3, retries_per_contact=3)
    assert not will_retry(FailureReason.BUSY, attempts=4, retries_per_contact=3)
    assert not will_retry(FailureReason.INVALID_NUMBER, attempts=1, retries_per_contact=5)
