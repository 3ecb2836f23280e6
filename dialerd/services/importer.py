"""Streams a contacts CSV into a campaign: parse in a worker thread, insert batch by batch.

The CSV parser (``csv_contacts``) is synchronous and CPU-bound, so each batch is parsed in a thread
and the event loop only awaits it; memory holds one batch at a time however long the file is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

from dialerd.domain.eligibility import preflight
from dialerd.domain.hours import CallingHours
from dialerd.domain.zones import resolve_zones
from dialerd.errors import InvalidCsv
from dialerd.services.csv_contacts import MULTI_VALUE, ContactsCsv, ParsedContact, RowProblem
from dialerd.store.repo import Store
from dialerd.timestamps import utcnow

MAX_REPORTED_PROBLEMS = 1000


@dataclass(frozen=True)
class ZoneFallbacks:
    """The zones of contacts whose zone neither the CSV's ``timezone`` column nor the number gives:
    the campaign's ``timezone``, else config ``[compliance] default_timezone`` (checked names, or None)."""

    campaign: str | None = None
    default: str | None = None


@dataclass
class ImportReport:
    """What an import did. ``as_json`` is the API's report; keys are only ever added to it."""

    rows_total: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    stored: int = 0
    phone_column: str = ""
    delimiter: str = ","
    custom_fields: list[str] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    encoding: str = "utf-8"
    encoding_source: str = "utf-8"  # bom, declared, utf-8 or detected
    # Every phone column, in the priority tried, with how many contacts' numbers came from it.
    phone_columns: dict[str, int] = field(default_factory=dict)
    multi_number_cells: int = 0  # valid rows whose cell held several numbers (":::"); the first was taken
    suppressed: int = 0  # contacts stored as skipped: their number is on the tenant's suppression list
    # What the rules hold back as of the import (``eligibility.preflight``, plus ``suppressed``); None: not run.
    preflight: dict[str, int] | None = None

    @property
    def duplicates(self) -> int:
        return self.rows_valid - self.stored

    def as_json(self, max_problems: int = MAX_REPORTED_PROBLEMS) -> dict[str, Any]:
        shown = self.problems[:max_problems]
        return {
            "rows_total": self.rows_total,
            "rows_valid": self.rows_valid,
            "rows_rejected": self.rows_rejected,
            "duplicates": self.duplicates,
            "contacts": self.stored,
            "phone_column": self.phone_column,
            "delimiter": self.delimiter,
            "custom_fields": self.custom_fields,
            "problems": [{"line": p.line, "value": p.value, "reason": p.reason, "code": p.code} for p in shown],
            "problems_truncated": self.rows_rejected > len(shown),
            "encoding": self.encoding,
            "encoding_source": self.encoding_source,
            "phone_columns": dict(self.phone_columns),
            "multi_number_cells": self.multi_number_cells,
            "suppressed": self.suppressed,
            **({"preflight": {"suppressed": self.suppressed, **self.preflight}} if self.preflight is not None else {}),
        }


# Rows per insert transaction. Perf (docs/benchmarks.md, section 3): 5,000 rather than 1,000 took the 100k
# import from ~2.1x to ~1.95x of the phonenumbers floor (fewer commits and thread hops); one batch is a few
# MB at most, so memory stays flat.
IMPORT_BATCH_SIZE = 5000

def _next_batch(batches: Iterator[list[ParsedContact | RowProblem]]) -> list[ParsedContact | RowProblem] | None:
    return next(batches, None)


async def import_contacts(
    store: Store,
    campaign_id: str,
    stream: IO[bytes],
    default_region: str | None,
    *,
    batch_size: int = IMPORT_BATCH_SIZE,
    phone_column: str | None = None,
    encoding: str | None = None,
    tenant_id: str | None = None,
    zones: ZoneFallbacks = ZoneFallbacks(),
    hours: CallingHours | None = None,
) -> ImportReport:
    """Import every row of ``stream`` into ``campaign_id``; raise InvalidCsv to refuse the whole file.

    ``phone_column`` and ``encoding`` are the create form's fields of those names (None: not given).
    ``tenant_id``: whose suppression list applies; its listed numbers are stored as ``skipped``.
    Each contact's zones are resolved here (``domain/zones.resolve_zones``) and stored with it.
    ``hours``: the campaign's calling hours, for the report's ``preflight`` (None: no preflight).
    """
    parser = await asyncio.to_thread(
        ContactsCsv,
        cast(BinaryIO, stream),
        default_region=default_region,
        batch_size=batch_size,
        phone_column=phone_column,
        encoding=encoding,
    )
    report = ImportReport(
        phone_column=parser.phone_column,
        delimiter=parser.delimiter,
        custom_fields=[h for h in parser.header if h != parser.phone_column],
        phone_columns=dict.fromkeys(parser.phone_columns, 0),
    )
    counts = report.phone_columns
    batches = parser.batches()
    while True:
        batch = await asyncio.to_thread(_next_batch, batches)
        if batch is None:
            break
        rows: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []  # every rejected row is kept (GET /campaigns/{id}/import)
        for item in batch:
            report.rows_total += 1
            if isinstance(item, ParsedContact):
                report.rows_valid += 1
                counts[item.column] += 1
                if MULTI_VALUE in item.raw:
                    report.multi_number_cells += 1
                placed = resolve_zones(item.phone_e164, column=item.timezone, campaign=zones.campaign,
                                       default=zones.default)
                rows.append(
                    {"line": item.line, "phone_e164": item.phone_e164, "raw_number": item.raw, "fields": item.fields,
                     "timezone": placed.text or None,
                     "timezone_source": placed.source.value if placed.source else None}
                )
            else:
                report.rows_rejected += 1
                rejected.append({"line": item.line, "value": item.value, "reason": item.reason, "code": item.code})
                if len(report.problems) < MAX_REPORTED_PROBLEMS:
                    report.problems.append(item)
        await store.insert_contacts(campaign_id, rows)
        await store.insert_import_problems(campaign_id, rejected)
    # Final only now: UTF-8 can turn out to be another encoding part-way through the file.
    report.encoding, report.encoding_source = parser.encoding, parser.encoding_source
    report.stored = await store.count_contacts(campaign_id)
    if tenant_id is not None and report.stored:
        report.suppressed = await store.skip_suppressed(campaign_id, tenant_id)
    if hours is not None and report.stored:
        report.preflight = preflight(hours, await store.pending_zone_counts(campaign_id), utcnow())
    if report.stored == 0:
        raise InvalidCsv(
            "contacts file has no valid phone number"
            + (f" ({report.rows_rejected} rows rejected; see details)" if report.rows_rejected else " (no data rows)"),
            error_id="csv_no_valid_numbers",
            **{k: v for k, v in report.as_json(max_problems=100).items() if k in ("rows_total", "problems", "encoding", "phone_column")},
        )
    return report
