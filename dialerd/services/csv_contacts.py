"""Streaming parser for an uploaded contacts CSV file.

``ContactsCsv`` reads the header when built (refusing the whole file with ``InvalidCsv`` when it cannot be
a contacts list), then ``batches()`` streams the data rows as ``ParsedContact`` (a dialable E.164 number,
the column it came from, plus the row's other columns) or ``RowProblem`` (why that row cannot be dialled).
Every data record comes out exactly once, in file order; nothing is deduplicated (the store collapses
duplicate numbers).

Decisions (see the module constants for the exact lists):

- Encoding (``csv_text``): a BOM (UTF-8, UTF-16, UTF-32), else the ``encoding`` given, else UTF-8, else
  a code page detected from the bytes; refused when detection is not confident (``csv_encoding_unknown``).
  NUL characters and known binary formats such as an ``.xlsx`` workbook are refused (``csv_binary``).
  Other control characters are kept as field content.
- Delimiter: ``,`` ``;`` or tab, whichever occurs most outside quotes in the header line (``,`` on a tie
  or when none occurs); an Excel ``sep=X`` first line overrides it. Blank lines before the header are
  skipped; blank lines after it are reported as ``empty_row``.
- Phone columns (``dialerd.domain.phone_columns``): every header that names one, in a fixed priority
  (generic ``phone_number``/``phone`` first, then numbered, mobile, typed landlines); each row's number
  comes from the first of them whose cell holds a dialable number, else the row is rejected with the
  problem of the first non-empty one. ``phone_column`` names the one column to use instead. The first
  phone column is ``phone_column`` in the report and not a custom field; the others stay custom fields.
- A cell holding several numbers separated by ``:::`` (Google Contacts) gives its first dialable one;
  ``raw`` keeps the whole cell.
- Numbers (``dialerd.domain.phone``): *possible* (right length for the country), not only *valid*, so
  the fictional +1 415 555 01XX range works; NANP area codes and exchanges starting 0/1, local-only
  numbers, letters, extensions and spreadsheet artefacts (``4155550124.0``, ``4.15555E+09``) are refused.
- A ``timezone`` column (any case) gives the row's zone, an IANA name (``domain/zones``); an unknown one
  rejects the row (``unknown_timezone``); an empty cell leaves the zone to the number. It stays a custom field.
- Trailing extra fields that are all blank (``a,b,,,`` under a two-column header) are dropped; extra
  fields with content make the row ``too_many_fields``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain, islice
from typing import Any, BinaryIO, Final

import phonenumbers

from dialerd.domain.phone import parse_phone
from dialerd.domain.phone_columns import PHONE_COLUMN_NAMES, find_column, phone_columns
from dialerd.domain.zones import column_timezone, resolve_zones
from dialerd.errors import InvalidCsv, InvalidInput
from dialerd.services.csv_text import DecodedLines

__all__ = ["PHONE_COLUMN_NAMES", "ROW_CODES", "ContactRows", "ContactsCsv", "CsvStats", "ParsedContact", "Record", "RowProblem", "RowRules", "contact_rows"]

ROW_CODES: Final = frozenset(
    {
        "empty_row",
        "empty_number",
        "invalid_number",
        "not_a_number",
        "missing_region",
        "extension",
        "too_many_fields",
        "field_too_long",
        "malformed_row",
        "unknown_timezone",  # the row's timezone cell is not an IANA zone (domain/zones.ROW_CODE)
    }
)

_VALUE_CHARS: Final = 100  # RowProblem.value is truncated to this many characters
_DELIMITERS: Final = ",;\t"  # detection order doubles as the tie-break order
TIMEZONE_COLUMN: Final = "timezone"  # the header (any case) of each row's IANA zone (issue 11)
MULTI_VALUE: Final = ":::"  # Google Contacts' separator of several values in one cell

_SEP_LINE = re.compile(r"\s*sep=([,;\t|])\s*", re.IGNORECASE)
_PHONE_LIKE = re.compile(r"[+(]?[\d \-.()/]{7,}")


@dataclass(frozen=True, slots=True)
class ParsedContact:
    """A data row with a dialable number."""

    line: int  # 1-based physical line where the record starts (the header is line 1)
    phone_e164: str  # "+14155550142"
    raw: str  # the phone cell as written, surrounding whitespace trimmed
    fields: dict[str, str]  # every other column by cleaned header name, values trimmed
    column: str  # the header of the cell the number came from
    timezone: str | None = None  # the row's ``timezone`` cell as a checked IANA name; None: empty or no column


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A data row that cannot be dialled, and why."""

    line: int
    value: str  # the phone cell, or the whole row when the cell is empty; at most 100 characters
    reason: str  # for humans
    code: str  # stable, one of ROW_CODES


