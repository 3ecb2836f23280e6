"""Caller-id pools: a campaign's ``caller_id`` as several numbers, and which one a call goes out with.

``caller_id`` is a list separated by ``,`` (a ``,`` inside double quotes, as in ``"Acme, Inc" <+1...>``,
does not separate); each entry is what a single caller id always was: free text the PBX takes as the
caller id (a number, or ``"Name" <number>``). ``choose`` is the decision, pure: ``round_robin`` takes
the entries in turn by the caller's counter; ``local_presence`` takes the entry whose number shares the
contact's country and the longest leading run of national digits (the area code, or more), at least
one; ties go round robin among the tied, and no match at all (another country, no shared leading digit,
a pool entry that is no international number) falls back to round robin over the whole pool.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException

MAX_ENTRY_CHARS = 80  # one caller id (the single caller_id's old bound)


class CallerIdStrategy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    LOCAL_PRESENCE = "local_presence"


STRATEGIES = tuple(s.value for s in CallerIdStrategy)


@dataclass(frozen=True)
class PoolEntry:
    """One caller id of a pool: its text as given, and its number's country and national digits (both
    '' when the entry is no international number: it is only ever taken round robin)."""

    text: str
    country: str = ""
    national: str = ""


@dataclass(frozen=True)
class CallerIdPool:
    entries: tuple[PoolEntry, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CallerIdPool:
        """The pool of a stored or given ``caller_id``; ValueError naming the first bad entry.

        Entries are trimmed; an empty text is the empty pool (the PBX decides); an empty entry between
        two commas, an entry over MAX_ENTRY_CHARS or with a control character, ';' or '\\', or the same
        entry twice is refused (a duplicate would silently skew the rotation).
        """
        if not text.strip():
            return cls()
        entries: list[PoolEntry] = []
        seen: set[str] = set()
        for raw in split_entries(text):
            entry = raw.strip()
            if not entry:
                raise ValueError("has an empty entry (two commas, or a comma at an end)")
            if len(entry) > MAX_ENTRY_CHARS or any(ord(ch) < 32 or ch in ";\\" for ch in entry):
                raise ValueError(f"entry {entry[:40]!r} must be at most {MAX_ENTRY_CHARS} printable characters "
                                 "without ';' or '\\'")
            if entry in seen:
                raise ValueError(f"entry {entry[:40]!r} is given twice")
            seen.add(entry)
            entries.append(_entry(entry))
        return cls(tuple(entries))

    @classmethod
    def stored(cls, text: str) -> CallerIdPool:
        """The pool of a stored ``caller_id``: as ``parse``, but never refused (a caller id stored before
        pools existed that ``parse`` refuses, e.g. ``a,,b``, is one entry, as it was dialled then)."""
        return _stored(text)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        return ",".join(e.text for e in self.entries)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(e.text for e in self.entries)


@lru_cache(maxsize=1024)
def _stored(text: str) -> CallerIdPool:
    try:
        return CallerIdPool.parse(text)
    except ValueError:
        return CallerIdPool((_entry(text.strip()),))


def split_entries(text: str) -> list[str]:
    """``text`` split at each ',' outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def choose(pool: CallerIdPool, strategy: CallerIdStrategy | str, contact_e164: str, counter: int) -> str | None:
    """The caller id for a call to ``contact_e164``; None for the empty pool.

    ``counter``: how many calls the campaign has placed from this pool so far (the caller keeps it), so
    round robin takes entry ``counter % len`` and ties rotate the same way.
    """
    if not pool.entries:
        return None
    if CallerIdStrategy(strategy) is CallerIdStrategy.LOCAL_PRESENCE:
        country, national = number_parts(contact_e164)
        if country:
            best, tied = 0, []
            for entry in pool.entries:
                if entry.country != country:
                    continue
                shared = _shared_prefix(entry.national, national)
                if shared > best:
                    best, tied = shared, [entry]
                elif shared == best and shared > 0:
                    tied.append(entry)
            if tied:
                return tied[counter % len(tied)].text
    return pool.entries[counter % len(pool.entries)].text


@lru_cache(maxsize=4096)
def number_parts(e164: str) -> tuple[str, str]:
    """(country, national significant digits) of an international number, else ('', '').

    The country is the ISO region phonenumbers gives the number (``US``, ``CA``, ``GB``), else its
    calling code (``+1``) when the number fits no region's plan (e.g. fictional ranges).
    """
    try:
        parsed = phonenumbers.parse(e164, None)
    except NumberParseException:
        return "", ""
    national = phonenumbers.national_significant_number(parsed)
    region = phonenumbers.region_code_for_number(parsed)
    return (region or f"+{parsed.country_code}"), national


def _entry(text: str) -> PoolEntry:
    number = text
    if "<" in text and text.rstrip().endswith(">"):  # "Name" <number>
        number = text[text.rindex("<") + 1:text.rstrip().rindex(">")]
    number = "".join(ch for ch in number if ch.isdigit() or ch == "+")
    if not number.startswith("+"):
        return PoolEntry(text)
    country, national = number_parts(number)
    return PoolEntry(text, country, national)


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


REJECTED_SIP_CODES = (603, 608)  # Decline, Rejected: the far end refused the call (the stats' rejected)


@dataclass(frozen=True)
class CallerIdStat:
    """One caller id's figures over a campaign's attempts (given-back attempts aside)."""

    caller_id: str
    attempts: int = 0
    answered: int = 0
    rejected: int = 0

    @property
    def answer_rate(self) -> float | None:
        """answered / attempts, 4 decimals; None before the first attempt."""
        return round(self.answered / self.attempts, 4) if self.attempts else None


def pool_stats(pool: CallerIdPool, counts: list[CallerIdStat]) -> list[CallerIdStat]:
    """Every number of the pool, in pool order (zeros before its first attempt), then the caller ids no
    longer in the pool that attempts used (a PATCH changed it), in text order."""
    by_id = {c.caller_id: c for c in counts}
    out = [by_id.pop(text, CallerIdStat(text)) for text in pool.texts]
    return out + [by_id[k] for k in sorted(by_id)]
