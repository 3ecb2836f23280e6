"""The pure parts of suppression lists: reading a batch of numbers, the reason, the skipped status, the
opt-out's path from a channel variable to the end-of-call decision, and the fake carrier's opt-out range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialerd.client.events import ContactEvent, parse_event
from dialerd.domain.call import (
    AttemptState,
    CallEvent,
    CallEventKind,
    RetryPolicy,
    decide_end,
    opted_out,
)
from dialerd.domain.contact import ContactStatus
from dialerd.domain.suppression import MAX_REASON_CHARS, check_reason, parse_numbers
from dialerd.pbx.ami import chan_variables
from dialerd.pbx.fake import OPT_OUT, carrier_outcome

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(retries_per_contact=2, retry_delay_seconds=60, stopped=False)


def test_numbers_are_normalised_like_contacts_deduplicated_and_rejected_one_by_one() -> None:
    parsed = parse_numbers(["(415) 555-0100", "+14155550100", "n/a", "", "4155550101", "+1 415 555 0100"], "US")
    assert parsed.numbers == ["+14155550100", "+14155550101"]
    assert parsed.duplicates == 2
    assert [(r.position, r.value, r.code) for r in parsed.rejected] == [
        (2, "n/a", parsed.rejected[0].code), (3, "", "empty_number")]
    assert parsed.rejected[0].code in ("not_a_number", "invalid_number") and parsed.rejected[0].reason


def test_national_numbers_need_a_region() -> None:
    parsed = parse_numbers(["4155550100", "+442079460000"], None)
    assert parsed.numbers == ["+442079460000"]
    assert [r.code for r in parsed.rejected] == ["missing_region"]


def test_reason_is_trimmed_and_bounded() -> None:
    assert check_reason("  asked by letter ") == "asked by letter"
    assert check_reason("") == ""
    with pytest.raises(ValueError, match="at most"):
        check_reason("x" * (MAX_REASON_CHARS + 1))
    with pytest.raises(ValueError, match="control"):
        check_reason("a\nb")


def test_skipped_is_final_and_not_in_flight() -> None:
    assert ContactStatus.SKIPPED.final and not ContactStatus.SKIPPED.in_flight
    assert ContactStatus("skipped") is ContactStatus.SKIPPED


@pytest.mark.parametrize(("value", "expected"), [("1", True), (" 1", True), ("", False), ("0", False),
                                                  (None, False), (1, False)])
def test_opt_out_variable(value: object, expected: bool) -> None:
    assert opted_out(value) is expected


def _ended(*, answered: bool, opt_out: bool) -> CallEvent:
    return CallEvent("c", CallEventKind.ENDED, T0 + timedelta(seconds=3), cause=16 if answered else 17,
                     tech_cause=None if answered else 486, state="Up" if answered else "Down", answered=answered,
                     opt_out=opt_out)


def test_an_answered_call_carries_the_opt_out_to_its_end() -> None:
    end = decide_end(AttemptState.ANSWERED, _ended(answered=True, opt_out=True), attempt_number=1,
                     answered_at=T0, policy=None, now=T0)
    assert end.contact_status is ContactStatus.COMPLETED and end.opt_out
    plain = decide_end(AttemptState.ANSWERED, _ended(answered=True, opt_out=False), attempt_number=1,
                       answered_at=T0, policy=None, now=T0)
    assert not plain.opt_out


def test_an_unanswered_call_never_opts_out() -> None:
    end = decide_end(AttemptState.ORIGINATED, _ended(answered=False, opt_out=True), attempt_number=1,
                     answered_at=None, policy=POLICY, now=T0)
    assert end.contact_status is ContactStatus.PENDING and not end.opt_out


def test_ami_chan_variables_one_or_several() -> None:
    assert chan_variables({"ChanVariable": ["DIALERD_ID=x", "DIALERD_OPT_OUT=1", "AMDSTATUS="]}) == {
        "DIALERD_ID": "x", "DIALERD_OPT_OUT": "1", "AMDSTATUS": ""}
    assert chan_variables({"ChanVariable": "DIALERD_OPT_OUT=1"}) == {"DIALERD_OPT_OUT": "1"}
    assert chan_variables({}) == {}


def test_fake_carrier_opt_out_range() -> None:
    for last in range(10):
        assert carrier_outcome(f"+1415555020{last}") is OPT_OUT
    assert OPT_OUT.answer and OPT_OUT.opt_out
    assert not carrier_outcome("+14155550210").opt_out  # 10-49: the AMD person range
    assert not carrier_outcome("+14155550105").opt_out  # 555-01XX: the plain carrier table
    assert not carrier_outcome("+14155550005").opt_out


def test_the_client_reads_a_skipped_event() -> None:
    data = '{"contact_id": 3, "phone_number": "+14155550101", "status": "skipped", "reason": "suppressed", "at": "x"}'
    event = parse_event("skipped", data, "12")
    assert isinstance(event, ContactEvent)
    assert (event.id, event.status, event.reason, event.attempt) == (12, "skipped", "suppressed", None)