@dataclass(frozen=True, slots=True)
class CsvStats:
    """Data records seen so far; ``rows_total == rows_valid + rows_rejected``."""

    rows_total: int
    rows_valid: int
    rows_rejected: int


class ContactsCsv:
    """One contacts CSV file: the header is checked on construction, rows stream from ``batches()``.

    ``stream`` is a seekable binary file positioned at the start of the CSV; it is read incrementally
    (memory stays flat) and never closed. ``InvalidCsv`` refuses the whole file, from the constructor or
    from ``batches()``: the text layer decodes ahead in 16 KiB chunks, so an encoding error close to the
    header can already surface in the constructor. Its ``details`` carry ``line`` when it is known.
    ``phone_column`` names the column to take numbers from (else the recognised phone columns are used);
    ``encoding`` the file's encoding (else BOM, UTF-8 or detection). ``encoding`` and ``encoding_source``
    are final once ``batches()`` is exhausted (detection may switch from UTF-8 mid-file).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        default_region: str | None,
        phone_column: str | None = None,
        encoding: str | None = None,
        batch_size: int = 1000,
        max_columns: int = 100,
        max_field_chars: int = 10_000,
    ) -> None:
        if batch_size < 1 or max_columns < 1 or max_field_chars < 1:
            raise ValueError("batch_size, max_columns and max_field_chars must be positive")
        self._region = _check_region(default_region)
        self._batch_size = batch_size
        self._text = DecodedLines(stream, encoding)
        lines = iter(self._text)
        first, skipped = _next_non_blank(lines)
        if first is None:
            raise InvalidCsv("contacts file is empty: no header row and no data", error_id="csv_empty")
        sep = _SEP_LINE.fullmatch(first)
        if sep is not None:
            self.delimiter = sep.group(1)
            first, more = _next_non_blank(lines)
            if first is None:
                raise InvalidCsv("contacts file has no header row after its 'sep=' line", error_id="csv_empty")
            skipped += 1 + more
        else:
            self.delimiter = _detect_delimiter(first)
        self._line_offset = skipped  # physical lines before the header, which csv's line_num does not see
        self._reader = csv.reader(
            chain((first,), lines), delimiter=self.delimiter, skipinitialspace=True, strict=True
        )
        try:
            cells = next(self._reader)
        except csv.Error as exc:
            raise InvalidCsv(
                f"contacts file header on line {skipped + 1} is malformed: {exc}",
                error_id="csv_malformed",
                line=skipped + 1,
            ) from None
        if len(cells) > max_columns:
            raise InvalidCsv(
                f"contacts file has {len(cells)} columns; at most {max_columns} are allowed",
                error_id="csv_too_many_columns",
                columns=len(cells),
                limit=max_columns,
            )
        if cells:
            cells[0] = cells[0].removeprefix("\ufeff")  # a BOM repeated after a declared utf-8/utf-16
        self.header: list[str] = _clean_header(cells)
        if phone_column is not None:
            chosen = find_column(self.header, phone_column)
            if chosen is None:
                raise InvalidCsv(
                    f"phone_column {phone_column!r} is not a column of the contacts file; its headers are "
                    + ", ".join(map(repr, self.header)),
                    error_id="csv_unknown_phone_column",
                    field="phone_column",
                    headers=self.header,
                )
            candidates = [chosen]
        else:
            candidates = phone_columns(self.header) or _no_phone_column(self.header, cells)
        phone_index = candidates[0]
        self.phone_column: str = self.header[phone_index]
        self.phone_columns: list[str] = [self.header[i] for i in candidates]
        others = tuple((i, name) for i, name in enumerate(self.header) if i != phone_index)
        self._rules = RowRules(
            header=tuple(self.header),
            candidates=tuple(candidates),
            others=others,
            region=self._region,
            max_field_chars=max_field_chars,
            delimiter=self.delimiter,
            # A ``timezone`` column (any case) gives each row's zone; it stays a custom field too.
            timezone=next((name for i, name in others if name.lower() == TIMEZONE_COLUMN), None),
        )
        self._started = False
        self._valid = 0
        self._rejected = 0

    @property
    def encoding(self) -> str:
        """The encoding the file is read in (``utf-8``, ``utf-16-le``, ``cp1252``...)."""
        return self._text.encoding

    @property
    def encoding_source(self) -> str:
        """How it was chosen: ``bom``, ``declared``, ``utf-8`` or ``detected``."""
        return self._text.source

    @property
    def stats(self) -> CsvStats:
        """Counts of the data records handed out so far."""
        return CsvStats(self._valid + self._rejected, self._valid, self._rejected)

    @property
    def rules(self) -> RowRules:
        """How this file's records become contacts or problems (``RowRules.judge``)."""
        return self._rules

    def batches(self) -> Iterator[list[ParsedContact | RowProblem]]:
        """Yield the data rows in file order, in non-empty lists of at most ``batch_size`` items.

        Nothing is yielded for a header-only file. Raises ``InvalidCsv`` mid-way on bad encoding, NUL
        bytes or a quote that never closes; the batches already yielded must then be discarded.
        May be called once (and not with ``records()``).
        """
        return self._judged(self._start())

    def _judged(self, flat: Iterator[Record]) -> Iterator[list[ParsedContact | RowProblem]]:
        judge, size = self._rules.judge, self._batch_size
        while True:
            # judge() pulls the records one by one, so only the batch it builds is held (memory is flat).
            batch = judge(islice(flat, size))
            if not batch:
                return
            valid = sum(1 for item in batch if item.__class__ is ParsedContact)
            self._valid += valid
            self._rejected += len(batch) - valid
            yield batch

    def records(self) -> Iterator[Record]:
        """The data records in file order, unjudged: each a ``(line, cells)`` pair, or the ``RowProblem`` of
        a record the CSV layer already refused. ``batches()`` is ``rules.judge`` over these, batch by batch;
        the importer judges them in a worker process instead (``contact_rows``). Raises as ``batches()``.
        May be called once (and not with ``batches()``); ``stats`` does not count these.
        """
        return self._start()

    def _start(self) -> Iterator[Record]:
        if self._started:
            raise RuntimeError("ContactsCsv.batches() can only be iterated once")
        self._started = True
        return self._iter_records()

    def _iter_records(self) -> Iterator[Record]:
        reader = self._reader
        offset = self._line_offset
        last = reader.line_num  # line_num after a record is the line where it ended
        while True:
            # `for` over the reader is much faster than next() per row; a csv.Error ends the loop and
            # the reader resumes on the following line when we loop again.
            try:
                for row in reader:
                    yield offset + last + 1, row
                    last = reader.line_num
                return
            except csv.Error as exc:
                line = offset + last + 1
                last = reader.line_num
                yield _csv_problem(exc, line, last + offset)


