"""Cause classification: every row of asterisk.md's measured outcome table (section 1.3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialerd.domain.call import CallEvent, CallEventKind
from dialerd.domain.causes import classify, parse_cause, parse_tech_cause
from dialerd.domain.contact import FailureReason as R
from dialerd.pbx.records import parse_hangup_record

AT = datetime(2025, 1, 1, tzinfo=UTC)


def ended(
    cause: int | None,
    tech: int | None,
    state: str | None,
    *,
    answered: bool = False,
    alerted: bool = False,
) -> CallEvent:
    return CallEvent(
        "c1",
        CallEventKind.ENDED,
        AT,
        cause=cause,
        tech_cause=tech,
        state=state,
        answered=answered,
        alerted=alerted,
    )


# (table row, event as the ARI adapter builds it from ChannelDestroyed, expected reason; None = answered)
TABLE = [
    ("answered, callee hangs up", ended(16, None, "Up", answered=True), None),
    ("answered, dialer hangs up", ended(16, None, "Up", answered=True), None),
    ("rings then answered", ended(16, None, "Up", answered=True, alerted=True), None),
    ("busy 486 at once", ended(17, 486, "Down"), R.BUSY),
    ("rings 3 s then rejected 180->486", ended(17, 486, "Ringing", alerted=True), R.BUSY),
    ("congestion 503", ended(34, 503, "Down"), R.CONGESTION),
    ("no answer: ring timeout", ended(19, 480, "Ringing", alerted=True), R.NO_ANSWER),
    ("not found 404", ended(1, 404, "Down"), R.INVALID_NUMBER),
    ("183 early media then 404", ended(1, 404, "Down", alerted=True), R.INVALID_NUMBER),
    ("address incomplete 484", ended(28, 484, "Down"), R.INVALID_NUMBER),
    ("decline 603", ended(21, 603, "Down"), R.REJECTED),
    ("forbidden 403", ended(21, 403, "Down"), R.REJECTED),
    ("temporarily unavailable 480", ended(19, 480, "Down"), R.UNREACHABLE),
    ("trunk down, TCP refused", ended(34, 503, "Down"), R.CONGESTION),
    ("trunk silent, timeout 60 s: 408", ended(18, 408, "Down"), R.UNREACHABLE),
    ("trunk silent, timeout 20 s: looks like no answer", ended(19, 480, "Down"), R.UNREACHABLE),
    ("answered while the app had no websocket", ended(0, None, "Up"), None),
]


@pytest.mark.parametrize(("row", "event", "reason"), TABLE, ids=[row for row, _, _ in TABLE])
def test_outcome_table_row(row: str, event: CallEvent, reason: R | None) -> None:
    outcome = classify(event)
    assert (outcome.answered, outcome.reason) == (reason is None, reason)
    assert (outcome.cause, outcome.tech_cause) == (event.cause, event.tech_cause)


# The same rows as the AMI adapter builds them from Hangup (no alerting flag for 19: state tells).
AMI_TABLE = [
    (ended(16, None, "Up"), None),
    (ended(17, 486, "Down"), R.BUSY),
    (ended(19, 480, "Ringing"), R.NO_ANSWER),
    (ended(34, 503, "Down"), R.CONGESTION),
    (ended(1, 404, "Down"), R.INVALID_NUMBER),
    (ended(21, 603, "Down"), R.REJECTED),
]


@pytest.mark.parametrize(("event", "reason"), AMI_TABLE)
def test_state_ringing_counts_as_alerted(event: CallEvent, reason: R | None) -> None:
    assert classify(event).reason == reason


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ended(None, None, None), R.UNREACHABLE),  # no channel, no record
        (ended(31, None, "Down"), R.UNREACHABLE),  # unmeasured cause, never alerted
        (ended(31, None, "Ringing"), R.NO_ANSWER),  # unmeasured cause after ringing
        (ended(16, None, "Ringing", alerted=True), R.NO_ANSWER),  # dialer gave up while ringing
        (ended(16, 600, "Down"), R.BUSY),  # busy everywhere
        (ended(22, 410, "Down"), R.INVALID_NUMBER),  # number changed / gone
        (ended(21, 607, "Down"), R.REJECTED),  # unwanted
        (ended(38, None, "Down"), R.CONGESTION),  # network out of order
        (ended(27, 502, "Down"), R.CONGESTION),  # 5xx wins over an unknown cause
        (ended(20, None, "Down"), R.UNREACHABLE),  # subscriber absent
    ],
)
def test_rules_beyond_the_table(event: CallEvent, reason: R) -> None:
    assert classify(event).reason == reason


def test_classify_refuses_events_other_than_ended() -> None:
    with pytest.raises(ValueError, match="ENDED"):
        classify(CallEvent("c1", CallEventKind.ANSWERED, AT))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SIP 486 Busy Here", 486),
        ("486", 486),
        (486, 486),
        ("SIP 603 Declined", 603),
        ("SIP 200 OK", None),  # what the hangup handler says for an answered call
        ("SIP 180 Ringing", None),  # ... and for a ring timeout
        ("", None),
        (None, None),
        ("PJSIP", None),
        ("SIP 4860", None),
        (0, None),
    ],
)
def test_parse_tech_cause(text: str | int | None, code: int | None) -> None:
    assert parse_tech_cause(text) == code


@pytest.mark.parametrize(
    ("text", "cause"), [("17", 17), (16, 16), ("0", 0), ("", None), (None, None), ("x", None)]
)
def test_parse_cause(text: str | int | None, cause: int | None) -> None:
    assert parse_cause(text) == cause


# Hangup-handler records measured on the local PBX -> classified like the events above.
RECORDS = [
    ("16|SIP 200 OK|Up|1795734566|", None),
    ("17|SIP 486 Busy Here|Down|1795734592|", R.BUSY),
    ("19|SIP 180 Ringing|Ringing|1795734603|", R.NO_ANSWER),
    ("34|SIP 503 Service Unavailable|Down|1795734603|", R.CONGESTION),
    ("1|SIP 404 Not Found|Down|1795734603|", R.INVALID_NUMBER),
    ("21|SIP 603 Decline|Down|1795734603|", R.REJECTED),
    ("0||Up|1795734603|", None),  # answered while the app had no websocket
    ("16||Down|1795734603|1795734600", None),  # DIALERD_ANSWERED set by dialerd
]


@pytest.mark.parametrize(("record", "reason"), RECORDS)
def test_hangup_record_row(record: str, reason: R | None) -> None:
    event = parse_hangup_record("c9", record)
    assert event is not None and event.kind is CallEventKind.ENDED and event.channel_id == "c9"
    assert classify(event).reason == reason


def test_hangup_record_keeps_cause_sip_code_and_time() -> None:
    event = parse_hangup_record("c9", "17|SIP 486 Busy Here|Ringing|1795734592|\n")
    assert event is not None
    assert (event.cause, event.tech_cause, event.state, event.alerted) == (17, 486, "Ringing", True)
    assert event.at == datetime.fromtimestamp(1795734592, tz=UTC)


@pytest.mark.parametrize("text", ["", "  ", "garbage", "|||", "17|x"])
def test_empty_or_foreign_record_is_none(text: str) -> None:
    assert parse_hangup_record("c9", text) is None
