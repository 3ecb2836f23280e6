"""Contact exports as real tools write them (tests/data/exports/), uploaded over real HTTP on both databases.

Each file must import the right numbers from the right columns, with the encoding named in the report;
then the create form's ``phone_column`` and ``encoding`` fields, and the refusal when the encoding cannot
be told with confidence.

The fixtures are the bytes the tools write: Google Contacts (current layout: ``First Name``, ``Labels``,
``Phone N - Label``/``Phone N - Value``; legacy layout: ``Given Name``/``Family Name``, ``Group
Membership``, ``Phone N - Type``/``Phone N - Value``; ``:::`` between several values of one cell), Outlook
(its 92 quoted columns, Windows-1252), HubSpot, Salesforce (API field names), French and German Excel
(``;``, Windows-1252) and Excel's "Unicode Text" (UTF-16 LE with a BOM, tab-separated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from tests.integration.test_csv_upload import NOTHING, contacts_of, post_csv, refused, table_counts, upload

EXPORTS = Path(__file__).parent.parent / "data" / "exports"

# file -> (region, encoding, encoding_source, delimiter, phone_columns report, contacts, problems)
# contacts: (line, E.164, raw_number); problems: (line, code, a word of the reason)
CORPUS: dict[str, tuple[str, str, str, str, dict[str, int], list[tuple[int, str, str]], list[tuple[int, str, str]]]] = {
    "google_current.csv": (
        "US", "utf-8", "utf-8", ",", {"Phone 1 - Value": 2, "Phone 2 - Value": 1},
        [(2, "+14155550101", "+1 415-555-0101 ::: +1 415-555-0102"), (4, "+14155550104", "(415) 555-0104"),
         (5, "+14155550105", "tel:+1-415-555-0105")],
        [(6, "empty_number", "Phone 1 - Value")],
    ),
    "google_legacy.csv": (
        "GB", "utf-8", "utf-8", ",", {"Phone 1 - Value": 2, "Phone 2 - Value": 0},
        [(2, "+447700900123", "+44 7700 900123"), (3, "+12125550110", "+1 212-555-0110 ::: +1 917-555-0111")],
        [(4, "not_a_number", "letters")],
    ),
    "outlook.csv": (
        "US", "cp1252", "detected", ",",
        {"Mobile Phone": 1, "Primary Phone": 0, "Company Main Phone": 0, "Business Phone": 1, "Business Phone 2": 0,
         "Home Phone": 1, "Home Phone 2": 0, "Other Phone": 0, "Car Phone": 0, "Assistant's Phone": 0, "Callback": 0,
         "Radio Phone": 0},
        [(2, "+14155550120", "+1 (415) 555-0120"), (3, "+14155550122", "415.555.0122"),
         (4, "+14155550123", "415-555-0123")],
        [(5, "empty_number", "Mobile Phone")],  # a fax number is not a phone to dial
    ),
    "hubspot.csv": (
        "US", "utf-8", "utf-8", ",", {"Phone Number": 1, "Mobile Phone Number": 1},
        [(2, "+16465550130", "+1 (646) 555-0130"), (3, "+19175550132", "+1 917 555 0132")],
        [],
    ),
    "salesforce.csv": (
        "US", "utf-8", "utf-8", ",", {"Phone": 1, "MobilePhone": 1, "HomePhone": 0, "OtherPhone": 1},
        [(2, "+13125550140", "(312) 555-0140"), (3, "+13125550142", "(312) 555-0142"),
         (5, "+13125550144", "(312) 555-0144")],
        [(4, "not_a_number", "spreadsheet number with decimals")],
    ),
    "excel_fr_cp1252.csv": (
        "FR", "cp1252", "detected", ";", {"Téléphone": 1, "Portable": 1},
        [(2, "+33123456789", "01 23 45 67 89"), (3, "+33612345678", "06 12 34 56 78")],
        [(4, "not_a_number", "scientific notation")],
    ),
    "excel_unicode_text.txt": (
        "US", "utf-16-le", "bom", "\t", {"Phone": 3},
        [(2, "+4741234567", "+47 412 34 567"), (3, "+81312345678", "+81 3-1234-5678"),
         (4, "+302101234567", "+30 21 0123 4567")],
        [],
    ),
    "excel_de_cp1252.csv": (
        "DE", "cp1252", "detected", ";", {"Telefon": 1, "Handy": 2},
        [(2, "+49301234567", "030 1234567"), (3, "+491701234567", "0170 1234567"),
         (4, "+491609876543", "0160 9876543")],  # Telefon "k.A." (no answer): the Handy number is taken
        [],
    ),
}  # fmt: skip
# A custom field per file whose accents (or script) prove the decoding: (line, field, value).
DECODED = {
    "google_current.csv": (2, "First Name", "Zoë"),
    "outlook.csv": (2, "Notes", "Prefers “mornings” – ok"),
    "excel_fr_cp1252.csv": (2, "Remarque", "payé 10 €"),
    "excel_unicode_text.txt": (3, "City", "東京"),
    "excel_de_cp1252.csv": (3, "Straße", "Große Gasse 2"),
    "salesforce.csv": (3, "MobilePhone", "(312) 555-0142"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_real_tool_exports_import_the_right_numbers(offline_api: Api, name: str) -> None:
    region, encoding, source, delimiter, columns, expected, rejected = CORPUS[name]
    body = await upload(offline_api, (EXPORTS / name).read_bytes(), default_region=region)
    report = body["import"]
    assert (report["encoding"], report["encoding_source"], report["delimiter"]) == (encoding, source, delimiter)
    assert report["phone_column"] == next(iter(columns))
    assert report["phone_columns"] == columns and list(report["phone_columns"]) == list(columns)
    assert report["phone_column"] not in report["custom_fields"]
    stored = await contacts_of(offline_api, body["id"])
    assert [(c["line"], c["phone_number"], c["raw_number"]) for c in stored] == expected
    assert [(p["line"], p["code"]) for p in report["problems"]] == [(line, code) for line, code, _ in rejected]
    for problem, (_line, _code, word) in zip(report["problems"], rejected, strict=True):
        assert word in problem["reason"], problem
    multi = sum(":::" in raw for _line, _number, raw in expected)
    assert report["multi_number_cells"] == multi
    if name in DECODED:
        line, field, value = DECODED[name]
        assert next(c for c in stored if c["line"] == line)["custom_fields"][field] == value


async def test_phone_column_field_takes_only_that_column(offline_api: Api) -> None:
    data = (EXPORTS / "excel_de_cp1252.csv").read_bytes()
    body = await upload(offline_api, data, default_region="DE", phone_column="handy")  # matched like headers
    report = body["import"]
    assert (report["phone_column"], report["phone_columns"]) == ("Handy", {"Handy": 3})
    assert "Telefon" in report["custom_fields"] and "Handy" not in report["custom_fields"]
    stored = await contacts_of(offline_api, body["id"])
    assert [(c["line"], c["phone_number"]) for c in stored] == [
        (2, "+4915123456789"), (3, "+491701234567"), (4, "+491609876543"),
    ]
    assert stored[0]["custom_fields"]["Telefon"] == "030 1234567"


async def test_unknown_phone_column_is_a_400_naming_the_headers(offline_api: Api) -> None:
    body = await refused(offline_api, (EXPORTS / "hubspot.csv").read_bytes(), "csv_unknown_phone_column",
                         "'Cell'", "'Phone Number'", "'Mobile Phone Number'", phone_column="Cell")
    assert body["details"]["field"] == "phone_column"
    assert "Mobile Phone Number" in body["details"]["headers"]


async def test_encoding_field_is_used_and_named_in_the_report(offline_api: Api) -> None:
    # Greek Windows-1253 reads as Latin letters in cp1252; only the declared encoding gets it right.
    data = "Όνομα;Τηλέφωνο\r\nΓιώργος;+30 21 0123 4567\r\n".encode("cp1253")
    body = await upload(offline_api, data, encoding="Windows-1253")
    report = body["import"]
    assert (report["encoding"], report["encoding_source"], report["phone_column"]) == ("cp1253", "declared", "Τηλέφωνο")
    (contact,) = await contacts_of(offline_api, body["id"])
    assert contact["custom_fields"] == {"Όνομα": "Γιώργος"}


async def test_bad_or_conflicting_encoding_field_is_refused(offline_api: Api) -> None:
    status, body = await post_csv(offline_api, "phone\n+14155550142\n", encoding="klingon-8")
    assert (status, body["error_id"], body["details"]) == (400, "invalid_field", {"field": "encoding"})
    status, body = await post_csv(offline_api, "phone\n+14155550142\n", encoding="base64")  # bytes-to-bytes
    assert (status, body["error_id"]) == (400, "invalid_field")
    data = (EXPORTS / "excel_unicode_text.txt").read_bytes()
    body = await refused(offline_api, data, "csv_encoding_conflict", "encoding=utf-16-le", encoding="cp1252")
    assert body["details"]["bom"] == "utf-16-le"
    assert await table_counts(offline_api.daemon.store) == NOTHING


async def test_unconfident_detection_is_a_400_saying_which_encoding_to_send(offline_api: Api) -> None:
    # High bytes that read as Latin, Cyrillic and Greek letters equally well: no honest guess exists.
    data = b"phone,name\r\n+14155550142,ok\r\n+14155550143,\x85\xa7\xd4\xf0\xbb\r\n"
    body = await refused(offline_api, data, "csv_encoding_unknown", "encoding", "cp1252", "cp1251", "CSV UTF-8")
    assert body["details"]["field"] == "encoding"
    assert body["details"]["candidates"][:2] == ["cp1252", "cp1251"]
    # Saying it settles it.
    created = await upload(offline_api, data, encoding="cp1251")
    assert created["import"]["encoding"] == "cp1251"


async def test_report_fields_on_a_plain_utf8_file_and_in_the_stored_report(offline_api: Api) -> None:
    csv = "name,mobile,phone\nAnn,+14155550101,\nBob,,+14155550102\nCy,+14155550103,+14155550104\n"
    body = await upload(offline_api, csv)
    report: dict[str, Any] = body["import"]
    assert report["phone_column"] == "phone" and report["phone_columns"] == {"phone": 2, "mobile": 1}
    assert (report["encoding"], report["encoding_source"], report["multi_number_cells"]) == ("utf-8", "utf-8", 0)
    assert report["custom_fields"] == ["name", "mobile"]
    stored = await contacts_of(offline_api, body["id"])
    assert [(c["line"], c["phone_number"]) for c in stored] == [
        (2, "+14155550101"), (3, "+14155550102"), (4, "+14155550104"),
    ]
