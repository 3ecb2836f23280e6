"""Streams a contacts CSV into a campaign: parse batch by batch, insert batch by batch.

The CSV parser (``csv_contacts``) is synchronous and CPU-bound. A small file is parsed in a thread, batch
by batch, and the event loop only awaits it. A large one (``POOL_MIN_BYTES``) is read here but its numbers
are parsed in worker processes (phonenumbers holds the GIL, so a thread gives no parallelism): a few
batches are out to the workers while this process inserts the previous one. Either way memory holds a
few batches however long the file is, and the rows, problems and report are the same. The create imports
into its new, still invisible campaign (``import_contacts``); an append adds to an existing one
(``append_contacts``), by the same rules and with the same report.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import pickle
import tempfile
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import IO, Any, BinaryIO, cast

from dialerd.domain.campaign import CampaignStatus
from dialerd.domain.eligibility import preflight
from dialerd.domain.hours import CallingHours
from dialerd.errors import DialerdError, InvalidCsv
from dialerd.services.csv_contacts import ContactRows, ContactsCsv, Record, RowProblem, contact_rows
from dialerd.store.repo import Appended, Store
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

# The numbers are parsed (phonenumbers, pure Python under the GIL) in worker processes for files of at
# least this size, so the parse runs on the other core while this process inserts; a smaller file is
# parsed in a thread and never starts a process. ~1 MiB is ~25k rows of a typical list.
POOL_MIN_BYTES = 1 << 20
POOL_WORKERS = 2  # the machine's cores: the workers parse while this process reads the CSV and inserts
IN_FLIGHT = POOL_WORKERS + 1  # batches sent to the workers and not yet inserted (memory: a few batches)

_pool: ProcessPoolExecutor | None = None


def _worker_pool() -> ProcessPoolExecutor:
    """The daemon's parse workers, started by the first large import (``shutdown_pool`` at its stop).

    ``spawn``: a fork of the multi-threaded daemon could inherit a lock held by another thread; a spawned
    worker imports only ``csv_contacts`` (~0.1 s, once per daemon)."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(POOL_WORKERS, mp_context=multiprocessing.get_context("spawn"))
    return _pool


