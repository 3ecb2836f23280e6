"""Answering-machine detection's pure parts (``dialerd/domain/amd.py``) and how ``decide_end`` maps the
verdict: the settings' text forms, the safe sound names, AMDSTATUS -> answered_by, and a machine's answer
under each ``on_machine``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialerd.domain.amd import (
    AmdMode,
    AmdPlan,
    AnsweredBy,
    MachineAction,
    OnMachine,
    answered_by,
    check_sound,
    dialplan_variables,
    machine_fails,
    parse_mode,
)
from dialerd.domain.call import AttemptState, CallEvent, CallEventKind, RetryPolicy, decide_end, ended_answered
from dialerd.domain.contact import ContactStatus, FailureReason
from dialerd.domain.retry_rules import RULE_REASONS, RetryRules

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HANGUP, CONNECT, VOICEMAIL = OnMachine(), OnMachine(MachineAction.CONNECT), OnMachine.parse("voicemail:beep")


@pytest.mark.parametrize(("text", "parsed"), [
    ("", OnMachine()),
    ("hangup", OnMachine()),
    (" CONNECT ", OnMachine(MachineAction.CONNECT)),
    ("voicemail:beep", OnMachine(MachineAction.VOICEMAIL, "beep")),
    ("Voicemail: custom/leave-a_message2", OnMachine(MachineAction.VOICEMAIL, "custom/leave-a_message2")),
])
def test_on_machine_text_form(text: str, parsed: OnMachine) -> None:
    assert OnMachine.parse(text) == parsed
    assert OnMachine.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["beep", "voicemail", "voicemail:", "hangup:x", "connect:beep", "machine"])
def test_on_machine_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        OnMachine.parse(text)


@pytest.mark.parametrize("sound", ["../beep", "a/../b", "/etc/passwd", "beep/", "beep&hello", "beep,2",
                                   "be ep", "bëep", "a..b", "x" * 121, "beep.gsm", "${EVIL}"])
def test_unsafe_sounds_are_refused(sound: str) -> None:
    with pytest.raises(ValueError):
        check_sound(sound)


def test_safe_sounds_pass() -> None:
    assert check_sound("beep") == "beep"
    assert check_sound("digits/1") == "digits/1"
    assert check_sound("custom/A-b_9") == "custom/A-b_9"


def test_mode() -> None:
    assert parse_mode("") is AmdMode.OFF and parse_mode(" On ") is AmdMode.ON
    with pytest.raises(ValueError):
        parse_mode("true")


@pytest.mark.parametrize(("status", "who"), [
    ("HUMAN", AnsweredBy.HUMAN), ("MACHINE", AnsweredBy.MACHINE), ("machine", AnsweredBy.MACHINE),
    ("NOTSURE", AnsweredBy.UNKNOWN), ("HANGUP", AnsweredBy.UNKNOWN), ("", AnsweredBy.UNKNOWN),
    (None, AnsweredBy.UNKNOWN),
])
def test_answered_by(status: str | None, who: AnsweredBy) -> None:
    assert answered_by(status) is who


def test_only_a_machine_with_hangup_fails() -> None:
    assert machine_fails("MACHINE", HANGUP)
    assert not machine_fails("MACHINE", CONNECT) and not machine_fails("MACHINE", VOICEMAIL)
    assert not machine_fails("MACHINE", None)  # AMD off
    assert not machine_fails("HUMAN", HANGUP) and not machine_fails("NOTSURE", HANGUP)


def test_the_dialplan_is_told_what_to_do_with_a_machine() -> None:
    assert dialplan_variables(AmdPlan(VOICEMAIL)) == {"DIALERD_AMD_ON_MACHINE": "voicemail",
                                                      "DIALERD_AMD_SOUND": "beep"}
    assert dialplan_variables(AmdPlan()) == {"DIALERD_AMD_ON_MACHINE": "hangup"}
    assert AmdPlan(HANGUP).connects("HUMAN") and AmdPlan(HANGUP).connects("NOTSURE")
    assert not AmdPlan(HANGUP).connects("MACHINE") and not AmdPlan(VOICEMAIL).connects("MACHINE")
    assert AmdPlan(CONNECT).connects("MACHINE")


def test_machine_is_a_retryable_rule_reason() -> None:
    assert FailureReason.MACHINE.retryable and FailureReason.MACHINE in RULE_REASONS
    assert str(RetryRules.parse("machine=2@60")) == "machine=2@60"


# ---- decide_end ------------------------------------------------------------------------------------------


def _ended(status: str | None, cause: str | None = None, *, answered: bool = True) -> CallEvent:
    return CallEvent("c1", CallEventKind.ENDED, T0 + timedelta(seconds=10), cause=16 if answered else 17,
                     tech_cause=None if answered else 486, state="Up" if answered else "Down", answered=answered,
                     amd_status=status, amd_cause=cause)


def _policy(on_machine: OnMachine | None, **kw: object) -> RetryPolicy:
    return RetryPolicy(retries_per_contact=0, retry_delay_seconds=300, stopped=False, on_machine=on_machine,
                       rules=RetryRules.parse(str(kw.get("rules", ""))))


def test_machine_with_hangup_fails_with_reason_machine() -> None:
    event = _ended("MACHINE", "LONGGREETING-1500-1500")
    assert not ended_answered(AttemptState.ANSWERED, event)  # the follower reads the campaign's on_machine
    end = decide_end(AttemptState.ANSWERED, event, attempt_number=1, answered_at=T0, policy=_policy(HANGUP), now=T0)
    assert (end.contact_status, end.reason, end.answered_by, end.amd_cause) == (
        ContactStatus.FAILED, FailureReason.MACHINE, AnsweredBy.MACHINE, "LONGGREETING-1500-1500")
    assert end.retry_at is None and end.talk_seconds is None


def test_machine_with_hangup_is_retried_by_its_rule() -> None:
    policy = _policy(HANGUP, rules="machine=1@60")
    first = decide_end(AttemptState.ANSWERED, _ended("MACHINE"), attempt_number=1, answered_at=T0, policy=policy,
                       now=T0)
    assert first.contact_status is ContactStatus.PENDING and first.retry_at == T0 + timedelta(seconds=60)
    second = decide_end(AttemptState.ANSWERED, _ended("MACHINE"), attempt_number=2, answered_at=T0, policy=policy,
                        now=T0)
    assert (second.contact_status, second.reason) == (ContactStatus.FAILED, FailureReason.MACHINE)


@pytest.mark.parametrize("on_machine", [VOICEMAIL, CONNECT])
def test_machine_with_voicemail_or_connect_completes_as_machine(on_machine: OnMachine) -> None:
    end = decide_end(AttemptState.ANSWERED, _ended("MACHINE", "MAXWORDS-3-3"), attempt_number=1, answered_at=T0,
                     policy=_policy(on_machine), now=T0)
    assert (end.contact_status, end.reason, end.answered_by, end.amd_cause) == (
        ContactStatus.COMPLETED, None, AnsweredBy.MACHINE, "MAXWORDS-3-3")
    assert end.talk_seconds == 10.0


@pytest.mark.parametrize(("status", "cause", "who"), [
    ("HUMAN", "HUMAN-800-800", AnsweredBy.HUMAN),
    ("NOTSURE", "TOOLONG-4900", AnsweredBy.UNKNOWN),
    ("HANGUP", "", AnsweredBy.UNKNOWN),
    (None, None, AnsweredBy.UNKNOWN),  # AMD off: the dialplan never ran AMD()
])
def test_other_verdicts_complete_without_reading_the_campaign(status: str | None, cause: str | None,
                                                              who: AnsweredBy) -> None:
    event = _ended(status, cause)
    assert ended_answered(AttemptState.ANSWERED, event)
    end = decide_end(AttemptState.ANSWERED, event, attempt_number=1, answered_at=T0, policy=None, now=T0)
    assert (end.contact_status, end.answered_by, end.amd_cause) == (ContactStatus.COMPLETED, who, cause or None)


def test_an_unanswered_call_has_no_answered_by() -> None:
    end = decide_end(AttemptState.ORIGINATED, _ended(None, answered=False), attempt_number=1, answered_at=None,
                     policy=_policy(HANGUP), now=T0)
    assert (end.reason, end.answered_by, end.amd_cause) == (FailureReason.BUSY, None, None)


def test_a_machine_answer_never_recorded_fails_without_recording_it() -> None:
    # [dialerd-amd] hung up on the machine before dialerd reported any answer (ARI/AMI never report one).
    end = decide_end(AttemptState.ORIGINATED, _ended("MACHINE"), attempt_number=1, answered_at=None,
                     policy=_policy(HANGUP), now=T0)
    assert (end.reason, end.answer_at) == (FailureReason.MACHINE, None)
    voicemail = decide_end(AttemptState.ORIGINATED, _ended("MACHINE"), attempt_number=1, answered_at=None,
                           policy=_policy(VOICEMAIL), now=T0)
    assert voicemail.answered_by is AnsweredBy.MACHINE and voicemail.answer_at is not None
