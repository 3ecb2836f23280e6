"""The CSV corpus over real HTTP, on both databases: what the create answer REPORTS and what got STORED.

Every refusal is a 400 with a stable error_id and a message naming the problem, and leaves nothing in any
table: the campaign is invisible while importing and removed whole when the file is refused.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from dialerd.store.repo import T_ATTEMPT, T_CAMPAIGN, T_CONTACT, T_EVENT, Store
from tests.conftest import Api

ROW_KEYS = {"line", "value", "reason", "code"}

# ---- helpers ---------------------------------------------------------------------------------------


async def post_csv(api: Api, csv: bytes | str, **fields: Any) -> tuple[int, Any]:
    """Api.create, streaming the file from a BytesIO (aiohttp warns about large raw bytes bodies)."""
    form = aiohttp.FormData()
    form.add_field("name", "csv upload test")
    for key, value in fields.items():
        form.add_field(key, str(value))
    data = csv.encode("utf-8") if isinstance(csv, str) else csv
    form.add_field("contacts", io.BytesIO(data), filename="contacts.csv", content_type="text/csv")
    return await api.call("POST", "/api/v1/campaigns", data=form)


async def upload(api: Api, csv: bytes | str, **fields: Any) -> dict[str, Any]:
    """Create a campaign from ``csv``; it must be accepted. Checks the report's own arithmetic."""
    status, body = await post_csv(api, csv, **fields)
    assert status == 201, body
    report = body["import"]
    assert report["rows_total"] == report["rows_valid"] + report["rows_rejected"]
    assert report["contacts"] == report["rows_valid"] - report["duplicates"]
    assert body["contacts"]["total"] == body["contacts"]["pending"] == report["contacts"]
    for problem in report["problems"]:
        assert set(problem) == ROW_KEYS, problem
    # The stored report (GET) agrees with the one answered, minus the problem list.
    status, again = await api.call("GET", f"/api/v1/campaigns/{body['id']}")
    assert status == 200
    assert again["import"] == {k: v for k, v in report.items() if k != "problems"}
    return body  # type: ignore[no-any-return]


