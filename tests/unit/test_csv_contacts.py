"""ContactsCsv: header checks, row verdicts, line numbers and streaming, over a corpus of small files."""

from __future__ import annotations

import gc
import io
import random
import tracemalloc
from typing import Any

import pytest

from dialerd.errors import InvalidCsv, InvalidInput
from dialerd.services.csv_contacts import (
    PHONE_COLUMN_NAMES,
    ROW_CODES,
    ContactsCsv,
    CsvStats,
    ParsedContact,
    RowProblem,
)

Item = ParsedContact | RowProblem


def parse(data: bytes, region: str | None = "US", **options: Any) -> tuple[ContactsCsv, list[Item]]:
    parser = ContactsCsv(io.BytesIO(data), default_region=region, **options)
    items = [item for batch in parser.batches() for item in batch]
    return parser, items


def items_of(data: bytes, region: str | None = "US", **options: Any) -> list[Item]:
    return parse(data, region, **options)[1]


def refusal(data: bytes, region: str | None = "US", **options: Any) -> InvalidCsv:
    with pytest.raises(InvalidCsv) as caught:
        parse(data, region, **options)
    return caught.value


def contact(item: Item) -> ParsedContact:
    assert isinstance(item, ParsedContact), item
    return item


def problem(item: Item) -> RowProblem:
    assert isinstance(item, RowProblem), item
    assert item.code in ROW_CODES
    return item


def summary(items: list[Item]) -> list[tuple[int, str]]:
    """(line, E.164 or problem code) per item: compact enough to compare whole files at once."""
    return [(i.line, i.phone_e164 if isinstance(i, ParsedContact) else i.code) for i in items]


