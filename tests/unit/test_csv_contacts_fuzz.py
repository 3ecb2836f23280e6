"""Properties of ContactsCsv over generated input: it only ever refuses with InvalidCsv, and every data
record of a well-formed table comes out exactly once, on the line where it starts."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import phonenumbers
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from dialerd.domain.phone import _length_verdict as length_verdict
from dialerd.domain.phone_columns import rank as phone_column_rank
from dialerd.errors import InvalidCsv
from dialerd.services.csv_contacts import ContactsCsv, ParsedContact, RowProblem

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TABLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REGIONS = st.sampled_from([None, "US", "GB", "DE"])

# Numbers that are dialable whatever the default region, with the E.164 they must become.
KNOWN = {
    "+1 415 555 0142": "+14155550142",
    "+14155550199": "+14155550199",
    "(+44) 20 7946 0958": "+442079460958",
    "+49 30 123456": "+4930123456",
    "+33 1 23 45 67 89": "+33123456789",
}


def _breaks(text: str) -> int:
    """Physical line ends in ``text`` as universal newlines (and so csv's line_num) count them."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _check_items(parser: ContactsCsv, items: list[ParsedContact | RowProblem]) -> None:
    lines = [item.line for item in items]
    assert lines == sorted(set(lines))
    assert all(line >= 2 for line in lines)
    valid = sum(isinstance(item, ParsedContact) for item in items)
    stats = parser.stats
    assert (stats.rows_total, stats.rows_valid, stats.rows_rejected) == (len(items), valid, len(items) - valid)
    for item in items:
        if isinstance(item, ParsedContact):
            assert re.fullmatch(r"\+[1-9]\d{1,17}", item.phone_e164), item
            assert parser.phone_column not in item.fields
        else:
            assert len(item.value) <= 100


def _run(data: bytes, region: str | None) -> None:
    try:
        parser = ContactsCsv(io.BytesIO(data), default_region=region, batch_size=7)
        items = [item for batch in parser.batches() for item in batch]
    except InvalidCsv as error:
        assert error.error_id.startswith("csv_")
        return
    _check_items(parser, items)


@FUZZ
@given(data=st.binary(max_size=400), region=REGIONS)
def test_arbitrary_bytes_are_parsed_or_refused_with_invalid_csv(data: bytes, region: str | None) -> None:
    _run(data, region)


@FUZZ
@given(
    body=st.lists(st.sampled_from([b",", b";", b"\t", b'"', b"\n", b"\r", b" ", b"+1", b"415", b"5550142",
                                   b"00", b"x", b"\xc3\xa9", b"\xe9", b"\x00", b"\xef\xbb\xbf"]), max_size=60),
    region=REGIONS,
)  # fmt: skip
def test_csv_shaped_bytes_after_a_valid_header(body: list[bytes], region: str | None) -> None:
    _run(b"phone,name\n" + b"".join(body), region)


@FUZZ
@given(text=st.text(max_size=300), region=REGIONS)
def test_arbitrary_text_after_a_valid_header(text: str, region: str | None) -> None:
    _run(("phone;name;notes\r\n" + text).encode("utf-8", "surrogatepass"), region)


@FUZZ
@example("+390612345678")  # Italian numbers keep their leading zero in E.164
@example("+39000123")
@example("+2250712345678")
@example("+14155550142")
@given(digits=st.from_regex(r"\A\+[1-9][0-9]{1,18}\Z"))
def test_cached_length_verdict_matches_phonenumbers(digits: str) -> None:
    # The parser caches libphonenumber's "possible" verdict per (country code, length); that is only
    # sound if the verdict never depends on the digits themselves, including Italian leading zeros.
    try:
        number = phonenumbers.parse(digits, None)
    except phonenumbers.NumberParseException:
        assume(False)
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert length_verdict(number.country_code or 0, len(e164)) == phonenumbers.is_possible_number_with_reason(
        number
    )


# --- well-formed tables -------------------------------------------------------------------------------------


@dataclass
class Table:
    data: bytes
    header: list[str]
    phone_index: int
    rows: list[list[str]]
    start_lines: list[int]


def _quote(cell: str, delimiter: str, force: bool) -> str:
    if force or any(char in cell for char in (delimiter, '"', "\r", "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _not_a_phone_spelling(name: str) -> bool:
    return phone_column_rank(name) is None


CELL = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12)
PHONE_CELL = st.one_of(st.sampled_from(sorted(KNOWN)), CELL, st.just(""), st.just("  "))
NAME = st.text("abcdefghijklmnopqrstuvwxyz ABC_0123456789", min_size=1, max_size=10).filter(
    lambda name: bool(name.strip()) and _not_a_phone_spelling(name)
)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    others = draw(st.lists(NAME, min_size=1, max_size=4, unique_by=str.strip))
    phone_index = draw(st.integers(0, len(others)))
    header = [name.strip() for name in others]
    header.insert(phone_index, draw(st.sampled_from(["phone_number", "Phone", "MOBILE", "tel"])))
    width = len(header)
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        cells = draw(st.lists(CELL, min_size=width, max_size=width))
        cells[phone_index] = draw(PHONE_CELL)
        # Short rows, and rows with extra (possibly blank) fields, are part of the contract too.
        cells = cells[: draw(st.integers(1, width))] if draw(st.booleans()) else cells
        if draw(st.integers(0, 5)) == 0:
            cells += draw(st.lists(st.sampled_from(["", " ", "extra"]), min_size=1, max_size=2))
        rows.append(cells)

    records = [delimiter.join(header) + newline]
    for cells in rows:
        records.append(delimiter.join(_quote(c, delimiter, draw(st.booleans())) for c in cells) + newline)
    # Drop the final newline sometimes, unless that would erase a last record that is an empty line.
    if rows and records[-1] != newline and draw(st.booleans()):
        records[-1] = records[-1][: -len(newline)]
    start_lines, line = [], 1 + _breaks(records[0])
    for record in records[1:]:
        start_lines.append(line)
        line += _breaks(record)
    bom = "\ufeff" if draw(st.booleans()) else ""
    return Table((bom + "".join(records)).encode(), header, phone_index, rows, start_lines)


@TABLES
@given(table=tables(), region=REGIONS)
def test_every_row_of_a_table_comes_out_once_on_its_line(table: Table, region: str | None) -> None:
    parser = ContactsCsv(io.BytesIO(table.data), default_region=region, batch_size=5)
    assert parser.header == table.header
    assert parser.phone_column == table.header[table.phone_index]
    items = [item for batch in parser.batches() for item in batch]
    _check_items(parser, items)
    assert [item.line for item in items] == table.start_lines

    width = len(table.header)
    for cells, item in zip(table.rows, items, strict=True):
        extra = cells[width:]
        cells = (cells + [""] * width)[:width]
        phone = cells[table.phone_index].strip()
        if any(cell.strip() for cell in extra):
            assert isinstance(item, RowProblem) and item.code == "too_many_fields", item
        elif not any(cell.strip() for cell in cells):
            assert isinstance(item, RowProblem) and item.code == "empty_row", item
        elif not phone:
            assert isinstance(item, RowProblem) and item.code == "empty_number", item
        elif phone in KNOWN:
            assert isinstance(item, ParsedContact), item
            assert item.phone_e164 == KNOWN[phone]
        if isinstance(item, ParsedContact):
            assert item.raw == phone
            expected = {name: cell.strip() for name, cell in zip(table.header, cells, strict=True)}
            del expected[parser.phone_column]
            assert item.fields == expected
        else:
            assert item.value == (phone or item.value)[:100]
