"""The results export: every contact of a campaign with its outcome, as CSV, streamed page by page.

``GET /api/v1/campaigns/{id}/contacts?format=csv`` (or ``Accept: text/csv``) and ``dialerctl export``.
One line per contact in CSV (id) order: ``RESULT_COLUMNS``, then each custom field as its own column (the
campaign's ``custom_fields``, in order). Every cell goes through ``domain/cells.safe_cell`` (no formula
survives into a spreadsheet) and is quoted. Memory stays flat however big the campaign: the store is
read in keyset pages of ``EXPORT_PAGE`` contacts (``Store.results_page``) and each page is encoded and
handed on before the next is read. A contact that changes status while a filtered export runs may be
missed or included; export a finished campaign for an exact list.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

from dialerd.domain.cells import safe_cells
from dialerd.store.repo import ContactResult, Store
from dialerd.timestamps import rfc3339

RESULT_COLUMNS = (
    "phone_number", "status", "reason", "attempts", "last_attempt_at", "answered_by", "hangup_cause", "sip_code",
    "talk_seconds", "caller_id",
)  # fmt: skip
EXPORT_PAGE = 2000  # contacts per store read (two indexed queries); one page is a few hundred KB of CSV
CSV_MEDIA_TYPE = "text/csv"


def header(custom_fields: Sequence[str]) -> list[str]:
    """The header line: the result columns, then the custom fields (``custom.NAME`` for one that would
    repeat a result column's name)."""
    taken = set(RESULT_COLUMNS)
    return [*RESULT_COLUMNS, *(f"custom.{f}" if f in taken else f for f in custom_fields)]


def _talk(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.3f}".rstrip("0").rstrip(".")


def row(result: ContactResult, custom_fields: Sequence[str]) -> list[str]:
    """One contact's cells, before neutralising."""
    at = result.last_attempt_at
    values: list[object] = [
        result.phone_e164, result.status, result.reason, result.attempts, rfc3339(at) if at else None,
        result.answered_by, result.hangup_cause, result.sip_code, _talk(result.talk_seconds), result.caller_id,
    ]
    return [*("" if v is None else str(v) for v in values), *(result.fields.get(f, "") for f in custom_fields)]


class _Lines:
    """Encodes rows as quoted CSV lines (CRLF, UTF-8), every cell neutralised."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")

    def encode(self, rows: Sequence[Sequence[str]]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerows(safe_cells(r) for r in rows)
        return self._buffer.getvalue().encode("utf-8")


async def export_csv(
    store: Store, campaign_id: str, status: str | None, custom_fields: Sequence[str], *, page: int | None = None,
) -> AsyncIterator[bytes]:
    """The export's bytes: the header line, then one chunk per page of contacts (of ``status``, if given;
    ``page`` contacts a read, default ``EXPORT_PAGE``)."""
    page = page or EXPORT_PAGE
    lines = _Lines()
    custom = list(custom_fields)
    yield lines.encode([header(custom)])
    after = 0
    while True:
        results = await store.results_page(campaign_id, status, after, page)
        if results:
            yield lines.encode([row(r, custom) for r in results])
        if len(results) < page:
            return
        after = results[-1].id