class _CountingStream(io.BytesIO):
    """A BytesIO that remembers how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def read1(self, size: int | None = -1) -> bytes:
        chunk = super().read1(size)
        self.bytes_read += len(chunk)
        return chunk


# --- encodings, delimiters, line endings ---------------------------------------------------------------


def test_utf8_bom_is_stripped_from_the_first_header_name() -> None:
    parser, items = parse(b"\xef\xbb\xbfphone_number,name\r\n+14155550142,Zo\xc3\xab\r\n")
    assert parser.header == ["phone_number", "name"]
    assert parser.phone_column == "phone_number"
    assert contact(items[0]).fields == {"name": "Zoë"}


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        (b"phone;name;city\n+14155550142;Ann;Paris\n", ";"),
        (b"phone\tname\tcity\n+14155550142\tAnn\tParis\n", "\t"),
        (b"phone,name,city\n+14155550142,Ann,Paris\n", ","),
        # Delimiters inside quotes do not count: two commas outside beat three semicolons inside.
        (b'phone,"a;b;c;d",city\n+14155550142,Ann,Paris\n', ","),
        # Excel's "sep=" line names the delimiter and is not the header.
        (b"sep=;\nphone;name;city\n+14155550142;Ann;Paris\n", ";"),
    ],
)
def test_delimiter_is_detected_from_the_header(data: bytes, delimiter: str) -> None:
    parser, items = parse(data)
    assert parser.delimiter == delimiter
    assert contact(items[0]).phone_e164 == "+14155550142"
    assert list(contact(items[0]).fields.values()) == ["Ann", "Paris"]


def test_single_column_file_defaults_to_comma() -> None:
    parser, items = parse(b"phone\n+14155550142\n")
    assert parser.delimiter == ","
    assert contact(items[0]).fields == {}


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_line_endings_and_missing_final_newline(newline: bytes, final_newline: bool) -> None:
    lines = [b"phone,name", b"+14155550142,Ann", b'+14155550143,"two' + newline + b'lines"', b"+14155550144,Cy"]
    data = newline.join(lines) + (newline if final_newline else b"")
    items = items_of(data)
    assert summary(items) == [(2, "+14155550142"), (3, "+14155550143"), (5, "+14155550144")]
    assert contact(items[1]).fields == {"name": "two" + newline.decode() + "lines"}
    assert contact(items[2]).fields == {"name": "Cy"}


# --- quoting and line numbers ------------------------------------------------------------------------------


def test_quoted_delimiters_quotes_and_newlines_are_kept_in_fields() -> None:
    data = (
        b"phone_number,name,notes\n"
        b'"+1 415 555 0142","Smith, John","said ""hi""\n'
        b"then left\n"
        b'and called back"\n'
        b"+1 415 555 0143,  Ann  ,\n"
    )
    first, second = items_of(data)
    assert contact(first).line == 2
    assert contact(first).fields == {"name": "Smith, John", "notes": 'said "hi"\nthen left\nand called back'}
    assert contact(second).line == 5
    assert contact(second).fields == {"name": "Ann", "notes": ""}


def test_line_numbers_after_multi_line_records_and_blank_lines() -> None:
    data = (
        b'phone,"multi\nline header"\n'  # header spans lines 1-2
        b"+14155550142,a\n"  # 3
        b'+14155550143,"x\n\n\ny"\n'  # 4-7: blank lines inside quotes are field content
        b"\n"  # 8: a real blank line
        b"+14155550144,b\n"  # 9
        b'"+1415555\n0145",c\n'  # 10-11: a newline inside the phone cell is not a number
        b"+14155550146,d"  # 12, no final newline
    )
    parser, items = parse(data)
    assert parser.header == ["phone", "multi\nline header"]
    assert summary(items) == [
        (3, "+14155550142"),
        (4, "+14155550143"),
        (8, "empty_row"),
        (9, "+14155550144"),
        (10, "not_a_number"),
        (12, "+14155550146"),
    ]


def test_leading_blank_lines_and_sep_line_count_in_line_numbers() -> None:
    parser, items = parse(b"\n  \nsep=,\n\nphone\n+14155550142\n")
    assert parser.header == ["phone"]
    assert summary(items) == [(6, "+14155550142")]


def test_text_after_a_closing_quote_rejects_only_that_row() -> None:
    items = items_of(b'phone,name\n+14155550142,"Ann" Lee\n+14155550143,Bo\n')
    bad = problem(items[0])
    assert (bad.line, bad.code) == (2, "malformed_row")
    assert "closing quote" in bad.reason
    assert summary(items[1:]) == [(3, "+14155550143")]


def test_unclosed_quote_refuses_the_file_naming_where_it_starts() -> None:
    error = refusal(b'phone,name\n+14155550142,Ann\n+14155550143,"Bo\n+14155550144,Cy\n')
    assert error.error_id == "csv_malformed"
    assert error.details["line"] == 3
    assert "line 3" in error.message


def test_unclosed_quote_in_a_long_file_hits_the_csv_field_limit_and_refuses() -> None:
    rows = b"".join(b"+1415555%04d,n\n" % i for i in range(12_000))
    error = refusal(b'phone,name\n+14155550142,"oops\n' + rows)
    assert error.error_id == "csv_malformed"
    assert error.details["line"] == 2


# --- numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 415 555 0142", "US", "+14155550142"),
        ("+1 415 555 0142", None, "+14155550142"),
        ("(415) 555-0142", "US", "+14155550142"),
        ("415.555.0142", "US", "+14155550142"),
        ("1-415-555-0142", "US", "+14155550142"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07700 900123", "GB", "+447700900123"),
        ("+44 (0)20 7946 0958", "US", "+442079460958"),
        ("030 123456", "DE", "+4930123456"),
        ("(030) 1234-5678", "DE", "+493012345678"),
        ("0049 30 123456", "DE", "+4930123456"),  # 00 is Germany's own international prefix
        ("0044 20 7946 0958", "US", "+442079460958"),  # the US prefix is 011: 00 read as +
        ("0044 20 7946 0958", None, "+442079460958"),
        ("+４４ ２０ ７９４６ ０９５８", None, "+442079460958"),  # full-width digits
    ],
)
def test_accepted_number_formats(raw: str, region: str | None, e164: str) -> None:
    (item,) = items_of(f"phone,name\n{raw},x\n".encode(), region)
    assert contact(item).phone_e164 == e164
    assert contact(item).raw == raw


def test_fictional_555_01xx_numbers_are_possible_and_accepted() -> None:
    # Not "valid" per libphonenumber metadata, but the test PBX dials exactly these.
    items = items_of(b"phone\n" + b"".join(b"+1 415 555 01%02d\n" % n for n in range(100)))
    assert [contact(i).phone_e164 for i in items] == [f"+1415555{n:04d}" for n in range(100, 200)]


@pytest.mark.parametrize(
    ("raw", "region", "code", "reason"),
    [
        ("1-800-FLOWERS", "US", "not_a_number", "letters"),
        ("call me", "US", "not_a_number", "letters"),
        ("N/A", "US", "not_a_number", "letters"),
        ("4.15555E+11", "US", "not_a_number", "scientific notation"),
        ("---", "US", "not_a_number", "not a phone number"),
        ("+14155550142 ext. 123", "US", "extension", "123"),
        ("(415) 555-0142 x7", "US", "extension", "7"),
        ("555-0142", "US", "invalid_number", "area code"),
        ("12", "US", "invalid_number", "too short"),
        ("+1 415 555 01429999", None, "invalid_number", "too long"),
        ("+999 1234567", None, "invalid_number", "country calling code"),
        ("+1 415", None, "invalid_number", "too short"),
        ("+49 1", None, "invalid_number", "too short"),
        ("(415) 555-0142", None, "missing_region", "national number needs default_region"),
        ("020 7946 0958", None, "missing_region", "national number needs default_region"),
        ("9" * 300, "US", "invalid_number", "too long"),
    ],
)
def test_rejected_numbers(raw: str, region: str | None, code: str, reason: str) -> None:
    (item,) = items_of(f"phone,name\n{raw},x\n".encode(), region)
    bad = problem(item)
    assert (bad.line, bad.code, bad.value) == (2, code, raw[:100])
    assert reason in bad.reason


def test_duplicates_are_all_returned_dedupe_is_the_stores_job() -> None:
    items = items_of(b"phone,n\n+14155550142,1\n(415) 555-0142,2\n+14155550142,3\n")
    assert summary(items) == [(2, "+14155550142"), (3, "+14155550142"), (4, "+14155550142")]
    assert [contact(i).fields["n"] for i in items] == ["1", "2", "3"]


def test_default_region_is_case_insensitive_and_checked() -> None:
    assert contact(items_of(b"phone\n020 7946 0958\n", "gb")[0]).phone_e164 == "+442079460958"
    with pytest.raises(InvalidInput) as caught:
        ContactsCsv(io.BytesIO(b"phone\n1\n"), default_region="XX")
    assert caught.value.error_id == "invalid_default_region"


# --- empty rows and widths ----------------------------------------------------------------------------------


def test_blank_and_delimiter_only_rows_are_reported_not_dropped() -> None:
    data = b"phone,name,city\n\n+14155550142,Ann,Rome\n,,\n  ,\t, \n\r\n;;\n,Bob,\n\n"
    items = items_of(data)
    assert summary(items) == [
        (2, "empty_row"),
        (3, "+14155550142"),
        (4, "empty_row"),
        (5, "empty_row"),
        (6, "empty_row"),
        (7, "not_a_number"),  # ";;" is a value in a comma file
        (8, "empty_number"),
        (9, "empty_row"),
    ]
    assert (problem(items[6]).reason, problem(items[6]).value) == ("empty phone", ",Bob,")


def test_single_final_newline_is_not_a_row_but_each_extra_one_is() -> None:
    assert summary(items_of(b"phone\n+14155550142\n")) == [(2, "+14155550142")]
    assert summary(items_of(b"phone\n+14155550142\n\n\n")) == [
        (2, "+14155550142"),
        (3, "empty_row"),
        (4, "empty_row"),
    ]


def test_short_rows_are_padded_and_blank_extra_fields_dropped() -> None:
    items = items_of(b"name,phone,city\nAnn,+14155550142\nBo,+14155550143,Oslo,,\n")
    assert contact(items[0]).fields == {"name": "Ann", "city": ""}
    assert contact(items[1]).fields == {"name": "Bo", "city": "Oslo"}


def test_rows_with_more_fields_than_the_header_are_rejected() -> None:
    items = items_of(b"phone,name\n+14155550142,Ann,extra,more\n,a,b,c\n")
    bad = problem(items[0])
    assert (bad.code, bad.reason, bad.value) == (
        "too_many_fields",
        "too many fields (4, header has 2)",
        "+14155550142",
    )
    assert (problem(items[1]).code, problem(items[1]).value) == ("too_many_fields", ",a,b,c")


def test_over_long_fields_are_rejected_per_row() -> None:
    data = b"phone,notes\n+14155550142," + b"n" * 51 + b"\n+14155550143,short\n" + b"+1" * 30 + b",x\n"
    items = items_of(data, max_field_chars=50)
    assert (problem(items[0]).code, problem(items[0]).reason) == (
        "field_too_long",
        "field 'notes' is 51 characters (limit 50)",
    )
    assert contact(items[1]).fields == {"notes": "short"}
    assert (problem(items[2]).code, problem(items[2]).value) == ("field_too_long", "+1" * 30)


def test_problem_values_are_truncated_to_100_characters() -> None:
    (item,) = items_of(b"phone\n" + b"x" * 500 + b"\n")
    assert (problem(item).code, problem(item).value) == ("not_a_number", "x" * 100)


# --- header -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["phone_number", "Phone Number", "PHONE", "Phone-Number", "phone.number", " phone_no ", "Phone #",
     "Telephone", "tel", "MSISDN", "E.164", "e164", "Mobile", "Cell Phone", "number"],
)  # fmt: skip
def test_phone_column_spellings(name: str) -> None:
    parser, items = parse(f"id,{name}\n7,+14155550142\n".encode())
    assert parser.phone_column == name.strip()
    assert contact(items[0]).fields == {"id": "7"}


def test_preferred_spelling_wins_and_other_phone_columns_stay_fields() -> None:
    parser, items = parse(b"Mobile,Phone,Number\n+447700900123,+14155550142,3\n")
    assert parser.phone_column == "Phone"
    assert contact(items[0]).fields == {"Mobile": "+447700900123", "Number": "3"}


def test_header_names_are_trimmed_empty_ones_numbered_duplicates_suffixed() -> None:
    parser, items = parse(b" phone , name ,,name, name_2 ,\n+14155550142,a,b,c,d,e\n")
    assert parser.header == ["phone", "name", "column_3", "name_2", "name_2_2", "column_6"]
    assert contact(items[0]).fields == {
        "name": "a",
        "column_3": "b",
        "name_2": "c",
        "name_2_2": "d",
        "column_6": "e",
    }


def test_missing_phone_column_names_accepted_spellings_and_found_headers() -> None:
    error = refusal(b"name,email\nAnn,a@example.com\n")
    assert error.error_id == "csv_no_phone_column"
    assert "'name', 'email'" in error.message
    assert "phone_number" in error.message
    assert error.details["headers"] == ["name", "email"]
    assert error.details["accepted"] == list(PHONE_COLUMN_NAMES)


@pytest.mark.parametrize("first_line", [b"+14155550142,Ann", b"Ann,(415) 555-0142", b"4155550142"])
def test_file_without_header_is_refused_as_such(first_line: bytes) -> None:
    error = refusal(first_line + b"\n+14155550143,Bo\n")
    assert error.error_id == "csv_no_header"
    assert "looks like a phone number" in error.message


def test_header_of_only_delimiters_is_no_header() -> None:
    assert refusal(b",,\n+14155550142,a,b\n").error_id == "csv_no_header"


def test_too_many_columns_refused() -> None:
    header = ",".join(["phone"] + [f"c{i}" for i in range(10)]).encode()
    error = refusal(header + b"\n+14155550142\n", max_columns=10)
    assert error.error_id == "csv_too_many_columns"
    assert error.details == {"columns": 11, "limit": 10}


# --- whole-file refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n \r\n", b"\xef\xbb\xbf", b"sep=;\n"])
def test_empty_files(data: bytes) -> None:
    assert refusal(data).error_id == "csv_empty"


@pytest.mark.parametrize("data", [b"phone_number,name", b"phone_number,name\r\n"])
def test_header_only_file_yields_no_batches(data: bytes) -> None:
    parser = ContactsCsv(io.BytesIO(data), default_region="US")
    assert list(parser.batches()) == []
    assert parser.stats == CsvStats(0, 0, 0)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "PNG"),
        (b"PK\x03\x04\x14\x00\x06\x00[Content_Types].xml", ".xlsx"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", ".xls"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b"\x1f\x8b\x08\x00", "gzip"),
    ],
)
def test_known_binary_formats_are_named(data: bytes, kind: str) -> None:
    error = refusal(data)
    assert error.error_id == "csv_binary"
    assert kind in error.message


def test_control_characters_other_than_nul_are_field_content() -> None:
    # FileMaker and old Excel exports use a vertical tab for a line break inside a cell.
    (item,) = items_of(b"phone,notes\n+14155550142,first\x0bsecond\x1fthird\n")
    assert contact(item).fields == {"notes": "first\x0bsecond\x1fthird"}


def test_random_bytes_with_nuls_are_binary() -> None:
    noise = bytes(random.Random(1).randrange(256) for _ in range(4096))
    assert refusal(b"phone\n" + noise + b"\x00").error_id == "csv_binary"


def test_nul_byte_after_the_first_chunk_is_refused_mid_stream_with_its_line() -> None:
    rows = b"".join(b"+1415555%04d\n" % (i % 10_000) for i in range(2000))  # lines 2-2001, ~26 KB
    parser = ContactsCsv(io.BytesIO(b"phone\n" + rows + b"+1415\x005550142\n"), default_region="US")
    batches = parser.batches()
    assert len(next(batches)) == 1000
    with pytest.raises(InvalidCsv) as caught:
        list(batches)
    assert caught.value.error_id == "csv_binary"
    assert caught.value.details["line"] == 2002


@pytest.mark.parametrize(("bom", "codec"), [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
def test_utf16_with_a_bom_is_decoded(bom: bytes, codec: str) -> None:
    parser, items = parse(bom + "phone\tname\r\n+14155550142\tZoë\r\n".encode(codec))
    assert (parser.encoding, parser.encoding_source, parser.delimiter) == (codec, "bom", "\t")
    assert parser.header == ["phone", "name"]
    assert contact(items[0]).fields == {"name": "Zoë"}


def test_latin1_in_the_header_is_detected_as_cp1252() -> None:
    parser, items = parse(b"phone,pr\xe9nom\n+14155550142,Zo\xeb\n")
    assert parser.header == ["phone", "prénom"]
    assert (parser.encoding, parser.encoding_source) == ("cp1252", "detected")
    assert contact(items[0]).fields == {"prénom": "Zoë"}


def test_cp1252_mid_file_switches_encoding_mid_stream_keeping_every_row() -> None:
    rows = [b"+1415555%04d,Ann\r\n" % (i % 10_000) for i in range(4996)]
    rows.insert(100, b'+14155550100,"two\rlines"\r\n')  # a record on two lines (a lone CR inside): 2-4999
    data = b"phone,name\r\n" + b"".join(rows) + b"+14155550142,Ren\xe9e \x80\r\n+14155550143,ok\r\n"
    parser = ContactsCsv(io.BytesIO(data), default_region="US")
    batches = parser.batches()
    first = next(batches)
    assert parser.encoding == "utf-8"  # nothing but ASCII read so far
    assert contact(first[100]).fields == {"name": "two\rlines"}
    rest = [item for batch in batches for item in batch]
    assert (parser.encoding, parser.encoding_source) == ("cp1252", "detected")
    assert summary(rest[-2:]) == [(5000, "+14155550142"), (5001, "+14155550143")]
    assert contact(rest[-2]).fields == {"name": "Renée €"}
    assert len(first) + len(rest) == 4999


def test_invalid_utf8_after_utf8_text_is_refused_as_mixed_with_its_line() -> None:
    data = b"phone,name\n+14155550142,Zo\xc3\xab\n" + b"+14155550143,ok\n" * 3000 + b"+14155550144,Ren\xe9e\n"
    parser = ContactsCsv(io.BytesIO(data), default_region="US")
    with pytest.raises(InvalidCsv) as caught:
        list(parser.batches())
    assert caught.value.error_id == "csv_not_utf8"
    assert caught.value.details["line"] == 3003
    assert "mixes encodings" in caught.value.message


def test_truncated_utf8_sequence_at_end_of_a_utf8_file() -> None:
    error = refusal(b"phone,name\n+14155550142,Zo\xc3\xab\n+14155550143,\xc3")
    assert error.error_id == "csv_not_utf8"
    assert error.details["line"] == 3


def test_declared_utf8_refuses_other_bytes_naming_the_line() -> None:
    error = refusal(b"phone,name\n+14155550142,ok\n+14155550143,Ren\xe9e\n", encoding="utf-8")
    assert (error.error_id, error.details["line"]) == ("csv_not_utf8", 3)
    assert "0xe9" in error.message


# --- batching, stats, streaming -----------------------------------------------------------------------------


def test_batches_have_at_most_batch_size_items_and_stats_count_so_far() -> None:
    data = b"phone\n" + b"+14155550142\n" * 5 + b"nope\n\n"
    parser = ContactsCsv(io.BytesIO(data), default_region="US", batch_size=3)
    batches = parser.batches()
    assert len(next(batches)) == 3
    assert parser.stats == CsvStats(rows_total=3, rows_valid=3, rows_rejected=0)
    assert [len(b) for b in batches] == [3, 1]
    assert parser.stats == CsvStats(rows_total=7, rows_valid=5, rows_rejected=2)


def test_batches_can_be_iterated_only_once() -> None:
    parser = ContactsCsv(io.BytesIO(b"phone\n+14155550142\n"), default_region="US")
    assert len(list(parser.batches())) == 1
    with pytest.raises(RuntimeError):
        parser.batches()


def test_parsing_starts_at_the_streams_position_and_leaves_it_open() -> None:
    stream = io.BytesIO(b"ignored preamble\nphone\n+14155550142\n")
    stream.seek(len(b"ignored preamble\n"))
    parser = ContactsCsv(stream, default_region="US")
    assert summary([i for b in parser.batches() for i in b]) == [(2, "+14155550142")]
    del parser
    gc.collect()
    assert not stream.closed


def test_first_batch_arrives_before_the_file_is_read() -> None:
    rows = b"".join(b"+1415555%04d,some name,some city\n" % (i % 10_000) for i in range(100_000))
    stream = _CountingStream(b"phone,name,city\n" + rows)
    first = next(ContactsCsv(stream, default_region="US").batches())
    assert len(first) == 1000
    assert stream.bytes_read < len(rows) / 50


def test_memory_stays_flat_while_streaming() -> None:
    # Rows with an empty phone cell skip phonenumbers, so this stays fast; the notes make the file big.
    notes = b"n" * 400
    data = b"phone,notes\n" + b"".join(b",%s\n" % notes for _ in range(10_000))  # ~4 MB
    parser = ContactsCsv(io.BytesIO(data), default_region="US")
    tracemalloc.start()
    try:
        rows = sum(len(batch) for batch in parser.batches())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 10_000
    assert peak < len(data) / 4


# ---- the timezone column (issue 11) ---------------------------------------------------------------------


def test_a_timezone_column_gives_each_rows_zone_and_an_unknown_one_rejects_the_row() -> None:
    data = (b"phone_number,TimeZone,name\n+14155550100,europe/berlin,a\n+14155550101,,b\n"
            b"+14155550102,Mars/Base,c\nnot a number,Mars/Base,d\n")
    parser, items = parse(data)
    first, second = contact(items[0]), contact(items[1])
    assert (first.timezone, first.fields["TimeZone"]) == ("Europe/Berlin", "europe/berlin")  # still a custom field
    assert second.timezone is None  # empty: the number decides
    bad = problem(items[2])
    assert (bad.line, bad.code, bad.value) == (4, "unknown_timezone", "Mars/Base")
    assert bad.reason.startswith("timezone 'Mars/Base' is not an IANA time zone name")
    assert problem(items[3]).code != "unknown_timezone"  # the number is the row's first problem
    assert (parser.stats.rows_valid, parser.stats.rows_rejected) == (2, 2)


def test_without_a_timezone_column_no_row_has_a_zone() -> None:
    assert contact(items_of(b"phone_number,tz\n+14155550100,Mars/Base\n")[0]).timezone is None
