"""dialerctl's CSV export cells: plain E.164 numbers as they are, anything formula-like neutralised."""

from __future__ import annotations

import csv
import io

import pytest

from dialerd.ctl import csv_row, safe_cell


@pytest.mark.parametrize("number", ["+14155550142", "+442079460958", "+4915123456789", "+12"])
def test_plain_e164_numbers_are_left_alone(number: str) -> None:
    assert safe_cell(number) == number


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+cmd|' /C calc'!A0", "-1+1", "@SUM(1)", "\t=1", "\r=1", "＝1", "＋1", "+1 415 555 0142",
     "+14155550142+1", "+0123456", "+1234567890123456", "+١٢٣٤٥٦٧"],
)  # fmt: skip
def test_formula_like_cells_are_neutralised(value: str) -> None:
    assert safe_cell(value) == "'" + value


def test_a_contact_row_exports_its_numbers_plainly_and_its_formulas_inert() -> None:
    contact = {"id": 7, "phone_number": "+14155550142", "raw_number": "+1 (415) 555-0142", "line": 2,
               "status": "failed", "attempts": 1, "last_attempt_at": None, "next_attempt_at": None,
               "failure_reason": "busy", "hangup_cause": 17, "sip_code": 486, "updated_at": None,
               "custom_fields": {"note": "=HYPERLINK(\"http://x\")", "alt": "+14155550143"}}  # fmt: skip
    row = csv_row(contact, ["note", "alt"])  # type: ignore[arg-type]
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow(row)
    assert buffer.getvalue().startswith('"7","+14155550142","\'+1 (415) 555-0142","2"')
    assert row[-2:] == ["'=HYPERLINK(\"http://x\")", "+14155550143"]
