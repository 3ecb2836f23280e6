"""Outcome rules for retries: how often and how far apart each kind of failure is retried. Pure.

Text form (form field ``retry_rules``): ``REASON=RETRIES@DELAY`` entries separated by ``;``, e.g.
``busy=3@120; no_answer=2@3600; congestion=5@60``. REASON is a retryable failure reason (``busy``,
``no_answer``, ``congestion``, ``unreachable``, ``machine``), each at most once; RETRIES 0-10; DELAY seconds
60-604800 (a week). Naming ``invalid_number``, ``rejected`` or any other reason is refused. Spaces
around the parts are ignored, the reason is read in any case; the empty text means no rules.

One budget per contact: a failed attempt with reason R is retried only while the contact's retries so
far are fewer than R's RETRIES, so retries never stack across reasons (``busy=3; no_answer=1``: after a
busy and then a no answer, the contact has had 1 retry, which is no answer's whole budget). A reason
without a rule uses the campaign's ``retries_per_contact`` and ``retry_delay_seconds``. With no rules
this is exactly ``contact.will_retry``: retries so far are the failed attempt's number minus one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dialerd.domain.contact import FailureReason
from dialerd.domain.rules import FieldError

MAX_RETRIES = 10
MIN_DELAY = 60
MAX_DELAY = 7 * 86400
RULE_REASONS: tuple[FailureReason, ...] = tuple(r for r in FailureReason if r.retryable)

_ENTRY = re.compile(r"([^=@]*)=([^=@]*)@([^=@]*)")
_EXAMPLE = "e.g. 'busy=3@120; no_answer=2@3600'"


@dataclass(frozen=True)
class RetryRule:
    """Retry a failure with ``reason`` while the contact's retries so far are fewer than ``retries``,
    ``delay_seconds`` after it ended."""

    reason: FailureReason
    retries: int
    delay_seconds: int

    def __str__(self) -> str:
        return f"{self.reason}={self.retries}@{self.delay_seconds}"


@dataclass(frozen=True)
class RetryRules:
    """A campaign's rules, in the order given; a reason without one falls back to the campaign's budget."""

    rules: tuple[RetryRule, ...] = ()

    @classmethod
    def parse(cls, text: str, *, field: str = "retry_rules") -> RetryRules:
        """Read the text form; raise FieldError naming ``field`` and the entry that is wrong."""
        if not text.strip():
            return cls()
        rules: list[RetryRule] = []
        for number, entry in enumerate(text.split(";"), 1):
            rule = _entry(field, number, entry)
            if any(r.reason is rule.reason for r in rules):
                raise FieldError(field, f"entry {number} {entry.strip()!r}: {rule.reason} has a rule already")
            rules.append(rule)
        return cls(tuple(rules))

    def rule_for(self, reason: FailureReason, *, retries_per_contact: int, retry_delay_seconds: int) -> RetryRule:
        """The rule for a retryable ``reason``: its own, or the campaign's defaults."""
        for rule in self.rules:
            if rule.reason is reason:
                return rule
        return RetryRule(reason, retries_per_contact, retry_delay_seconds)

    def __str__(self) -> str:
        return "; ".join(str(rule) for rule in self.rules)


def _entry(field: str, number: int, entry: str) -> RetryRule:
    where = f"entry {number} {entry.strip()!r}"
    if not entry.strip():
        raise FieldError(field, f"entry {number} is empty (a ';' too many?); {_EXAMPLE}")
    match = _ENTRY.fullmatch(entry)
    if match is None:
        raise FieldError(field, f"{where} must be REASON=RETRIES@DELAY, {_EXAMPLE}")
    name, retries, delay = (part.strip() for part in match.groups())
    reason = _reason(field, where, name.lower())
    return RetryRule(
        reason,
        _number(field, where, "RETRIES", retries, 0, MAX_RETRIES),
        _number(field, where, "DELAY", delay, MIN_DELAY, MAX_DELAY, unit=" seconds"),
    )


def _reason(field: str, where: str, name: str) -> FailureReason:
    accepted = ", ".join(RULE_REASONS)
    try:
        reason = FailureReason(name)
    except ValueError:
        raise FieldError(field, f"{where}: unknown reason {name[:40]!r}; REASON is one of {accepted}") from None
    if not reason.retryable:
        raise FieldError(field, f"{where}: {reason} is never retried, so it takes no rule; REASON is one of {accepted}")
    return reason


def _number(field: str, where: str, part: str, text: str, lo: int, hi: int, *, unit: str = "") -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 7:
        raise FieldError(field, f"{where}: {part} must be a whole number from {lo} to {hi}{unit}, got {text[:20]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise FieldError(field, f"{where}: {part} must be from {lo} to {hi}{unit}, got {value}")
    return value


@dataclass(frozen=True)
class RetryDecision:
    """Whether a failed attempt is retried and, if so, how many seconds after it ended."""

    retry: bool
    delay_seconds: int | None = None


NO_RETRY = RetryDecision(retry=False)


def decide_retry(
    reason: FailureReason, retries_so_far: int, rules: RetryRules, *, retries_per_contact: int,
    retry_delay_seconds: int,
) -> RetryDecision:
    """Whether a contact whose attempt just failed with ``reason`` gets another, and after what delay.

    ``retries_so_far``: the retries the contact has had, the failed attempt included if it was one; that
    is the failed attempt's number (``attempt_number`` in ``call.decide_failure``) minus one.
    """
    if retries_so_far < 0:
        raise ValueError(f"retries_so_far cannot be negative, got {retries_so_far}")
    if not reason.retryable:
        return NO_RETRY
    rule = rules.rule_for(reason, retries_per_contact=retries_per_contact, retry_delay_seconds=retry_delay_seconds)
    if retries_so_far >= rule.retries:
        return NO_RETRY
    return RetryDecision(retry=True, delay_seconds=rule.delay_seconds)