async def contacts_of(api: Api, campaign_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        status, body = await api.call("GET", f"/api/v1/campaigns/{campaign_id}/contacts?limit=1000&offset={len(out)}")
        assert status == 200, body
        out.extend(body["contacts"])
        if body["next_offset"] is None:
            assert len(out) == body["total"]
            return out


def numbers(contacts: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(c["line"], c["phone_number"]) for c in contacts]


def problems(body: dict[str, Any]) -> list[tuple[int, str]]:
    return [(p["line"], p["code"]) for p in body["import"]["problems"]]


async def table_counts(store: Store) -> dict[str, int]:
    async with store.read() as conn:
        return {
            table.name: int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            for table in (T_CAMPAIGN, T_CONTACT, T_ATTEMPT, T_EVENT)
        }


async def wait_for(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


NOTHING = {"campaign": 0, "contact": 0, "attempt": 0, "event": 0}


async def refused(api: Api, csv: bytes | str, error_id: str, *words: str, **fields: Any) -> dict[str, Any]:
    """Upload ``csv``: expect a 400 with ``error_id`` whose message has ``words``, and nothing written."""
    status, body = await post_csv(api, csv, **fields)
    assert status == 400, body
    assert body["error_id"] == error_id, body
    for word in words:
        assert word in body["error"], (word, body["error"])
    assert await table_counts(api.daemon.store) == NOTHING
    assert await api.daemon.store.stale_imports() == []
    status, listing = await api.call("GET", "/api/v1/campaigns")
    assert status == 200 and listing["total"] == 0
    return body  # type: ignore[no-any-return]


# ---- encodings, delimiters, line endings, quoting ----------------------------------------------------


async def test_utf8_bom_is_not_part_of_the_header(offline_api: Api) -> None:
    body = await upload(offline_api, b"\xef\xbb\xbfphone_number,name\r\n+14155550100,Zo\xc3\xab\r\n")
    report = body["import"]
    assert report["phone_column"] == "phone_number" and report["custom_fields"] == ["name"]
    assert (report["rows_total"], report["rows_valid"], report["contacts"]) == (1, 1, 1)
    (contact,) = await contacts_of(offline_api, body["id"])
    assert contact["phone_number"] == "+14155550100" and contact["custom_fields"] == {"name": "Zoë"}


async def test_semicolon_delimited(offline_api: Api) -> None:
    csv = "Telefon;Name;Ort\n030 1234567;Müller, Hans;Berlin\n;;\n+4915123456789;Schmidt;Köln\n"
    body = await upload(offline_api, csv, default_region="DE")
    report = body["import"]
    assert report["delimiter"] == ";" and report["phone_column"] == "Telefon"
    assert report["custom_fields"] == ["Name", "Ort"]
    assert problems(body) == [(3, "empty_row")]
    contacts = await contacts_of(offline_api, body["id"])
    assert numbers(contacts) == [(2, "+49301234567"), (4, "+4915123456789")]
    assert contacts[0]["custom_fields"] == {"Name": "Müller, Hans", "Ort": "Berlin"}  # a comma is just data


async def test_excel_sep_line_and_blank_lines_before_the_header_count_as_lines(offline_api: Api) -> None:
    body = await upload(offline_api, b"sep=;\r\nphone;name\r\n+14155550100;A\r\n\r\n+14155550101;B\r\n")
    assert body["import"]["delimiter"] == ";" and problems(body) == [(4, "empty_row")]
    assert numbers(await contacts_of(offline_api, body["id"])) == [(3, "+14155550100"), (5, "+14155550101")]
    body = await upload(offline_api, b"\n\r\nphone_number\n+14155550100\n")
    assert numbers(await contacts_of(offline_api, body["id"])) == [(4, "+14155550100")]


async def test_tab_delimited(offline_api: Api) -> None:
    csv = "phone_number\tfirst name\tnote\n+14155550100\tAnn\ta, b; c\n+14155550101\tBob\t\n"
    body = await upload(offline_api, csv)
    assert body["import"]["delimiter"] == "\t"
    assert body["import"]["custom_fields"] == ["first name", "note"]
    contacts = await contacts_of(offline_api, body["id"])
    assert numbers(contacts) == [(2, "+14155550100"), (3, "+14155550101")]
    assert [c["custom_fields"] for c in contacts] == [
        {"first name": "Ann", "note": "a, b; c"}, {"first name": "Bob", "note": ""},
    ]


async def test_crlf_line_endings(offline_api: Api) -> None:
    csv = b"phone_number,name\r\n+14155550100,Ann\r\nnope,Bad\r\n+14155550101,Bob"  # no final line end
    body = await upload(offline_api, csv)
    assert problems(body) == [(3, "not_a_number")]
    assert body["import"]["problems"][0]["value"] == "nope"
    contacts = await contacts_of(offline_api, body["id"])
    assert numbers(contacts) == [(2, "+14155550100"), (4, "+14155550101")]
    assert [c["custom_fields"]["name"] for c in contacts] == ["Ann", "Bob"]  # no stray "\r"
    assert [c["raw_number"] for c in contacts] == ["+14155550100", "+14155550101"]


async def test_quoted_commas_quotes_and_newlines_keep_line_numbers(offline_api: Api) -> None:
    csv = (
        "phone_number,name,note\n"                            # 1
        '"+1 (415) 555-0100","Smith, John","said ""hi"""\n'  # 2
        '+14155550101,"Multi\nline\nname",x\n'                # 3-5: one record over three lines
        "+14155550102,Cy,\"a\n\nb\"\n"                        # 6-8: a blank line inside quotes is data
        "letters,Dee,q\n"                                     # 9
        "+14155550103,Eve,z\n"                                # 10
    )
    body = await upload(offline_api, csv)
    assert problems(body) == [(9, "not_a_number")]
    assert (body["import"]["rows_total"], body["import"]["rows_valid"]) == (5, 4)
    contacts = await contacts_of(offline_api, body["id"])
    assert numbers(contacts) == [(2, "+14155550100"), (3, "+14155550101"), (6, "+14155550102"), (10, "+14155550103")]
    assert contacts[0]["custom_fields"] == {"name": "Smith, John", "note": 'said "hi"'}
    assert contacts[0]["raw_number"] == "+1 (415) 555-0100"
    assert contacts[1]["custom_fields"]["name"] == "Multi\nline\nname"
    assert contacts[2]["custom_fields"]["note"] == "a\n\nb"


# ---- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "written", "expected"),
    [
        ("US", ["(415) 555-0100", "415.555.0101", "1-415-555-0102", "+44 20 7946 0018"],
         ["+14155550100", "+14155550101", "+14155550102", "+442079460018"]),
        ("GB", ["020 7946 0018", "07700 900123", "+1 415 555 0100"],
         ["+442079460018", "+447700900123", "+14155550100"]),
        ("DE", ["030 1234567", "0151 23456789", "(030) 12345678"],
         ["+49301234567", "+4915123456789", "+493012345678"]),
    ],
)
async def test_national_numbers_with_default_region(
    offline_api: Api, region: str, written: list[str], expected: list[str]
) -> None:
    csv = "phone_number\n" + "".join(f'"{n}"\n' for n in written)
    body = await upload(offline_api, csv, default_region=region)
    assert body["default_region"] == region and body["import"]["problems"] == []
    contacts = await contacts_of(offline_api, body["id"])
    assert [c["phone_number"] for c in contacts] == expected
    assert [c["raw_number"] for c in contacts] == written


async def test_national_numbers_without_a_region_are_rejected_row_by_row(offline_api: Api) -> None:
    body = await upload(offline_api, "phone_number\n(415) 555-0100\n+14155550101\n")
    assert body["default_region"] is None
    assert body["import"]["problems"] == [
        {"line": 2, "value": "(415) 555-0100", "reason": "national number needs default_region",
         "code": "missing_region"},
    ]
    assert numbers(await contacts_of(offline_api, body["id"])) == [(3, "+14155550101")]


async def test_international_plus_and_00_prefixes(offline_api: Api) -> None:
    written = ["+44 20 7946 0018", "0044 20 7946 0019", "+49 30 1234567", "0049 30 1234568", "00 1 415 555 0100",
               "+1-415-555-0101"]
    expected = ["+442079460018", "+442079460019", "+49301234567", "+49301234568", "+14155550100", "+14155550101"]
    csv = "phone\n" + "\n".join(written) + "\n"
    for region in ("US", "GB", "DE", None):
        body = await upload(offline_api, csv, **({"default_region": region} if region else {}))
        assert body["import"]["problems"] == [], region
        contacts = await contacts_of(offline_api, body["id"])
        assert [c["phone_number"] for c in contacts] == expected, region
        assert [c["raw_number"] for c in contacts] == written
    # 011 is the international prefix from the US.
    body = await upload(offline_api, "phone\n011 44 20 7946 0020\n", default_region="US")
    assert [c["phone_number"] for c in await contacts_of(offline_api, body["id"])] == ["+442079460020"]


async def test_letters_and_bad_numbers_are_rejected_with_codes(offline_api: Api) -> None:
    csv = (
        "phone_number,name\n"
        "1-800-FLOWERS,a\n"      # 2
        "call me,b\n"            # 3
        "4155550100 x12,c\n"     # 4
        "12,d\n"                 # 5
        ",e\n"                   # 6
        "+14155550100,ok\n"      # 7
        "1.4155E+10,f\n"         # 8
    )
    body = await upload(offline_api, csv, default_region="US")
    assert problems(body) == [(2, "not_a_number"), (3, "not_a_number"), (4, "extension"),
                              (5, "invalid_number"), (6, "empty_number"), (8, "not_a_number")]
    by_line = {p["line"]: p for p in body["import"]["problems"]}
    assert by_line[2]["value"] == "1-800-FLOWERS" and "letters" in by_line[2]["reason"]
    assert "extension" in by_line[4]["reason"]
    assert "short" in by_line[5]["reason"]
    assert "scientific" in by_line[8]["reason"]
    assert (body["import"]["rows_rejected"], body["import"]["rows_valid"]) == (6, 1)
    assert numbers(await contacts_of(offline_api, body["id"])) == [(7, "+14155550100")]


async def test_empty_lines_and_delimiter_only_rows_are_reported(offline_api: Api) -> None:
    csv = "phone_number,name\n+14155550100,Ann\n\n,\n+14155550101,Bob\n,,\n   \n+14155550102,Cy\n"
    body = await upload(offline_api, csv)
    assert problems(body) == [(3, "empty_row"), (4, "empty_row"), (6, "empty_row"), (7, "empty_row")]
    assert all("empty" in p["reason"] for p in body["import"]["problems"])
    assert (body["import"]["rows_total"], body["import"]["rows_rejected"]) == (7, 4)
    assert numbers(await contacts_of(offline_api, body["id"])) == [
        (2, "+14155550100"), (5, "+14155550101"), (8, "+14155550102"),
    ]


async def test_duplicates_are_stored_once_and_counted(offline_api: Api) -> None:
    csv = (
        "phone_number,name\n"
        "+14155550100,first\n"     # 2: kept
        "(415) 555-0100,second\n"  # 3: the same number written another way
        "+14155550101,b\n"         # 4
        "+1 415 555 0100,third\n"  # 5
        "+14155550101,b again\n"   # 6
    )
    body = await upload(offline_api, csv, default_region="US")
    report = body["import"]
    assert (report["rows_total"], report["rows_valid"], report["duplicates"], report["contacts"]) == (5, 5, 3, 2)
    assert report["problems"] == []
    contacts = await contacts_of(offline_api, body["id"])
    assert numbers(contacts) == [(2, "+14155550100"), (4, "+14155550101")]
    assert contacts[0]["custom_fields"] == {"name": "first"} and contacts[0]["raw_number"] == "+14155550100"
    assert await offline_api.daemon.store.count_contacts(body["id"]) == 2


async def test_duplicates_across_import_batches(offline_api: Api) -> None:
    # 2,500 rows of 1,000 distinct numbers: batches of 1,000 repeat what earlier batches stored.
    csv = "phone\n" + "".join(f"+1415555{i % 1000:04d}\n" for i in range(2500))
    body = await upload(offline_api, csv)
    assert (body["import"]["rows_valid"], body["import"]["duplicates"], body["import"]["contacts"]) == (2500, 1500, 1000)
    contacts = await contacts_of(offline_api, body["id"])
    assert [c["line"] for c in contacts] == list(range(2, 1002))


@pytest.mark.parametrize("header", ["Phone Number", "phone", "TEL"])
async def test_phone_header_spellings(offline_api: Api, header: str) -> None:
    body = await upload(offline_api, f"name,{header},email\nAnn,+14155550100,ann@example.com\n")
    assert body["import"]["phone_column"] == header
    assert body["import"]["custom_fields"] == ["name", "email"]
    (contact,) = await contacts_of(offline_api, body["id"])
    assert contact["phone_number"] == "+14155550100"
    assert contact["custom_fields"] == {"name": "Ann", "email": "ann@example.com"}


async def test_custom_fields_are_stored_per_contact_with_unicode(offline_api: Api) -> None:
    csv = (
        "phone_number,名前,Straße,note,emoji\n"
        "+14155550100,山田太郎,Hauptstraße 5,\"Zoë \"\"Z\"\" Ångström\",📞☎️\n"
        "+14155550101,Ελένη,Rue de l'Église,مرحبا,\n"
    )
    body = await upload(offline_api, csv)
    assert body["import"]["custom_fields"] == ["名前", "Straße", "note", "emoji"]
    contacts = await contacts_of(offline_api, body["id"])
    assert [c["custom_fields"] for c in contacts] == [
        {"名前": "山田太郎", "Straße": "Hauptstraße 5", "note": 'Zoë "Z" Ångström', "emoji": "📞☎️"},
        {"名前": "Ελένη", "Straße": "Rue de l'Église", "note": "مرحبا", "emoji": ""},
    ]
    async with offline_api.daemon.store.read() as conn:
        stored = (await conn.execute(select(T_CONTACT.c.fields).order_by(T_CONTACT.c.id))).scalars().all()
    assert stored == [c["custom_fields"] for c in contacts]


# ---- refusals: 400, a message saying what is wrong, nothing written ----------------------------------


async def test_missing_phone_column(offline_api: Api) -> None:
    body = await refused(offline_api, "name,email\nAnn,ann@example.com\n", "csv_no_phone_column",
                         "no phone column", "'name'", "'email'", "phone_number")
    assert body["details"]["headers"] == ["name", "email"]
    assert "phone_number" in body["details"]["accepted"]


async def test_binary_file(offline_api: Api) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200
    body = await refused(offline_api, png, "csv_binary", "PNG")
    assert body["details"]["line"] == 1
    # NUL bytes in a file that starts like text are refused too, with their line.
    body = await refused(offline_api, b"phone_number\n+14155550100\n\x00\x01\x02\n", "csv_binary", "NUL", "line 3")
    assert body["details"]["line"] == 3


async def test_empty_file(offline_api: Api) -> None:
    await refused(offline_api, b"", "csv_empty", "empty")
    await refused(offline_api, b"\n\r\n  \n", "csv_empty", "empty")
    await refused(offline_api, b"\xef\xbb\xbf", "csv_empty", "empty")  # a BOM and nothing else


async def test_header_only(offline_api: Api) -> None:
    body = await refused(offline_api, "phone_number,name\n", "csv_no_valid_numbers", "no valid phone number",
                         "no data rows")
    assert body["details"]["rows_total"] == 0


async def test_no_valid_numbers(offline_api: Api) -> None:
    body = await refused(offline_api, "phone_number\nabc\n123\n\n555-0100\n", "csv_no_valid_numbers",
                         "no valid phone number", "4 rows rejected", default_region="US")
    assert body["details"]["rows_total"] == 4
    assert [(p["line"], p["code"]) for p in body["details"]["problems"]] == [
        (2, "not_a_number"), (3, "invalid_number"), (4, "empty_row"), (5, "invalid_number"),
    ]
    assert body["details"]["problems"][0] == {"line": 2, "value": "abc", "reason": "contains letters; dialerd "
                                              "dials digits only", "code": "not_a_number"}


async def test_latin1_late_in_a_utf8_file_is_refused_after_batches_were_stored(
    offline_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = offline_api.daemon.store
    stored_batches: list[int] = []
    real_insert = store.insert_contacts

    async def counting_insert(campaign_id: str, rows: Any) -> None:
        await real_insert(campaign_id, rows)
        stored_batches.append(len(rows))

    monkeypatch.setattr(store, "insert_contacts", counting_insert)
    # Batches are IMPORT_BATCH_SIZE (5,000) rows: two whole batches are stored before data row 11,000.
    lines = [f"+1{415 + i // 10000}555{i % 10000:04d},name{i}\n".encode() for i in range(1, 12001)]
    lines[0] = "+14155550001,Zoë\n".encode()  # UTF-8 beyond ASCII: the file is UTF-8, no detection
    lines[10999] = "+14165551000,Jos\xe9\n".encode("latin-1")  # data row 11000 is file line 11001
    body = await refused(offline_api, b"phone_number,name\n" + b"".join(lines), "csv_not_utf8",
                         "not UTF-8", "0xe9", "line 11001", "mixes encodings", "CSV UTF-8")
    assert body["details"]["line"] == 11001
    # The refusal came mid-stream: whole batches had been inserted before it, and are gone now.
    assert sum(stored_batches) >= 10000


async def test_unclosed_quote(offline_api: Api) -> None:
    csv = 'phone_number,name\n+14155550100,Ann\n+14155550101,"Bob\n+14155550102,Cy\n+14155550103,Dee\n'
    body = await refused(offline_api, csv, "csv_malformed", "malformed", "line 3", "unbalanced quote")
    assert body["details"]["line"] == 3


# ---- size ---------------------------------------------------------------------------------------------


async def test_100k_rows_are_all_stored(offline_api: Api) -> None:
    rows = 100_000
    csv = "phone_number,first_name,last_name,city\n" + "".join(
        f"+1415{i:07d},First{i},Last{i},Springfield\n" for i in range(rows)
    )
    assert 4_000_000 < len(csv) < 10 * 1024 * 1024
    wall, cpu = time.monotonic(), time.process_time()
    body = await upload(offline_api, csv)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    # The budget is 20 s (about 13 s on SQLite, 17 s on PostgreSQL on an idle 2-CPU box). It is checked
    # as CPU time of this process (client, server, parser thread, SQLite), which holds on a busy machine
    # too; wall time only gets a bound against hangs, since shared CI boxes run suites side by side.
    assert cpu < 20 and wall < 120, f"{rows} rows: {wall:.1f} s wall, {cpu:.1f} s CPU"
    report = body["import"]
    assert (report["rows_total"], report["rows_valid"], report["contacts"], report["duplicates"]) == (rows, rows, rows, 0)
    assert report["problems"] == [] and report["problems_truncated"] is False
    store = offline_api.daemon.store
    assert await table_counts(store) == {"campaign": 1, "contact": rows, "attempt": 0, "event": 0}
    status, page = await offline_api.call("GET", f"/api/v1/campaigns/{body['id']}/contacts?limit=10&offset={rows - 10}")
    assert status == 200 and page["total"] == rows and page["next_offset"] is None
    assert [c["phone_number"] for c in page["contacts"]] == [f"+1415{i:07d}" for i in range(rows - 10, rows)]
    assert page["contacts"][-1]["line"] == rows + 1
    assert page["contacts"][-1]["custom_fields"] == {"first_name": f"First{rows - 1}", "last_name": f"Last{rows - 1}",
                                                     "city": "Springfield"}
    async with store.read() as conn:
        distinct = (await conn.execute(select(func.count(func.distinct(T_CONTACT.c.phone_e164))))).scalar_one()
        lines = (await conn.execute(select(func.min(T_CONTACT.c.line), func.max(T_CONTACT.c.line)))).one()
    assert distinct == rows and tuple(lines) == (2, rows + 1)


async def test_problem_list_is_capped_at_1000(offline_api: Api) -> None:
    csv = "phone_number\n" + "".join(f"bad{i}\n" for i in range(1500)) + "+14155550100\n"
    body = await upload(offline_api, csv)
    report = body["import"]
    assert (report["rows_total"], report["rows_rejected"], report["rows_valid"]) == (1501, 1500, 1)
    assert len(report["problems"]) == 1000 and report["problems_truncated"] is True
    assert report["problems"][0] == {"line": 2, "value": "bad0", "reason": "contains letters; dialerd dials digits "
                                     "only", "code": "not_a_number"}
    assert report["problems"][-1]["line"] == 1001
    status, again = await offline_api.call("GET", f"/api/v1/campaigns/{body['id']}")
    assert again["import"]["rows_rejected"] == 1500 and again["import"]["problems_truncated"] is True
    # A file refused for having no valid number shows fewer problems in its error details.
    status, error = await post_csv(offline_api, "phone_number\n" + "".join(f"bad{i}\n" for i in range(1500)))
    assert status == 400 and error["error_id"] == "csv_no_valid_numbers"
    assert error["details"]["rows_total"] == 1500 and len(error["details"]["problems"]) == 100
    assert await table_counts(offline_api.daemon.store) == {"campaign": 1, "contact": 1, "attempt": 0, "event": 0}


# ---- a client that goes away -----------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_disconnecting_mid_upload_leaves_nothing(offline_api: Api, framing: str) -> None:
    boundary = "dialerdcutboundary"
    csv = b"phone_number,name\n" + b"".join(f"+1415{i:07d},n{i}\n".encode() for i in range(5_000))
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ncut short\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"contacts\"; filename=\"c.csv\"\r\n"
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + csv + f"\r\n--{boundary}--\r\n".encode()
    half = body[: len(body) // 2]
    head = (
        "POST /api/v1/campaigns HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {offline_api.keys['acme']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        + (f"Content-Length: {len(body)}\r\n" if framing == "content-length" else "Transfer-Encoding: chunked\r\n")
        + "\r\n"
    ).encode()
    server = offline_api.daemon.runner.server
    before = len(server.connections)
    port = int(offline_api.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + (half if framing == "content-length" else b"%x\r\n" % len(half) + half + b"\r\n"))
    await writer.drain()
    await wait_for(lambda: len(server.connections) == before + 1, "the server to take the connection")
    await asyncio.sleep(0.2)  # let the handler read what was sent
    writer.close()
    await writer.wait_closed()

    store = offline_api.daemon.store
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await table_counts(store) == NOTHING
        await asyncio.sleep(0.1)
    # The server noticed: the connection (and so its handler) is gone, not waiting for the rest.
    await wait_for(lambda: len(server.connections) == before, "the server to drop the connection")
    assert await store.stale_imports() == []
    # The daemon is unharmed: the same upload, whole, works.
    status, created = await post_csv(offline_api, csv)
    assert status == 201 and created["import"]["contacts"] == 5_000
