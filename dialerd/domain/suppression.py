"""Suppression lists (do-not-call), per tenant: the entries' sources and how a batch of numbers is read. Pure.

A tenant's list holds E.164 numbers, each once, normalised exactly like contacts' numbers
(``domain/phone.parse_phone``). A suppressed number is never dialled: at import its contact is ``skipped``
with reason ``suppressed``, and the list is checked again where a contact is claimed for dialling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from dialerd.domain.phone import parse_phone

MAX_NUMBERS = 10_000  # numbers in one JSON request (a CSV upload is bounded by its size)
MAX_REASON_CHARS = 200
OPT_OUT_REASON = "opt-out during call"


class SuppressionSource(StrEnum):
    """How a number came onto the list."""

    API = "api"  # POST /suppressions with JSON numbers
    IMPORT = "import"  # POST /suppressions with a CSV file
    OPT_OUT = "opt_out"  # the callee opted out during a call (DIALERD_OPT_OUT=1 at hangup)


@dataclass(frozen=True)
class Rejected:
    """One input that is not a dialable number: where it was (``position``: JSON index or CSV line)."""

    position: int
    value: str
    reason: str
    code: str


@dataclass
class ParsedNumbers:
    """A batch read: the distinct E.164 numbers in input order, how many repeated one, and the rejects."""

    numbers: list[str] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, position: int, raw: str, region: str | None) -> None:
        """Read one input value (a JSON array item or a CSV cell)."""
        parsed = parse_phone(raw, region) if raw.strip() else ("empty_number", "empty number")
        if isinstance(parsed, tuple):
            code, reason = parsed
            self.rejected.append(Rejected(position, raw[:100], reason, code))
            return
        self.add_valid(parsed)

    def add_valid(self, e164: str) -> None:
        if e164 in self._seen:
            self.duplicates += 1
            return
        self._seen.add(e164)
        self.numbers.append(e164)


def parse_numbers(values: Iterable[str], region: str | None) -> ParsedNumbers:
    """Read JSON ``numbers`` (positions are 0-based indexes)."""
    out = ParsedNumbers()
    for index, raw in enumerate(values):
        out.add(index, raw, region)
    return out


def check_reason(reason: str) -> str:
    """The reason as stored (trimmed); ValueError naming the problem when it is too long or has control chars."""
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"at most {MAX_REASON_CHARS} characters")
    if any(ord(ch) < 32 for ch in reason):
        raise ValueError("control characters are not allowed")
    return reason