def shutdown_pool() -> None:
    """Stop the parse workers, if any were started (the daemon's shutdown; a later import starts new ones)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _drop_pool(broken: ProcessPoolExecutor) -> None:
    global _pool
    if _pool is broken:
        _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def _bytes_left(stream: IO[bytes]) -> int:
    """How many bytes of the (seekable) upload are left to read; it is left where it was."""
    here = stream.tell()
    end = stream.seek(0, io.SEEK_END)
    stream.seek(here)
    return end - here


def _take(records: Iterator[Record], size: int) -> list[Record]:
    return list(islice(records, size))


BatchSink = Callable[[list[dict[str, Any]], list[dict[str, Any]]], Awaitable[None]]


async def _read_csv(
    stream: IO[bytes], default_region: str | None, sink: BatchSink, *, batch_size: int, phone_column: str | None,
    encoding: str | None, zones: ZoneFallbacks, pool_min_bytes: int | None = None,
) -> ImportReport:
    """Parse every row of ``stream``, handing each batch's contacts and rejected rows to ``sink``; the
    report's figures but ``stored`` (what the store kept) and what follows from it. Raises InvalidCsv.

    The CSV is read here (its records, in a thread); each batch of records is judged and shaped
    (``csv_contacts.contact_rows``) in a thread for a small file, in the worker processes for a file of
    ``pool_min_bytes`` (default ``POOL_MIN_BYTES``) or more: the same function, so the same rows, problems
    and report. A worker that dies fails the import (``import_worker_failed``); the next starts new ones."""
    large = await asyncio.to_thread(_bytes_left, stream) >= (POOL_MIN_BYTES if pool_min_bytes is None else pool_min_bytes)
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
    shape = partial(contact_rows, parser.rules, zones.campaign, zones.default)
    records = parser.records()

    def add(batch: ContactRows) -> None:
        report.rows_valid += len(batch.rows)
        report.rows_rejected += len(batch.rejected)
        report.rows_total += len(batch.rows) + len(batch.rejected)
        for name, n in batch.columns.items():
            report.phone_columns[name] += n
        report.multi_number_cells += batch.multi_number_cells
        room = MAX_REPORTED_PROBLEMS - len(report.problems)
        report.problems.extend(RowProblem(**p) for p in batch.rejected[:room])

    if large:
        async with aclosing(_pooled(records, shape, batch_size)) as batches:  # closed now on an error
            async for batch in batches:
                add(batch)
                await sink(batch.rows, batch.rejected)
    else:
        while True:
            batch = await asyncio.to_thread(shape, islice(records, batch_size))
            if not batch.rows and not batch.rejected:
                break
            add(batch)
            await sink(batch.rows, batch.rejected)
    # Final only now: UTF-8 can turn out to be another encoding part-way through the file.
    report.encoding, report.encoding_source = parser.encoding, parser.encoding_source
    return report


async def _pooled(
    records: Iterator[Record], shape: Callable[[list[Record]], ContactRows], batch_size: int,
) -> AsyncGenerator[ContactRows, None]:
    """The batches of ``records`` shaped in the worker processes, in file order; up to ``IN_FLIGHT`` of
    them are being read or parsed while the caller inserts the one yielded (the overlap is the speed-up)."""
    loop = asyncio.get_running_loop()
    pool = _worker_pool()
    pending: deque[asyncio.Future[ContactRows]] = deque()
    more = True

    async def top_up() -> None:
        nonlocal more
        while more and len(pending) < IN_FLIGHT:
            chunk = await asyncio.to_thread(_take, records, batch_size)
            if not chunk:
                more = False
                return
            pending.append(loop.run_in_executor(pool, shape, chunk))

    try:
        await top_up()
        while pending:
            batch = await pending.popleft()
            await top_up()
            yield batch
    except BrokenProcessPool:  # from a batch out when a worker died, or from sending one after that
        _drop_pool(pool)
        raise DialerdError(
            "contacts import failed: a CSV parsing worker process stopped unexpectedly; nothing was "
            "kept, send the file again", error_id="import_worker_failed",
        ) from None
    finally:
        for future in pending:  # an error or a cancel: the batches still out are dropped
            future.cancel()


def _no_valid_numbers(report: ImportReport) -> InvalidCsv:
    return InvalidCsv(
        "contacts file has no valid phone number"
        + (f" ({report.rows_rejected} rows rejected; see details)" if report.rows_rejected else " (no data rows)"),
        error_id="csv_no_valid_numbers",
        **{k: v for k, v in report.as_json(max_problems=100).items() if k in ("rows_total", "problems", "encoding", "phone_column")},
    )


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

    async def insert(rows: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
        await store.insert_contacts(campaign_id, rows)
        await store.insert_import_problems(campaign_id, rejected)

    report = await _read_csv(stream, default_region, insert, batch_size=batch_size, phone_column=phone_column,
                             encoding=encoding, zones=zones)
    report.stored = await store.count_contacts(campaign_id)
    if tenant_id is not None and report.stored:
        report.suppressed = await store.skip_suppressed(campaign_id, tenant_id)
    if hours is not None and report.stored:
        report.preflight = preflight(hours, await store.pending_zone_counts(campaign_id), utcnow())
    if report.stored == 0:
        raise _no_valid_numbers(report)
    return report


def _spooled(spool: IO[bytes]) -> Iterator[list[dict[str, Any]]]:
    spool.seek(0)
    while True:
        try:
            # Our own rows, written by this request into its private temporary file a moment ago.
            yield pickle.load(spool)
        except EOFError:
            return


async def append_contacts(
    store: Store,
    campaign_id: str,
    stream: IO[bytes],
    default_region: str | None,
    *,
    tenant_id: str,
    into: Sequence[CampaignStatus],
    batch_size: int = IMPORT_BATCH_SIZE,
    phone_column: str | None = None,
    encoding: str | None = None,
    zones: ZoneFallbacks = ZoneFallbacks(),
    hours: CallingHours | None = None,
) -> tuple[ImportReport, Appended]:
    """Append every row of ``stream`` to an existing campaign whose status is one of ``into``, by the
    create's rules and with its report (``import_contacts``); all or nothing.

    The file is parsed whole first, its rows spooled to a temporary file (memory holds one batch), so a
    file refused half-way (InvalidCsv) has written nothing; then one transaction (``Store.append_contacts``)
    checks the campaign's status under its row lock and inserts every row. A number already in the
    campaign, or earlier in the file, counts in ``duplicates``; ``contacts`` (``stored``) counts the
    contacts added. Rejected rows are reported in the answer only (the stored rows of GET .../import are
    the create's). When the status refuses the append, ``Appended.accepted`` is False and nothing is written.
    """
    with tempfile.TemporaryFile() as spool:

        async def keep(rows: list[dict[str, Any]], _rejected: list[dict[str, Any]]) -> None:
            if rows:
                await asyncio.to_thread(pickle.dump, rows, spool, pickle.HIGHEST_PROTOCOL)

        report = await _read_csv(stream, default_region, keep, batch_size=batch_size, phone_column=phone_column,
                                 encoding=encoding, zones=zones)
        if report.rows_valid == 0:
            raise _no_valid_numbers(report)
        appended = await store.append_contacts(campaign_id, tenant_id, _spooled(spool), into=into,
                                               custom_fields=report.custom_fields)
    if appended.accepted:
        report.stored, report.suppressed = appended.added, appended.suppressed
        if hours is not None and appended.added:
            zones_of_new = await store.pending_zone_counts(campaign_id, appended.after_id)
            report.preflight = preflight(hours, zones_of_new, utcnow())
    return report, appended