Record = tuple[int, list[str]] | RowProblem  # a data record (its first line, its cells), or the CSV layer's refusal


@dataclass(frozen=True, slots=True)
class RowRules:
    """What ``ContactsCsv`` learned from the header, and the rules turning each data record into a
    ``ParsedContact`` or a ``RowProblem``. Pure and picklable: the importer judges batches in a worker
    process with it, and gets exactly what ``ContactsCsv.batches()`` gives in-process."""

    header: tuple[str, ...]
    candidates: tuple[int, ...]  # the phone columns tried, in priority; the first is the report's phone column
    others: tuple[tuple[int, str], ...]  # every other column (index, name): the custom fields
    region: str | None
    max_field_chars: int
    delimiter: str
    timezone: str | None  # the ``timezone`` column's name, if the file has one

    def judge(self, records: Iterable[Record]) -> list[ParsedContact | RowProblem]:
        """The records' contacts or problems, in order; the cells lists may be changed in place."""
        # The per-row cost is measured against phonenumbers itself, so the common row (right width,
        # fields within limits, a phone cell) is handled inline with everything bound to locals; any
        # other row goes through _to_item(), which may be slower.
        width = len(self.header)
        phone_index = self.candidates[0]
        column = self.header[phone_index]
        others = self.others
        max_chars = self.max_field_chars
        region = self.region
        parse = parse_phone  # a local name: this loop runs per row
        to_item = self._to_item
        zoned = self._zoned if self.timezone is not None else None
        single = len(self.candidates) == 1  # else each row may need its other phone columns
        problem = RowProblem
        out: list[ParsedContact | RowProblem] = []
        append = out.append
        for record in records:
            if record.__class__ is problem:
                append(record)  # type: ignore[arg-type]
                continue
            line, row = record  # type: ignore[misc]
            raw = row[phone_index].strip() if len(row) == width else ""
            item: ParsedContact | RowProblem
            if not raw or max(map(len, row)) > max_chars or MULTI_VALUE in raw:
                item = to_item(row, line)
            elif (parsed := parse(raw, region)).__class__ is str:
                item = ParsedContact(line, parsed, raw, {name: row[i].strip() for i, name in others}, column)  # type: ignore[arg-type]
            elif not single:
                item = to_item(row, line)
            else:
                item = problem(line, raw[:_VALUE_CHARS], parsed[1], parsed[0])
            if zoned is not None and item.__class__ is ParsedContact:
                item = zoned(item)
            append(item)
        return out

    def _zoned(self, item: ParsedContact | RowProblem) -> ParsedContact | RowProblem:
        """A valid row with its ``timezone`` cell checked: the contact with its zone, or the row rejected."""
        if isinstance(item, RowProblem):
            return item
        assert self.timezone is not None
        cell = item.fields.get(self.timezone, "")
        if not cell:
            return item
        zone = column_timezone(cell)
        if isinstance(zone, tuple):
            return RowProblem(item.line, cell[:_VALUE_CHARS], zone[1], zone[0])
        return replace(item, timezone=zone)

    def _to_item(self, row: list[str], line: int) -> ParsedContact | RowProblem:
        """Any row, whatever its width or content; the fast path in judge() covers most rows."""
        width = len(self.header)
        if len(row) > width:
            if any(cell.strip() for cell in row[width:]):
                reason = f"too many fields ({len(row)}, header has {width})"
                return RowProblem(line, self._row_value(row), reason, "too_many_fields")
            del row[width:]
        row.extend([""] * (width - len(row)))
        if max(map(len, row)) > self.max_field_chars:
            return self._too_long(row, line)
        first: tuple[int, str, str, str] | None = None  # (column, cell, code, reason) of the first bad cell
        for index in self.candidates:
            cell = row[index].strip()
            if not cell:
                continue
            for value in cell.split(MULTI_VALUE) if MULTI_VALUE in cell else (cell,):
                value = value.strip()
                if not value:
                    continue
                parsed = parse_phone(value, self.region)
                if isinstance(parsed, str):
                    fields = {name: row[i].strip() for i, name in self.others}
                    return ParsedContact(line, parsed, cell, fields, self.header[index])
                if first is None:
                    first = (index, cell, *parsed)
        if first is not None:
            index, cell, code, reason = first
            if len(self.candidates) > 1:
                reason = f"{reason} (column {self.header[index]!r})"
            return RowProblem(line, cell[:_VALUE_CHARS], reason, code)
        if any(cell.strip() for cell in row):
            return RowProblem(line, self._row_value(row), f"empty {self._names()}", "empty_number")
        return RowProblem(line, self._row_value(row), "empty row", "empty_row")

    def _names(self) -> str:
        names = [self.header[i] for i in self.candidates]
        return names[0] if len(names) == 1 else ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    def _row_value(self, row: list[str]) -> str:
        """The phone cell when it has one, else the row as text; for RowProblem.value."""
        phone_index = self.candidates[0]
        value = row[phone_index].strip() if len(row) > phone_index else ""
        return (value or self.delimiter.join(row).strip())[:_VALUE_CHARS]

    def _too_long(self, row: list[str], line: int) -> RowProblem:
        index, cell = max(enumerate(row), key=lambda pair: len(pair[1]))
        reason = f"field {self.header[index]!r} is {len(cell)} characters (limit {self.max_field_chars})"
        return RowProblem(line, self._row_value(row), reason, "field_too_long")


