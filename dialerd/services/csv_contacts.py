"""Streaming parser for an uploaded contacts CSV file.

``ContactsCsv`` reads the header when built (refusing the whole file with ``InvalidCsv`` when it cannot be
a contacts list), then ``batches()`` streams the data rows as ``ParsedContact`` (a dialable E.164 number
plus the row's other columns) or ``RowProblem`` (why that row cannot be dialled). Every data record comes
out exactly once, in file order; nothing is deduplicated (the store collapses duplicate numbers).

Decisions (see the module constants for the exact lists):

- Encoding: UTF-8, with or without BOM. Anything else refuses the file (``csv_not_utf8`` with the line),
  as do NUL bytes and known binary formats such as an ``.xlsx`` workbook (``csv_binary``). Other control
  characters are kept as field content.
- Delimiter: ``,`` ``;`` or tab, whichever occurs most outside quotes in the header line (``,`` on a tie
  or when none occurs); an Excel ``sep=X`` first line overrides it. Blank lines before the header are
  skipped; blank lines after it are reported as ``empty_row``.
- Numbers are accepted when ``phonenumbers`` calls them *possible* (right length for the country), not
  only when they are *valid* (assigned ranges): dialerd's test PBX dials the fictional +1 415 555 01XX
  range, which is possible but not valid. Local-only numbers (no area code) are refused.
- ``00`` international prefix becomes ``+`` when the number does not parse as a possible national number.
- Letters are refused (``not_a_number``): a dialer must not guess what ``1-800-FLOWERS`` means.
  Numbers with an extension (``x123``, ``ext. 123``, ``#123``) are refused (``extension``) rather than
  dialled without it.
- Trailing extra fields that are all blank (``a,b,,,`` under a two-column header) are dropped; extra
  fields with content make the row ``too_many_fields``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import BinaryIO, Final

import phonenumbers

from dialerd.domain.phone import parse_phone
from dialerd.errors import InvalidCsv, InvalidInput

# Normalized header spellings accepted as the phone column, in order of preference: when a file has
# several (say "phone" and "mobile"), the earliest spelling here wins and the others stay custom fields.
PHONE_COLUMN_NAMES: Final[tuple[str, ...]] = (
    "phone_number", "phonenumber", "phone", "phone_no", "phone_num", "telephone_number", "telephone",
    "tel", "msisdn", "e164", "e_164", "mobile_number", "mobile", "mobile_phone", "mobile_no", "cell",
    "cell_phone", "cellphone", "cell_number", "number", "contact_number", "telefon", "telefono",
)  # fmt: skip

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
    }
)

_SNIFF_BYTES: Final = 8192
_VALUE_CHARS: Final = 100  # RowProblem.value is truncated to this many characters
_DELIMITERS: Final = ",;\t"  # detection order doubles as the tie-break order

# A file that starts like one of these is not a CSV file at all; naming it helps the user more than
# "invalid byte 0x89 on line 1".
_SIGNATURES: Final = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx or OpenDocument workbook?)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 .xls workbook"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_EXPORT_HINT: Final = "export or save it as 'CSV UTF-8'"

_HEADER_JUNK = re.compile(r"[\W_]+")
_SEP_LINE = re.compile(r"\s*sep=([,;\t|])\s*", re.IGNORECASE)
_PHONE_LIKE = re.compile(r"[+(]?[\d \-.()/]{7,}")



@dataclass(frozen=True, slots=True)
class ParsedContact:
    """A data row with a dialable number."""

    line: int  # 1-based physical line where the record starts (the header is line 1)
    phone_e164: str  # "+14155550142"
    raw: str  # the phone cell as written, surrounding whitespace trimmed
    fields: dict[str, str]  # every other column by cleaned header name, values trimmed


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
    from ``batches()``: the text layer decodes ahead in 8 KiB chunks, so an encoding error close to the
    header can already surface in the constructor. Its ``details`` carry ``line`` when it is known.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        default_region: str | None,
        batch_size: int = 1000,
        max_columns: int = 100,
        max_field_chars: int = 10_000,
    ) -> None:
        if batch_size < 1 or max_columns < 1 or max_field_chars < 1:
            raise ValueError("batch_size, max_columns and max_field_chars must be positive")
        self._region = _check_region(default_region)
        self._batch_size = batch_size
        self._max_field_chars = max_field_chars
        self._stream = stream
        self._start = stream.tell()
        head = stream.read(_SNIFF_BYTES)
        stream.seek(self._start)
        _refuse_non_text(head)

        self._text = _BorrowedTextIO(stream, encoding="utf-8-sig", errors="strict", newline="")
        lines = self._checked_lines()
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
        self.header: list[str] = _clean_header(cells)
        phone_index = _phone_column_index(self.header, cells)
        self.phone_column: str = self.header[phone_index]
        self._phone_index = phone_index
        self._others = tuple((i, name) for i, name in enumerate(self.header) if i != phone_index)
        self._started = False
        self._valid = 0
        self._rejected = 0

    @property
    def stats(self) -> CsvStats:
        """Counts of the data records handed out so far."""
        return CsvStats(self._valid + self._rejected, self._valid, self._rejected)

    def batches(self) -> Iterator[list[ParsedContact | RowProblem]]:
        """Yield the data rows in file order, in non-empty lists of at most ``batch_size`` items.

        Nothing is yielded for a header-only file. Raises ``InvalidCsv`` mid-way on bad encoding, NUL
        bytes or a quote that never closes; the batches already yielded must then be discarded.
        May be called once.
        """
        if self._started:
            raise RuntimeError("ContactsCsv.batches() can only be iterated once")
        self._started = True
        return self._iter_batches()

    def _iter_batches(self) -> Iterator[list[ParsedContact | RowProblem]]:
        # The per-row cost is measured against phonenumbers itself, so the common row (right width,
        # fields within limits, a phone cell) is handled inline with everything bound to locals; any
        # other row goes through _to_item(), which may be slower.
        reader = self._reader
        size = self._batch_size
        offset = self._line_offset
        width = len(self.header)
        phone_index = self._phone_index
        others = self._others
        max_chars = self._max_field_chars
        region = self._region
        parse = parse_phone  # a local name: this loop runs per row
        to_item = self._to_item
        last = reader.line_num  # line_num after a record is the line where it ended
        batch: list[ParsedContact | RowProblem] = []
        while True:
            # `for` over the reader is much faster than next() per row; a csv.Error ends the loop and
            # the reader resumes on the following line when we loop again.
            try:
                for row in reader:
                    line = offset + last + 1
                    last = reader.line_num
                    raw = row[phone_index].strip() if len(row) == width else ""
                    if not raw or max(map(len, row)) > max_chars:
                        batch.append(to_item(row, line))
                    elif (parsed := parse(raw, region)).__class__ is str:
                        self._valid += 1
                        fields = {name: row[i].strip() for i, name in others}
                        batch.append(ParsedContact(line, parsed, raw, fields))
                    else:
                        self._rejected += 1
                        batch.append(RowProblem(line, raw[:_VALUE_CHARS], parsed[1], parsed[0]))
                    if len(batch) >= size:
                        yield batch
                        batch = []
                break
            except csv.Error as exc:
                line = offset + last + 1
                last = reader.line_num
                batch.append(self._reject(_csv_problem(exc, line, last + offset)))
        if batch:
            yield batch

    def _to_item(self, row: list[str], line: int) -> ParsedContact | RowProblem:
        """Any row, whatever its width or content; the fast path in _iter_batches covers most rows."""
        width = len(self.header)
        if len(row) > width:
            if any(cell.strip() for cell in row[width:]):
                reason = f"too many fields ({len(row)}, header has {width})"
                return self._reject(RowProblem(line, self._row_value(row), reason, "too_many_fields"))
            del row[width:]
        row.extend([""] * (width - len(row)))
        if max(map(len, row)) > self._max_field_chars:
            return self._reject(self._too_long(row, line))
        raw = row[self._phone_index].strip()
        if not raw:
            if any(cell.strip() for cell in row):
                problem = RowProblem(line, self._row_value(row), f"empty {self.phone_column}", "empty_number")
            else:
                problem = RowProblem(line, self._row_value(row), "empty row", "empty_row")
            return self._reject(problem)
        parsed = parse_phone(raw, self._region)
        if not isinstance(parsed, str):
            code, reason = parsed
            return self._reject(RowProblem(line, raw[:_VALUE_CHARS], reason, code))
        self._valid += 1
        return ParsedContact(line, parsed, raw, {name: row[i].strip() for i, name in self._others})

    def _reject(self, problem: RowProblem) -> RowProblem:
        self._rejected += 1
        return problem

    def _row_value(self, row: list[str]) -> str:
        """The phone cell when it has one, else the row as text; for RowProblem.value."""
        value = row[self._phone_index].strip() if len(row) > self._phone_index else ""
        return (value or self.delimiter.join(row).strip())[:_VALUE_CHARS]

    def _too_long(self, row: list[str], line: int) -> RowProblem:
        index, cell = max(enumerate(row), key=lambda pair: len(pair[1]))
        reason = f"field {self.header[index]!r} is {len(cell)} characters (limit {self._max_field_chars})"
        return RowProblem(line, self._row_value(row), reason, "field_too_long")

    def _checked_lines(self) -> Iterator[str]:
        """The text lines (universal newlines, as csv's line_num counts them), refusing NUL bytes."""
        try:
            for number, line in enumerate(self._text, 1):
                if "\x00" in line:
                    raise InvalidCsv(
                        f"contacts file is binary, not text: NUL byte on line {number}",
                        error_id="csv_binary",
                        line=number,
                    )
                yield line
        except UnicodeDecodeError:
            raise self._decode_error() from None

    def _decode_error(self) -> InvalidCsv:
        """Find the first byte that is not UTF-8, and its line, by rescanning the file from the start.

        TextIOWrapper decodes ahead in chunks, so its error says neither the line nor the file offset.
        Splitting the bytes at LF is safe for UTF-8 (0x0A is never part of a multi-byte sequence).
        """
        self._stream.seek(self._start)
        line = 1
        for piece in self._stream:
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                line += _line_breaks(piece[: exc.start])
                return InvalidCsv(
                    f"contacts file is not UTF-8: invalid byte 0x{piece[exc.start]:02x} on line {line}; "
                    + _EXPORT_HINT,
                    error_id="csv_not_utf8",
                    line=line,
                )
            line += _line_breaks(piece)
        return InvalidCsv(f"contacts file is not UTF-8; {_EXPORT_HINT}", error_id="csv_not_utf8")


class _BorrowedTextIO(io.TextIOWrapper):
    """A text layer that leaves the caller's binary stream open when it is garbage-collected."""

    def close(self) -> None:
        # TextIOWrapper's finalizer calls close(), which would close the service's spooled file.
        pass


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


def _refuse_non_text(head: bytes) -> None:
    """Refuse, from its first bytes, a file that is empty or obviously not UTF-8 text."""
    if not head:
        raise InvalidCsv("contacts file is empty", error_id="csv_empty")
    if head.startswith(_UTF16_BOMS):
        raise InvalidCsv(
            f"contacts file is UTF-16 or UTF-32 text, not UTF-8; {_EXPORT_HINT}", error_id="csv_not_utf8", line=1
        )
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            raise InvalidCsv(f"contacts file is {kind}, not a CSV file", error_id="csv_binary", line=1)
    # Text never holds NUL; binary data of any size almost always does. Other control characters are
    # left alone: they do turn up in real exports (vertical tabs for in-cell line breaks).
    nul = head.find(b"\x00")
    if nul >= 0:
        line = 1 + _line_breaks(head[:nul])
        raise InvalidCsv(
            f"contacts file is binary, not text: NUL byte on line {line}", error_id="csv_binary", line=line
        )


def _line_breaks(data: bytes) -> int:
    """How many line ends (LF, CRLF or a lone CR, as universal newlines counts them) ``data`` holds."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


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


def _phone_column_index(names: list[str], cells: list[str]) -> int:
    normalized = [_HEADER_JUNK.sub("_", name.casefold()).strip("_") for name in names]
    for spelling in PHONE_COLUMN_NAMES:
        if spelling in normalized:
            return normalized.index(spelling)
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
        f"contacts file has no phone column: found {', '.join(map(repr, names))}; "
        f"name the column one of {', '.join(PHONE_COLUMN_NAMES)} (any case; spaces, dashes or dots "
        "for underscores)",
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
