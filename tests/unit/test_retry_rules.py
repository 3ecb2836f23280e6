"""Outcome rules for retries (``dialerd/domain/retry_rules.py``): the text form and the one-budget decision."""

from __future__ import annotations

import pytest

from dialerd.domain.contact import FailureReason, will_retry
from dialerd.domain.retry_rules import (
    NO_RETRY,
    RetryDecision,
    RetryRule,
    RetryRules,
    decide_retry,
)
from dialerd.domain.rules import FieldError

R = FailureReason


@pytest.mark.parametrize(
    ("text", "rules", "canonical"),
    [
        ("", (), ""),
        ("  ", (), ""),
        ("busy=3@120", (RetryRule(R.BUSY, 3, 120),), "busy=3@120"),
        (
            "busy=3@120; no_answer=2@3600; congestion=5@60",
            (RetryRule(R.BUSY, 3, 120), RetryRule(R.NO_ANSWER, 2, 3600), RetryRule(R.CONGESTION, 5, 60)),
            "busy=3@120; no_answer=2@3600; congestion=5@60",
        ),
        (" BUSY = 0 @ 604800 ;unreachable=10@60", (RetryRule(R.BUSY, 0, 604800), RetryRule(R.UNREACHABLE, 10, 60)),
         "busy=0@604800; unreachable=10@60"),
    ],
)
def test_parse(text: str, rules: tuple[RetryRule, ...], canonical: str) -> None:
    parsed = RetryRules.parse(text)
    assert parsed.rules == rules
    assert str(parsed) == canonical
    assert RetryRules.parse(str(parsed)) == parsed


ACCEPTED = "REASON is one of busy, no_answer, congestion, unreachable"

ERRORS = [
    ("busy", "entry 1 'busy' must be REASON=RETRIES@DELAY, e.g. 'busy=3@120; no_answer=2@3600'"),
    ("busy=3", "entry 1 'busy=3' must be REASON=RETRIES@DELAY"),
    ("busy@120", "must be REASON=RETRIES@DELAY"),
    ("busy=3@120@5", "must be REASON=RETRIES@DELAY"),
    ("busy=3=4@120", "must be REASON=RETRIES@DELAY"),
    ("busy=3@120,no_answer=2@60", "must be REASON=RETRIES@DELAY"),  # ',' is not the separator
    ("invalid_number=1@60", f"entry 1 'invalid_number=1@60': invalid_number is never retried, so it takes no rule; {ACCEPTED}"),
    ("rejected=1@60", f"rejected is never retried, so it takes no rule; {ACCEPTED}"),
    ("originate_error=1@60", "originate_error is never retried"),
    ("app_unavailable=1@60", "app_unavailable is never retried"),
    ("noanswer=1@60", f"entry 1 'noanswer=1@60': unknown reason 'noanswer'; {ACCEPTED}"),
    ("=1@60", f"unknown reason ''; {ACCEPTED}"),
    ("busy=11@60", "entry 1 'busy=11@60': RETRIES must be from 0 to 10, got 11"),
    ("busy=-1@60", "RETRIES must be a whole number from 0 to 10, got '-1'"),
    ("busy=x@60", "RETRIES must be a whole number from 0 to 10, got 'x'"),
    ("busy=@60", "RETRIES must be a whole number from 0 to 10, got ''"),
    ("busy=²@60", "RETRIES must be a whole number from 0 to 10, got '²'"),
    ("busy=1@59", "DELAY must be from 60 to 604800 seconds, got 59"),
    ("busy=1@604801", "DELAY must be from 60 to 604800 seconds, got 604801"),
    ("busy=1@2m", "DELAY must be a whole number from 60 to 604800 seconds, got '2m'"),
    ("busy=1@99999999999", "DELAY must be a whole number from 60 to 604800 seconds, got '99999999999'"),
    ("busy=1@60; busy=2@60", "entry 2 'busy=2@60': busy has a rule already"),
    ("busy=1@60;", "entry 2 is empty (a ';' too many?)"),
    ("busy=1@60;;no_answer=1@60", "entry 2 is empty"),
]


@pytest.mark.parametrize(("text", "problem"), ERRORS)
def test_parse_errors_name_the_field_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(FieldError) as caught:
        RetryRules.parse(text)
    assert caught.value.field == "retry_rules"
    assert str(caught.value).startswith("retry_rules: ")
    assert problem in caught.value.problem