@dataclass(slots=True)
class ContactRows:
    """One batch of records judged and shaped for the store (``contact_rows``), with the report's counts."""

    rows: list[dict[str, Any]]  # the contacts, as ``Store.insert_contacts`` takes them
    rejected: list[dict[str, Any]]  # the problems, as ``Store.insert_import_problems`` takes them
    columns: dict[str, int]  # valid rows per phone column their number came from
    multi_number_cells: int  # valid rows whose cell held several numbers


def contact_rows(
    rules: RowRules, campaign_zone: str | None, default_zone: str | None, records: Iterable[Record],
) -> ContactRows:
    """``records`` judged by ``rules``, each contact with its zones (``domain/zones.resolve_zones``; the
    fallbacks are the campaign's zone and the configured default). Pure: the importer runs it in a thread
    or in a worker process (it lives here so a worker imports this module only), with the same result."""
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    columns: dict[str, int] = {}
    multi = 0
    for item in rules.judge(records):
        if item.__class__ is ParsedContact:
            assert isinstance(item, ParsedContact)
            columns[item.column] = columns.get(item.column, 0) + 1
            if MULTI_VALUE in item.raw:
                multi += 1
            placed = resolve_zones(item.phone_e164, column=item.timezone, campaign=campaign_zone,
                                   default=default_zone)
            rows.append(
                {"line": item.line, "phone_e164": item.phone_e164, "raw_number": item.raw, "fields": item.fields,
                 "timezone": placed.text or None,
                 "timezone_source": placed.source.value if placed.source else None}
            )
        else:
            assert isinstance(item, RowProblem)
            rejected.append({"line": item.line, "value": item.value, "reason": item.reason, "code": item.code})
    return ContactRows(rows, rejected, columns, multi)


