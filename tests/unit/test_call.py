"""The call model (``dialerd/domain/call.py``): the attempt's moves and the end-of-call decision."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.amd import AnsweredBy
from dialerd.domain.call import (
    IN_FLIGHT,
    MOVES,
    AttemptState,
    CallEvent,
    CallEventKind,
    RetryPolicy,
    Transition,
    can_move,
    decide_end,
    decide_failure,
    ended_answered,
    sources,
    steps,
)
from dialerd.domain.contact import ContactStatus, FailureReason
from dialerd.domain.retry_rules import RetryRules

S = AttemptState
K = CallEventKind

# Rows: the attempt's state; columns: the event's kind. Each cell: the moves the event makes, in order
# ("-" for none). Written here by hand from the semantics, not derived from MOVES.
STEPS_TABLE = """
             progress   answered              ended
dialing      -          originated,answered   originated,ended
originated   -          answered              ended
answered     -          -                     ended
ended        -          -                     -
not_dialled  -          -                     -
"""


def _parse(text: str) -> dict[tuple[AttemptState, CallEventKind], tuple[AttemptState, ...]]:
    header, *rows = [line.split() for line in text.strip().splitlines()]
    kinds = [K(k) for k in header]
    table = {}
    for state, *cells in rows:
        assert len(cells) == len(kinds)
        for kind, cell in zip(kinds, cells, strict=True):
            table[(S(state), kind)] = () if cell == "-" else tuple(S(x) for x in cell.split(","))
    return table


EXPECTED_STEPS = _parse(STEPS_TABLE)

# target -> sources, written out again by hand.
EXPECTED_MOVES = {
    S.DIALING: set(),
    S.ORIGINATED: {S.DIALING},
    S.ANSWERED: {S.DIALING, S.ORIGINATED},
    S.ENDED: {S.DIALING, S.ORIGINATED, S.ANSWERED},
    S.NOT_DIALLED: {S.DIALING, S.ORIGINATED},  # given back before it left, or refused by the PBX fence
}


def test_tables_cover_every_state_and_kind() -> None:
    assert set(EXPECTED_STEPS) == set(itertools.product(AttemptState, CallEventKind))
    assert set(MOVES) == set(AttemptState) == set(EXPECTED_MOVES)


@pytest.mark.parametrize(("state", "kind"), list(itertools.product(AttemptState, CallEventKind)))
def test_every_state_against_every_event_kind(state: AttemptState, kind: CallEventKind) -> None:
    path = steps(state, kind)
    assert path == EXPECTED_STEPS[(state, kind)]
    # Every step is a move the table allows, from where the previous one left the attempt.
    at = state
    for target in path:
        assert can_move(at, target), (at, target)
        at = target


@pytest.mark.parametrize(("current", "target"), list(itertools.product(AttemptState, AttemptState)))
def test_moves_table(current: AttemptState, target: AttemptState) -> None:
    assert can_move(current, target) is (current in EXPECTED_MOVES[target])


def test_the_stored_guard_of_each_move() -> None:
    assert sources(S.ENDED) == ("dialing", "originated", "answered")
    assert sources(S.ORIGINATED) == ("dialing",)
    assert sources(S.ANSWERED) == ("dialing", "originated")
    assert sources(S.DIALING) == ()
    assert all(type(v) is str for v in sources(S.ENDED))  # plain strings for the SQL drivers


def test_in_flight_and_final_states() -> None:
    assert set(IN_FLIGHT) == {S.DIALING, S.ORIGINATED, S.ANSWERED}
    assert {s for s in AttemptState if s.final} == {S.ENDED, S.NOT_DIALLED}
    assert all(not MOVES[target] & {S.ENDED, S.NOT_DIALLED} for target in AttemptState)  # final is final


# ---- the end of a call ------------------------------------------------------------------------------

T0 = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)
END = T0 + timedelta(seconds=30)
NOW = END + timedelta(seconds=1)
BUDGET = RetryPolicy(retries_per_contact=2, retry_delay_seconds=600, stopped=False)
C = ContactStatus
R = FailureReason


def ended(**kw: object) -> CallEvent:
    return CallEvent("dlr-x", K.ENDED, END, **kw)  # type: ignore[arg-type]


def end(state: AttemptState, event: CallEvent, *, attempt: int = 1, answered_at: datetime | None = None,
        policy: RetryPolicy | None = BUDGET) -> Transition:
    return decide_end(state, event, attempt_number=attempt, answered_at=answered_at, policy=policy, now=NOW)


def retried(reason: FailureReason, cause: int | None, sip: int | None) -> Transition:
    return Transition(S.ENDED, C.PENDING, END, cause, sip, reason=reason, retry_at=NOW + timedelta(seconds=600))


def failed(reason: FailureReason, cause: int | None, sip: int | None) -> Transition:
    return Transition(S.ENDED, C.FAILED, END, cause, sip, reason=reason)


def test_busy_is_retried_after_the_delay() -> None:
    t = end(S.ORIGINATED, ended(cause=17, tech_cause=486, state="Ringing", alerted=True))
    assert t == retried(R.BUSY, 17, 486)
    assert not t.answered and not t.cancelled and t.outcome == "busy"


def test_no_answer_after_ringing_is_retried() -> None:
    assert end(S.ORIGINATED, ended(cause=19, state="Ringing", alerted=True)) == retried(R.NO_ANSWER, 19, None)


def test_congestion_is_retried() -> None:
    assert end(S.ORIGINATED, ended(cause=34, tech_cause=503)) == retried(R.CONGESTION, 34, 503)


def test_invalid_number_is_never_retried() -> None:
    t = end(S.ORIGINATED, ended(cause=1, tech_cause=404), attempt=1)
    assert t == failed(R.INVALID_NUMBER, 1, 404)
    assert t.retry_at is None and t.outcome == "invalid_number"


def test_answered_then_hung_up_completes_with_the_talk_time() -> None:
    answered_at = T0 + timedelta(seconds=4, milliseconds=250)
    t = end(S.ANSWERED, ended(cause=16, answered=True, state="Up"), answered_at=answered_at, policy=None)
    assert t == Transition(S.ENDED, C.COMPLETED, END, 16, None, talk_seconds=25.75,
                          answered_by=AnsweredBy.UNKNOWN)  # AMD off
    assert t.answered and t.outcome == "completed" and t.answer_at is None


def test_an_answer_whose_event_was_lost_is_recorded_first() -> None:
    # Originated, the answer never seen, the end says it was answered (and when, from the PBX's record).
    at = T0 + timedelta(seconds=10)
    event = ended(cause=16, answered=True, state="Up", answered_at=at)
    assert ended_answered(S.ORIGINATED, event)
    t = end(S.ORIGINATED, event, policy=None)
    assert (t.contact_status, t.answer_at, t.talk_seconds) == (C.COMPLETED, at, 20.0)
    # Without the PBX's answer time the end itself is the answer: no talk time, never negative.
    t = end(S.DIALING, ended(cause=16, answered=True), policy=None)
    assert (t.contact_status, t.answer_at, t.talk_seconds) == (C.COMPLETED, END, 0.0)
    # Decided again once the answer is stored, it ends from the stored answer time.
    t = end(S.ANSWERED, event, answered_at=at, policy=None)
    assert (t.answer_at, t.talk_seconds) == (None, 20.0)


def test_app_unavailable_is_an_abandoned_call_never_redialled() -> None:
    # Ended Up with no cause and the answer never seen: Asterisk answered and hung up at once (no app).
    event = ended(cause=0, tech_cause=None, state="Up")
    assert not ended_answered(S.ORIGINATED, event)
    assert end(S.ORIGINATED, event) == failed(R.APP_UNAVAILABLE, 0, None)
    # The same end after dialerd saw the answer is a completed call.
    assert end(S.ANSWERED, event, answered_at=T0, policy=None).contact_status is C.COMPLETED


def test_a_stopped_campaign_cancels_the_retry() -> None:
    stopped = RetryPolicy(retries_per_contact=2, retry_delay_seconds=600, stopped=True)
    t = end(S.ORIGINATED, ended(cause=17), policy=stopped)
    assert t == Transition(S.ENDED, C.CANCELLED, END, 17, None, reason=R.BUSY)
    assert t.cancelled and t.retry_at is None and t.outcome == "busy"
    # A failure that would not have been retried stays failed.
    assert end(S.ORIGINATED, ended(cause=1), policy=stopped).contact_status is C.FAILED


def test_an_exhausted_retry_budget_fails_the_contact() -> None:
    # retries_per_contact=2: attempts 1 and 2 fail into a retry, attempt 3 is the last.
    assert end(S.ORIGINATED, ended(cause=17), attempt=2).contact_status is C.PENDING
    assert end(S.ORIGINATED, ended(cause=17), attempt=3) == failed(R.BUSY, 17, None)


def test_a_failure_needs_the_retry_policy() -> None:
    with pytest.raises(ValueError, match="retry policy"):
        end(S.ORIGINATED, ended(cause=17), policy=None)


def test_an_originate_error_is_never_retried() -> None:
    t = decide_failure(R.ORIGINATE_ERROR, None, None, attempt_number=1, policy=BUDGET, ended_at=END, now=NOW)
    assert t == failed(R.ORIGINATE_ERROR, None, None)


def test_the_transition_is_frozen() -> None:
    t = end(S.ORIGINATED, ended(cause=17))
    with pytest.raises(AttributeError):
        t.reason = None  # type: ignore[misc]


# ---- outcome rules for retries (retry_rules.py) carried by the policy -----------------------------------

RULED = RetryPolicy(retries_per_contact=5, retry_delay_seconds=600, stopped=False,
                    rules=RetryRules.parse("busy=3@120; no_answer=1@3600; congestion=0@60"))


def contact_history(reasons: list[FailureReason], policy: RetryPolicy = RULED) -> list[Transition]:
    """A contact's attempts failing with ``reasons`` in turn, as the follower decides each end; stops at the
    first attempt that is not retried."""
    out = []
    for number, reason in enumerate(reasons, 1):
        t = decide_failure(reason, None, None, attempt_number=number, policy=policy, ended_at=END, now=NOW)
        out.append(t)
        if t.contact_status is not C.PENDING:
            break
    return out


def test_busy_is_retried_its_rules_times_at_its_delay() -> None:
    history = contact_history([R.BUSY] * 6)
    assert [t.contact_status for t in history] == [C.PENDING, C.PENDING, C.PENDING, C.FAILED]
    assert {t.retry_at for t in history[:3]} == {NOW + timedelta(seconds=120)}


def test_a_rule_of_zero_is_never_retried_although_the_campaign_budget_allows() -> None:
    assert [t.contact_status for t in contact_history([R.CONGESTION])] == [C.FAILED]


def test_an_unruled_reason_uses_the_campaign_budget_and_delay() -> None:
    history = contact_history([R.UNREACHABLE] * 7)
    assert [t.contact_status for t in history] == [C.PENDING] * 5 + [C.FAILED]
    assert {t.retry_at for t in history[:5]} == {NOW + timedelta(seconds=600)}


@pytest.mark.parametrize(("reasons", "statuses"), [
    # Two busy retries used: no_answer's budget (1) is spent, so its first failure is final.
    ([R.BUSY, R.BUSY, R.NO_ANSWER], [C.PENDING, C.PENDING, C.FAILED]),
    # One no_answer retry, then busy may still use its budget up to 3 retries in all, not 3 more.
    ([R.NO_ANSWER, R.BUSY, R.BUSY, R.BUSY], [C.PENDING, C.PENDING, C.PENDING, C.FAILED]),
    # no_answer after one retry (of any reason) is over its budget.
    ([R.BUSY, R.NO_ANSWER], [C.PENDING, C.FAILED]),
])
def test_budgets_never_stack_across_reasons(reasons: list[FailureReason], statuses: list[ContactStatus]) -> None:
    assert [t.contact_status for t in contact_history(reasons)] == statuses


def test_the_rule_s_retry_is_cancelled_when_the_campaign_stopped() -> None:
    stopped = RetryPolicy(5, 600, stopped=True, rules=RULED.rules)
    assert contact_history([R.BUSY], stopped)[0].contact_status is C.CANCELLED
    assert contact_history([R.CONGESTION], stopped)[0].contact_status is C.FAILED


def test_a_policy_without_rules_decides_as_before() -> None:
    plain = RetryPolicy(2, 600, stopped=False)
    assert plain.rules == RetryRules()
    for reason in (R.BUSY, R.NO_ANSWER, R.CONGESTION, R.UNREACHABLE):
        assert [t.contact_status for t in contact_history([reason] * 4, plain)] == [C.PENDING, C.PENDING, C.FAILED]


def test_a_retry_written_after_a_stop_is_cancelled_and_nothing_else_changes() -> None:
    from dialerd.domain.call import retry_after_stop

    values = {"failure_reason": "busy", "next_attempt_at": "t", "next_eligible_at": "t", "blocked_reason": "retry_delay"}
    payload = {"reason": "busy", "cause": 17, "retry_at": "t"}
    status, written, body = retry_after_stop(ContactStatus.PENDING, values, payload, True)
    assert status is ContactStatus.CANCELLED
    assert written == {"failure_reason": "busy", "next_attempt_at": None, "next_eligible_at": None,
                       "blocked_reason": None}
    assert body == {"reason": "campaign_stopped", "last_failure": "busy", "cause": 17}
    # Still running, or an end that is not a retry: written as decided.
    assert retry_after_stop(ContactStatus.PENDING, values, payload, False) == (ContactStatus.PENDING, values, payload)
    for final in (ContactStatus.FAILED, ContactStatus.COMPLETED, ContactStatus.CANCELLED):
        assert retry_after_stop(final, values, payload, True) == (final, values, payload)