def test_parse_error_names_the_field_it_is_given() -> None:
    with pytest.raises(FieldError, match=r"^rules: ") as caught:
        RetryRules.parse("x", field="rules")
    assert caught.value.field == "rules"


DEFAULTS = {"retries_per_contact": 1, "retry_delay_seconds": 300}


def test_a_reason_without_a_rule_uses_the_campaign_defaults() -> None:
    rules = RetryRules.parse("busy=3@120")
    assert rules.rule_for(R.NO_ANSWER, **DEFAULTS) == RetryRule(R.NO_ANSWER, 1, 300)
    assert rules.rule_for(R.BUSY, **DEFAULTS) == RetryRule(R.BUSY, 3, 120)
    assert decide_retry(R.NO_ANSWER, 0, rules, **DEFAULTS) == RetryDecision(True, 300)
    assert decide_retry(R.NO_ANSWER, 1, rules, **DEFAULTS) == NO_RETRY


@pytest.mark.parametrize("retries_so_far", [0, 1, 2, 3, 4])
def test_busy_is_retried_its_configured_times_at_its_spacing(retries_so_far: int) -> None:
    rules = RetryRules.parse("busy=3@120; no_answer=0@3600")
    expected = RetryDecision(True, 120) if retries_so_far < 3 else NO_RETRY
    assert decide_retry(R.BUSY, retries_so_far, rules, **DEFAULTS) == expected
    # no_answer=0: never retried, whatever the campaign default says.
    assert decide_retry(R.NO_ANSWER, retries_so_far, rules, **DEFAULTS) == NO_RETRY


@pytest.mark.parametrize("reason", [R.INVALID_NUMBER, R.REJECTED, R.ORIGINATE_ERROR, R.APP_UNAVAILABLE])
def test_reasons_that_never_succeed_are_never_retried(reason: FailureReason) -> None:
    assert decide_retry(reason, 0, RetryRules(), retries_per_contact=5, retry_delay_seconds=60) == NO_RETRY


# Each row: the rules, then the failures of one contact in order, each with whether it is retried. The
# budget is the contact's: retries so far count every earlier retry, whatever its reason.
HISTORIES = [
    ("busy=3@120; no_answer=1@3600", [(R.BUSY, True), (R.NO_ANSWER, False)]),
    ("busy=3@120; no_answer=1@3600", [(R.NO_ANSWER, True), (R.BUSY, True), (R.BUSY, True), (R.BUSY, False)]),
    ("busy=1@120; no_answer=5@3600", [(R.NO_ANSWER, True), (R.NO_ANSWER, True), (R.BUSY, False)]),
    ("busy=2@120; congestion=2@60", [(R.BUSY, True), (R.CONGESTION, True), (R.BUSY, False)]),
    ("busy=2@120", [(R.BUSY, True), (R.NO_ANSWER, False)]),  # no_answer by the default: 1 retry, had 1
    ("", [(R.NO_ANSWER, True), (R.BUSY, False)]),  # the campaign's one retry, shared
]


@pytest.mark.parametrize(("text", "history"), HISTORIES)
def test_budgets_do_not_stack_across_reasons(text: str, history: list[tuple[FailureReason, bool]]) -> None:
    rules = RetryRules.parse(text)
    retries = 0
    for reason, retried in history:
        decision = decide_retry(reason, retries, rules, **DEFAULTS)
        assert decision.retry is retried, (reason, retries)
        if not decision.retry:
            break
        retries += 1
    assert retries == sum(retried for _, retried in history)
    # Never more retries than the largest budget of any reason.
    assert retries <= max([DEFAULTS["retries_per_contact"], *(r.retries for r in rules.rules)])


@pytest.mark.parametrize("budget", [0, 1, 2, 5])
@pytest.mark.parametrize("reason", list(FailureReason))
def test_without_rules_it_is_the_campaign_rule_of_today(reason: FailureReason, budget: int) -> None:
    for attempt_number in range(1, 8):
        decision = decide_retry(reason, attempt_number - 1, RetryRules(), retries_per_contact=budget,
                                retry_delay_seconds=90)
        assert decision.retry is will_retry(reason, attempt_number, budget)
        assert decision.delay_seconds == (90 if decision.retry else None)


def test_negative_retries_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="retries_so_far cannot be negative"):
        decide_retry(R.BUSY, -1, RetryRules(), **DEFAULTS)