def _check_region(region: str | None) -> str | None:
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidInput(
            f"default_region {region!r} is not an ISO 3166 alpha-2 region known to libphonenumber",
            error_id="invalid_default_region",
            default_region=region,
        )
    return code


def _next_non_blank(lines: Iterator[str]) -> tuple[str | None, int]:
    """The next line with content, and how many blank lines were skipped before it."""
    skipped = 0
    for line in lines:
        if line.strip():
            return line, skipped
        skipped += 1
    return None, skipped


def _detect_delimiter(line: str) -> str:
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=counts.__getitem__)  # max() keeps the first on ties, hence the order
    return best if counts[best] else ","


def _clean_header(cells: list[str]) -> list[str]:
    """Trimmed names; empty ones become ``column_N``, repeats get ``_2``, ``_3``... ."""
    names: list[str] = []
    taken: set[str] = set()
    for index, cell in enumerate(cells, 1):
        base = cell.strip() or f"column_{index}"
        name, suffix = base, 1
        while name in taken:
            suffix += 1
            name = f"{base}_{suffix}"
        taken.add(name)
        names.append(name)
    return names


def _no_phone_column(names: list[str], cells: list[str]) -> list[int]:
    """Raise the most helpful refusal for a header with no phone column."""
    looks_like_data = next((cell.strip() for cell in cells if _looks_like_phone(cell.strip())), None)
    if looks_like_data is not None:
        raise InvalidCsv(
            f"contacts file has no header row: the first line contains {looks_like_data[:40]!r}, which looks "
            "like a phone number; add a first line naming the columns, e.g. 'phone_number'",
            error_id="csv_no_header",
        )
    if not any(cell.strip() for cell in cells):
        raise InvalidCsv(
            "contacts file has no header row: the first line names no columns", error_id="csv_no_header"
        )
    raise InvalidCsv(
        f"contacts file has no phone column: found {', '.join(map(repr, names))}; name the column "
        "phone_number, phone, mobile, tel, Telefon, Phone 1 - Value, Mobile Phone, ... (any case, accents or "
        "punctuation; details.accepted lists them all), or send the phone_column form field naming it",
        error_id="csv_no_phone_column",
        headers=names,
        accepted=list(PHONE_COLUMN_NAMES),
    )


def _looks_like_phone(cell: str) -> bool:
    return _PHONE_LIKE.fullmatch(cell) is not None and sum(char.isdigit() for char in cell) >= 7


def _csv_problem(exc: csv.Error, line: int, error_line: int) -> RowProblem:
    """Turn a csv error into a row problem, or raise when the rest of the file cannot be trusted."""
    message = str(exc)
    if "expected after" in message:
        # Strict mode caught text after a closing quote; the reader resumes on the next line, and the
        # rest of the record was on this line, so only this record is lost.
        reason = f'text after a closing quote on line {error_line} (write "" for a quote inside quotes)'
        return RowProblem(line, "", reason, "malformed_row")
    if "field limit" in message or "end of data" in message:
        reason = f"a quoted field starting on line {line} never ends (unbalanced quote)"
    else:
        reason = f"malformed record starting on line {line}: {message}"
    raise InvalidCsv(f"contacts file is malformed: {reason}", error_id="csv_malformed", line=line)
