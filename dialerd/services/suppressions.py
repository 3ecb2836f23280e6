"""Suppression lists (do-not-call), per tenant: add numbers (JSON or a CSV file), look them up, remove them.

Numbers are read exactly like contacts' (``domain/phone.parse_phone``; a CSV through ``ContactsCsv``, so
the same encodings, delimiters and phone-column headers: ``phone``, ``phone_number``, ``number``, ...).
Each request is all or nothing: it is read whole first, then written in one transaction. The list is
applied at import (``importer.import_contacts``) and at every claim (the call stores' ``begin_attempt``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

from dialerd.domain.phone import parse_phone
from dialerd.domain.suppression import ParsedNumbers, Rejected, SuppressionSource, parse_numbers
from dialerd.errors import InvalidInput, NotFound
from dialerd.services.auth import Principal
from dialerd.services.csv_contacts import ContactsCsv, ParsedContact
from dialerd.store.repo import Store
from dialerd.store.tables import Suppression

MAX_REPORTED_REJECTS = 1000
REASON_COLUMN = "reason"  # a CSV column of this name gives each row's reason


@dataclass
class AddResult:
    """What an add did: ``rejected`` lists the first 1000 bad inputs, ``rejected_total`` counts them all."""

    added: int
    already: int
    duplicates: int
    rejected: list[Rejected] = field(default_factory=list)
    rejected_total: int = 0
    by_line: bool = False  # positions are CSV lines (else JSON indexes)


@dataclass
class _Read:
    parsed: ParsedNumbers
    reasons: dict[str, str]


class SuppressionService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add_numbers(self, who: Principal, numbers: list[str], reason: str, region: str | None) -> AddResult:
        """Add JSON ``numbers`` (source ``api``)."""
        parsed = parse_numbers(numbers, region)
        return await self._add(who, _Read(parsed, {}), reason, SuppressionSource.API, by_line=False)

    async def add_csv(self, who: Principal, stream: IO[bytes], reason: str, region: str | None) -> AddResult:
        """Add the numbers of a CSV file (source ``import``); its ``reason`` column, if any, wins per row."""
        read = await asyncio.to_thread(_read_csv, stream, region)
        return await self._add(who, read, reason, SuppressionSource.IMPORT, by_line=True)

    async def _add(self, who: Principal, read: _Read, reason: str, source: SuppressionSource, *,
                   by_line: bool) -> AddResult:
        parsed = read.parsed
        if not parsed.numbers:
            shown = parsed.rejected[:100]
            raise InvalidInput(
                "no valid phone number to add" + (f" ({len(parsed.rejected)} rejected; see details)"
                                                  if parsed.rejected else ""),
                error_id="no_valid_numbers", field="file" if by_line else "numbers",
                rejected=[reject_json(r, by_line) for r in shown], rejected_total=len(parsed.rejected),
            )
        reasons = [read.reasons.get(n) or reason for n in parsed.numbers]
        added, already = await self.store.add_suppressions(who.tenant_id, parsed.numbers, reasons, source.value)
        return AddResult(added, already, parsed.duplicates, parsed.rejected[:MAX_REPORTED_REJECTS],
                         len(parsed.rejected), by_line)

    async def list_entries(self, who: Principal, number: str | None, region: str | None, limit: int,
                   offset: int) -> tuple[list[Suppression], int]:
        """A page of the tenant's list; ``number`` (normalised like the entries) looks one up."""
        e164 = None if number is None else normalise(number, region, "number")
        return await self.store.list_suppressions(who.tenant_id, e164, limit, offset)

    async def delete(self, who: Principal, number: str) -> None:
        """Take an E.164 number off the tenant's list; 404 when it is not on it."""
        e164 = normalise(number, None, "number")
        if not await self.store.delete_suppression(who.tenant_id, e164):
            raise NotFound(f"{e164} is not on the suppression list", error_id="suppression_not_found", number=e164)


def normalise(raw: str, region: str | None, name: str) -> str:
    """One number as E.164, or 400 naming ``name`` and the problem."""
    parsed = parse_phone(raw, region) if raw.strip() else ("empty_number", "empty number")
    if isinstance(parsed, tuple):
        code, reason = parsed
        raise InvalidInput(f"{name}: {reason}", error_id="invalid_field", field=name, code=code)
    return parsed


def reject_json(r: Rejected, by_line: bool) -> dict[str, Any]:
    return {"input": r.value, "reason": r.reason, "code": r.code, ("line" if by_line else "index"): r.position}


def _read_csv(stream: IO[bytes], region: str | None) -> _Read:
    """The whole file, in the worker thread (InvalidCsv refuses it whole, before anything is written)."""
    parser = ContactsCsv(cast(BinaryIO, stream), default_region=region)
    parsed, reasons = ParsedNumbers(), {}
    for batch in parser.batches():
        for item in batch:
            if isinstance(item, ParsedContact):
                parsed.add_valid(item.phone_e164)
                row_reason = item.fields.get(REASON_COLUMN, "").strip()
                if row_reason and item.phone_e164 not in reasons:
                    reasons[item.phone_e164] = row_reason[:200]
            else:
                parsed.rejected.append(Rejected(item.line, item.value, item.reason, item.code))
    return _Read(parsed, reasons)
